package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/state"
)

// memSessions gives a real (bbolt) store the shared session table of a
// store several replicas share (PostgreSQL's vmcp_sessions), in memory.
type memSessions struct {
	state.Driver
	mu sync.Mutex
	m  map[string]state.Session
}

func (s *memSessions) PutSession(_ context.Context, ss *state.Session, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[ss.ID]; ok {
		return state.ErrExists
	}
	c := *ss
	c.Expires = time.Now().Add(ttl)
	s.m[ss.ID] = c
	return nil
}

func (s *memSessions) GetSession(_ context.Context, id string) (*state.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.m[id]
	if !ok || time.Now().After(c.Expires) {
		return nil, state.ErrNotFound
	}
	return &c, nil
}

func (s *memSessions) TouchSession(_ context.Context, id string, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.m[id]
	if !ok || time.Now().After(c.Expires) {
		return state.ErrNotFound
	}
	c.LastSeen, c.Expires = time.Now(), time.Now().Add(ttl)
	s.m[id] = c
	return nil
}

func (s *memSessions) DeleteSession(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
	return nil
}

func (s *memSessions) PruneSessions(context.Context) (int, error) { return 0, nil }

func (s *memSessions) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[id]
	return ok
}

// A session its client ended with DELETE on another replica (its shared
// record deleted) stops being accepted on the replica that created it too,
// at that replica's next lazy touch (at most a minute later): 404, as on
// every other replica.
func TestSessionDeletedElsewhereEndsHere(t *testing.T) {
	cfg, ds := DemoConfig(nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	g, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "state.db")})
	if err != nil {
		t.Fatal(err)
	}
	shared := &memSessions{m: map[string]state.Session{}}
	g.wrapStore = func(d state.Driver) state.Driver { shared.Driver = d; return shared }
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = g.Close()
	})
	hc := srv.Client()
	url := srv.URL + "/mcp"
	sid := rawSession(t, g, hc, url, nil)
	if !shared.has(sid) {
		t.Fatal("the new session was not shared")
	}
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	if resp, body := rawPost(t, hc, url, sid, ping, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("ping: %d %s", resp.StatusCode, body)
	}

	_ = shared.DeleteSession(t.Context(), sid) // the client's DELETE, on another replica
	g.sess.mu.Lock()
	g.sess.local[sid].touched = time.Now().Add(-2 * touchEvery) // a touch is due
	g.sess.mu.Unlock()
	rawPost(t, hc, url, sid, ping, nil) // touches, and finds the session gone
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body := rawPost(t, hc, url, sid, ping, nil)
		if resp.StatusCode == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a session deleted elsewhere is still served here: %d %s", resp.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
