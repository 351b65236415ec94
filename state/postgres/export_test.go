package postgres

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
