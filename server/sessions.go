package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/state"
)

// Sessions of 2025-11-25 clients across replicas (design §4). mcp-go's
// streamable HTTP server asks a SessionIdManager to mint and validate
// Mcp-Session-Id; vmcp's (below) accepts the sessions it created and, on
// a store shared by several replicas (PostgreSQL), the sessions any
// replica created: at initialize, the session's identity binding,
// protocol version, client info and capabilities go to vmcp_sessions.
// A request of a session created elsewhere is served by mcp-go as an
// ephemeral session, which vmcp re-materialises from that record (client
// info, protocol version, capabilities) — except the capabilities that
// need a server-to-client request (elicitation, sampling, roots): those
// travel only on the replica holding the session's streams, and a reply
// sent to another replica would be lost (or, with mcp-go's per-process
// request ids, matched to the wrong request). So on another replica a
// composite tool that asks returns the paused result (SPEC §5, path 3),
// answerable anywhere. Live streams need load-balancer affinity
// (docs/durability.md). A session presented with another identity than
// the one it is bound to is refused (403), on every replica.

// sessionTTL is how long an idle session lives (mcp-go's idle sweeper
// uses the same, WithSessionIdleTTL in http.go); touchEvery bounds how
// often one replica extends a shared session's expiry (lazily: at most
// once a minute per session and replica, not per request).
const (
	sessionTTL  = 30 * time.Minute
	touchEvery  = time.Minute
	sessionIDPx = "mcp-session-"
)

type sessions struct {
	g *Gateway

	mu         sync.Mutex
	local      map[string]*localSession  // minted here
	remote     map[string]*remoteSession // read from the shared store
	terminated map[string]time.Time      // ended by their client (DELETE)
}

type localSession struct {
	principal string
	touched   time.Time
	// shared: recorded in the store (PutSession succeeded), so its
	// record's disappearance means a DELETE elsewhere (or its expiry).
	shared bool
}

type remoteSession struct {
	s       *state.Session
	fetched time.Time
	touched time.Time
}

func newSessions(g *Gateway) *sessions {
	return &sessions{g: g, local: map[string]*localSession{}, remote: map[string]*remoteSession{}, terminated: map[string]time.Time{}}
}

// shared is the store's session table, or nil (bbolt: one process).
func (ss *sessions) shared() state.Sessions {
	if ss.g.runs == nil {
		return nil
	}
	s, _ := ss.g.runs.base.(state.Sessions)
	return s
}

// ResolveSessionIdManager implements mcpserver.SessionIdManagerResolver.
// mcp-go passes a nil request from its idle sweeper and at shutdown: that
// ends the session here only, not for the other replicas.
func (ss *sessions) ResolveSessionIdManager(r *http.Request) mcpserver.SessionIdManager {
	return &sessionIDs{ss: ss, r: r}
}

type sessionIDs struct {
	ss *sessions
	r  *http.Request // nil: not a client's request
}

func (m *sessionIDs) Generate() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := sessionIDPx + hex.EncodeToString(b[:])
	who := "anonymous"
	if m.r != nil {
		who = principal(m.r.Context())
	}
	m.ss.mu.Lock()
	m.ss.local[id] = &localSession{principal: who, touched: time.Now()}
	m.ss.mu.Unlock()
	return id
}

// errSessionNotFound makes mcp-go answer 404 (the client re-initializes).
var errSessionNotFound = errors.New("session not found")

func (m *sessionIDs) Validate(id string) (bool, error) {
	ss := m.ss
	ss.mu.Lock()
	_, ended := ss.terminated[id]
	l := ss.local[id]
	ss.mu.Unlock()
	if ended {
		return true, nil
	}
	if m.r == nil {
		if l == nil {
			return false, errSessionNotFound
		}
		return false, nil
	}
	who := principal(m.r.Context())
	if l != nil {
		if l.principal != who {
			return false, errSessionNotFound
		}
		ss.touch(id)
		return false, nil
	}
	s, err := ss.lookup(m.r.Context(), id)
	if err != nil || s.Principal != who {
		return false, errSessionNotFound
	}
	ss.touch(id)
	return false, nil
}

