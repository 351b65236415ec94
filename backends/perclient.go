package backends

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vmcp-dev/vmcp/backends/outauth"
)

// Per-client sessions. A backend with Spec.PerClient gets one backend
// session per front client (keyed by what the caller puts in the context
// with WithClient, normally the MCP session id), opened on the client's
// first call and closed by CloseClient when the client goes away. The
// shared session still supplies the catalogue and health. Calls without a
// client key use the shared session.
//
// A backend whose outgoing auth is user-bound (token_exchange,
// pass_through) gets one session per principal the same way, keyed by the
// principal (package outauth's Subject in the context), whether or not
// per_client is set; calls without a caller token are refused. A
// principal's sessions are closed after Options.PrincipalIdle without a
// call (reapIdle).

type clientKey struct{}

// WithClient tags ctx with the front client a call belongs to.
func WithClient(ctx context.Context, key string) context.Context {
	if key == "" {
		return ctx
	}
	return context.WithValue(ctx, clientKey{}, key)
}

func clientOf(ctx context.Context) string {
	k, _ := ctx.Value(clientKey{}).(string)
	return k
}

type perClient struct {
	mu    sync.Mutex
	conns map[string]map[string]*Conn // client → backend → conn
}

// route picks the connection for a call: the shared one, or the caller's
// own for per-client backends (connected on first use).
func (m *Manager) route(ctx context.Context, backend string) (*Conn, error) {
	c := m.byName[backend]
	if c == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownBackend, backend)
	}
	if err := c.spec.Auth.Refused(); err != nil {
		return nil, err
	}
	key := clientOf(ctx)
	var subj *outauth.Subject
	if c.spec.Auth.UserBound() {
		// One session per principal (and per front client too, with
		// per_client): a session's requests carry one principal's
		// credentials.
		sub, ok := outauth.SubjectFrom(ctx)
		s, err := principalSubject(&c.spec, sub, ok)
		if err != nil {
			return nil, err
		}
		subj = &s
		if !c.spec.PerClient || key == "" {
			key = principalKeyPrefix + s.Principal
		}
	} else if !c.spec.PerClient || key == "" {
		return c, nil
	}
	if _, _, err := c.acquire(); err != nil {
		return nil, err // the backend is down: fail fast as for shared calls
	}
	m.per.mu.Lock()
	if m.per.conns == nil {
		m.per.conns = map[string]map[string]*Conn{}
	}
	byBackend := m.per.conns[key]
	if byBackend == nil {
		byBackend = map[string]*Conn{}
		m.per.conns[key] = byBackend
	}
	own := byBackend[backend]
	if own == nil {
		own = newConn(m, c.spec)
		byBackend[backend] = own
	}
	own.lastUsed = time.Now() // under per.mu: reapIdle reads it there
	if subj != nil {
		if prev := own.subject.Load(); prev != nil && prev.Principal != subj.Principal {
			m.per.mu.Unlock()
			return nil, fmt.Errorf("backend %q: this client's session belongs to another principal", backend)
		}
		own.subject.Store(subj) // the caller's latest token
	}
	m.per.mu.Unlock()

	own.connectMu.Lock()
	defer own.connectMu.Unlock()
	own.mu.Lock()
	ready := own.state == StateReady && own.client != nil
	own.mu.Unlock()
	if !ready {
		if err := own.connect(context.WithoutCancel(ctx)); err != nil {
			if ae := authCause(err); ae != err {
				return nil, ae
			}
			return nil, fmt.Errorf("backend %q: opening this client's session: %w", backend, err)
		}
		own.setState(StateReady, nil)
	}
	return own, nil
}

// CloseClient closes the per-client backend sessions of one client (and
// reaps their processes).
func (m *Manager) CloseClient(key string) {
	m.per.mu.Lock()
	byBackend := m.per.conns[key]
	delete(m.per.conns, key)
	m.per.mu.Unlock()
	for _, c := range byBackend {
		_ = c.close()
	}
}

// closeAllClients closes every per-client session (shutdown).
func (m *Manager) closeAllClients() {
	m.per.mu.Lock()
	all := m.per.conns
	m.per.conns = nil
	m.per.mu.Unlock()
	for _, byBackend := range all {
		for _, c := range byBackend {
			_ = c.close()
		}
	}
}

// ClientSessions counts open per-client backend sessions (for /status and
// tests).
func (m *Manager) ClientSessions() int {
	m.per.mu.Lock()
	defer m.per.mu.Unlock()
	n := 0
	for _, byBackend := range m.per.conns {
		n += len(byBackend)
	}
	return n
}

// principalKeyPrefix marks the per-client keys of per-principal sessions
// (a session id never holds a NUL).
const principalKeyPrefix = "\x00principal\x00"

// reapLoop closes idle per-principal sessions until ctx ends.
func (m *Manager) reapLoop(ctx context.Context) {
	idle := m.opts.PrincipalIdle
	t := time.NewTicker(min(idle/2, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n := m.reapIdle(now.Add(-idle)); n > 0 {
				m.log.Debug("closed idle per-principal backend sessions", "sessions", n)
			}
		}
	}
}

// reapIdle closes the per-principal sessions last used before cutoff that
// have no call in flight, and returns how many.
func (m *Manager) reapIdle(cutoff time.Time) int {
	var idle []*Conn
	m.per.mu.Lock()
	for key, byBackend := range m.per.conns {
		if !strings.HasPrefix(key, principalKeyPrefix) {
			continue
		}
		for b, c := range byBackend {
			c.mu.Lock()
			busy := len(c.inflight) > 0
			c.mu.Unlock()
			if !busy && c.lastUsed.Before(cutoff) {
				delete(byBackend, b)
				idle = append(idle, c)
			}
		}
		if len(byBackend) == 0 {
			delete(m.per.conns, key)
		}
	}
	m.per.mu.Unlock()
	for _, c := range idle {
		_ = c.close()
	}
	return len(idle)
}
