package postgres

import "time"

// Crash stops the replica as SIGKILL would: no more heartbeats, and its
// row stays until its lease expires.
func (s *Store) Crash() {
	s.closed.Do(func() {
		s.stop()
		s.done.Wait()
		s.hub.Close()
		s.pool.Close()
	})
}

// ChannelName is the NOTIFY channel of a schema.
func ChannelName(schema string) string { return channelName(schema) }

// SetListenCheck shortens the listener's quiet period before it checks its
// connection (restored when the test ends; set it before opening stores).
func SetListenCheck(t interface{ Cleanup(func()) }, d time.Duration) {
	old := listenCheck.Swap(int64(d))
	t.Cleanup(func() { listenCheck.Store(old) })
}