func (m *sessionIDs) Terminate(id string) (bool, error) {
	ss := m.ss
	ss.mu.Lock()
	delete(ss.local, id)
	delete(ss.remote, id)
	if m.r != nil {
		ss.terminated[id] = time.Now()
	}
	ss.mu.Unlock()
	if m.r == nil {
		return false, nil // idle here, or this replica stops: others keep it
	}
	if sh := ss.shared(); sh != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.r.Context()), 5*time.Second)
		defer cancel()
		if err := sh.DeleteSession(ctx, id); err != nil {
			ss.g.log.Warn("forgetting a shared session", "session", id, "err", err)
		}
	}
	return false, nil
}

// lookup returns a session another replica created (cached for a
// minute), or an error wrapping state.ErrNotFound.
func (ss *sessions) lookup(ctx context.Context, id string) (*state.Session, error) {
	sh := ss.shared()
	if sh == nil {
		return nil, errSessionNotFound
	}
	ss.mu.Lock()
	c := ss.remote[id]
	ss.mu.Unlock()
	if c != nil && time.Since(c.fetched) < touchEvery {
		return c.s, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := sh.GetSession(ctx, id)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if err != nil {
		delete(ss.remote, id)
		return nil, err
	}
	touched := time.Time{}
	if c != nil {
		touched = c.touched
	}
	ss.remote[id] = &remoteSession{s: s, fetched: time.Now(), touched: touched}
	return s, nil
}

// touch extends a shared session's expiry, at most once a minute per
// session on this replica, in the background.
func (ss *sessions) touch(id string) {
	sh := ss.shared()
	now := time.Now()
	ss.mu.Lock()
	var last *time.Time
	if l := ss.local[id]; l != nil {
		last = &l.touched
	} else if r := ss.remote[id]; r != nil {
		last = &r.touched
	}
	due := last != nil && now.Sub(*last) >= touchEvery
	if due {
		*last = now
	}
	ss.mu.Unlock()
	if !due || sh == nil {
		return // bbolt: only the local activity stamp (forgetIdle)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := sh.TouchSession(ctx, id, sessionTTL)
		switch {
		case errors.Is(err, state.ErrNotFound):
			ss.gone(id)
		case err != nil:
			ss.g.log.Warn("extending a shared session", "session", id, "err", err)
		}
	}()
}

// gone ends here a shared session whose record is gone from the store:
// its client ended it (DELETE) on another replica, or it expired there.
// A local session never shared (PutSession failed) is left alone.
func (ss *sessions) gone(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if l := ss.local[id]; l != nil && !l.shared {
		return
	}
	delete(ss.local, id)
	delete(ss.remote, id)
	ss.terminated[id] = time.Now()
}

// guard refuses, before mcp-go sees it, a request whose session was
// created on another replica for another principal (403, as the
// authenticator does for sessions of this replica).
func (ss *sessions) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.Header.Get("Mcp-Session-Id"); id != "" && ss.shared() != nil {
			ss.mu.Lock()
			l := ss.local[id]
			ss.mu.Unlock()
			if l == nil {
				if s, err := ss.lookup(r.Context(), id); err == nil && s.Principal != principal(r.Context()) {
					apiError(w, http.StatusForbidden, "forbidden", "this MCP session belongs to another principal")
					return
				}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// restore re-materialises, on the ephemeral session mcp-go serves a
// request of another replica's session with, what its client declared
// at initialize (without the capabilities that need this replica to hold
// the session's streams).
func (ss *sessions) restore(ctx context.Context, r *http.Request) context.Context {
	id := r.Header.Get("Mcp-Session-Id")
	if id == "" || ss.shared() == nil {
		return ctx
	}
	ss.mu.Lock()
	l, c := ss.local[id], ss.remote[id]
	ss.mu.Unlock()
	if l != nil || c == nil {
		return ctx
	}
	sess, ok := mcpserver.ClientSessionFromContext(ctx).(mcpserver.SessionWithClientInfo)
	if !ok || sess.GetClientInfo().Name != "" {
		return ctx
	}
	var info mcp.Implementation
	if json.Unmarshal(c.s.ClientInfo, &info) == nil {
		sess.SetClientInfo(info)
	}
	var caps mcp.ClientCapabilities
	if json.Unmarshal(c.s.Capabilities, &caps) == nil {
		caps.Elicitation, caps.Sampling, caps.Roots = nil, nil, nil
		sess.SetClientCapabilities(caps)
	}
	if v, ok := sess.(interface{ SetProtocolVersion(string) }); ok && c.s.Protocol != "" {
		v.SetProtocolVersion(c.s.Protocol)
	}
	return ctx
}

// installSessionHooks records each session this replica initializes in
// the shared store (nothing with bbolt).
func (g *Gateway) installSessionHooks(h *mcpserver.Hooks) {
	h.AddAfterInitialize(func(ctx context.Context, _ any, req *mcp.InitializeRequest, res *mcp.InitializeResult) {
		ss := g.sess
		sh := ss.shared()
		s := mcpserver.ClientSessionFromContext(ctx)
		if sh == nil || s == nil || req == nil || res == nil {
			return
		}
		id := s.SessionID()
		ss.mu.Lock()
		l := ss.local[id]
		if l != nil {
			l.touched = time.Now()
		}
		ss.mu.Unlock()
		if l == nil {
			return // not an HTTP session minted here (stdio, in-process)
		}
		info, _ := json.Marshal(req.Params.ClientInfo)
		caps, _ := json.Marshal(req.Params.Capabilities)
		rec := &state.Session{ID: id, Principal: l.principal, Protocol: res.ProtocolVersion, ClientInfo: info, Capabilities: caps}
		if err := sh.PutSession(context.WithoutCancel(ctx), rec, sessionTTL); err != nil {
			g.log.Warn("sharing a new session with the other replicas", "session", id, "err", fmt.Sprint(err))
			return
		}
		ss.mu.Lock()
		if l := ss.local[id]; l != nil {
			l.shared = true
		}
		ss.mu.Unlock()
	})
}

// pruneLoop deletes expired shared sessions and forgets old
// terminations, hourly.
func (ss *sessions) pruneLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ss.mu.Lock()
		for id, at := range ss.terminated {
			if time.Since(at) > sessionTTL {
				delete(ss.terminated, id)
			}
		}
		for id, c := range ss.remote {
			if time.Since(c.fetched) > sessionTTL {
				delete(ss.remote, id)
			}
		}
		ss.mu.Unlock()
		ss.forgetIdle(time.Now())
		if sh := ss.shared(); sh != nil {
			if n, err := sh.PruneSessions(ctx); err != nil && ctx.Err() == nil {
				ss.g.log.Warn("pruning expired sessions", "err", err)
			} else if n > 0 {
				ss.g.log.Info("pruned expired sessions", "sessions", n)
			}
		}
	}
}

// forgetIdle drops the sessions minted here that mcp-go no longer has
// registered and that saw no validated request for two idle TTLs. mcp-go
// ends most sessions through Terminate, but not all: a GET without a
// session id is given a fresh one (Generate) that is unregistered when
// the stream closes. Without this the map grows by one entry per such
// GET. (A registered session is kept however idle: the fast paths of
// toolscall.go and toolslist.go serve it without a Validate.)
func (ss *sessions) forgetIdle(now time.Time) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for id, l := range ss.local {
		if now.Sub(l.touched) <= 2*sessionTTL {
			continue
		}
		if _, live := ss.g.tl.sessions.Load(id); !live {
			delete(ss.local, id)
		}
	}
}
