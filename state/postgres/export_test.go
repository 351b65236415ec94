package postgres

// Crash stops the replica as SIGKILL would: no more heartbeats, and its
// row stays until its lease expires.
func (s *Store) Crash() {
	s.closed.Do(func() {
		s.stop()
		s.done.Wait()
		s.pool.Close()
	})
}
