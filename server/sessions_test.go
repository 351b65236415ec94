package server

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

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
	shared := &memSessions{m: map[string]state.Session{}}
	g, srv := startDemoOn(t, func(d state.Driver) state.Driver { shared.Driver = d; return shared })
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

// A GET without a session id is given a fresh session id that mcp-go
// forgets when the stream closes (no Terminate): forgetIdle drops it once
// idle, and keeps a live session, however idle, that mcp-go still has.
func TestForgetIdleSessions(t *testing.T) {
	g, url := startDemo(t)
	live := newClient(t, url, client.WithProtocolVersion(mcp.ProtocolVersion20251125)) // a session
	callJSON(t, live, "vmcp_runs_list", `{}`)

	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET without a session id: %d", res.StatusCode)
	}
	cancel() // the client goes away; mcp-go unregisters the stream's session
	_ = res.Body.Close()

	count := func() int {
		g.sess.mu.Lock()
		defer g.sess.mu.Unlock()
		return len(g.sess.local)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		orphans := 0
		g.sess.mu.Lock()
		for id := range g.sess.local {
			if _, ok := g.tl.sessions.Load(id); !ok {
				orphans++
			}
		}
		g.sess.mu.Unlock()
		if orphans == 1 && count() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions minted here, %d of them gone from mcp-go; want 2 and 1", count(), orphans)
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.sess.forgetIdle(time.Now()) // not idle yet: kept
	if n := count(); n != 2 {
		t.Fatalf("forgetIdle dropped a session that is not idle: %d left", n)
	}
	g.sess.forgetIdle(time.Now().Add(3 * sessionTTL))
	if n := count(); n != 1 {
		t.Fatalf("after forgetIdle: %d sessions minted here, want 1 (the live one)", n)
	}
	callJSON(t, live, "vmcp_runs_list", `{}`) // the live session still works
}
