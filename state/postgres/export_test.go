package postgres

import (
	"time"

	"github.com/vmcp-dev/vmcp/state"
)

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

// SkewClock moves this replica's estimate of the database's clock by d.
func (s *Store) SkewClock(d time.Duration) {
	if c := s.clock.Load(); c != nil {
		s.clock.Store(&dbClock{db: c.db.Add(d), local: c.local})
	}
}

// KeptDoc returns the document this replica keeps for run id and the
// encoding of the run it keeps beside it (ok false: none kept).
func (s *Store) KeptDoc(id string) (doc, reencoded []byte, ok bool) {
	s.mu.Lock()
	h, ok := s.docs[id]
	s.mu.Unlock()
	if !ok {
		return nil, nil, false
	}
	reencoded, _, err := state.EncodeDocument(copyRun(&h))
	if err != nil {
		panic(err)
	}
	return h.doc, reencoded, true
}

// SetHeldBudget sets the bytes of kept documents this replica allows in
// all (see held.go); HeldBytes is what it keeps now.
func (s *Store) SetHeldBudget(n int) {
	s.mu.Lock()
	s.docBudget = n
	s.mu.Unlock()
}

func (s *Store) HeldBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.docBytes
}
