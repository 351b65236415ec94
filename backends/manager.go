package backends

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/backends/outauth"
)

// Spec describes one backend (package server converts the config file's
// entries into Specs).
type Spec struct {
	Name string
	// Exactly one of Command, URL and InProcess is set.
	Command []string
	Env     map[string]string
	Cwd     string
	URL     string
	// Transport is "streamable-http" (default) or "sse" for URL backends.
	Transport string
	Headers   map[string]string
	InProcess *server.MCPServer
	// Timeout bounds each call to the backend (0 = none).
	Timeout time.Duration
	// ProtocolVersion pins the MCP revision spoken to the backend; empty
	// negotiates (with a short server/discover probe).
	ProtocolVersion string
	// PerClient gives every front client its own backend session.
	PerClient bool
	// Auth supplies the credentials of each HTTP request (nil: none). A
	// user-bound strategy gives every principal its own session; strategy
	// error refuses the backend: it is never connected.
	Auth *outauth.Strategy
}

// Kind names the transport for status output.
func (s *Spec) Kind() string {
	switch {
	case s.InProcess != nil:
		return "in-process"
	case len(s.Command) > 0:
		return "stdio"
	case s.Transport == "sse":
		return "sse"
	default:
		return "streamable-http"
	}
}

// HealthPolicy tunes health checks and the circuit breaker.
type HealthPolicy struct {
	// Interval between pings (0 = 30s); Timeout of one ping (0 = 10s).
	Interval time.Duration
	Timeout  time.Duration
	// UnhealthyThreshold consecutive failed pings hide a backend (0 = 3).
	UnhealthyThreshold int
	// FailureThreshold consecutive failed calls open the circuit (0 = 5)
	// for OpenFor (0 = 60s).
	FailureThreshold int
	OpenFor          time.Duration
}

func (h HealthPolicy) withDefaults() HealthPolicy {
	if h.Interval <= 0 {
		h.Interval = 30 * time.Second
	}
	if h.Timeout <= 0 {
		h.Timeout = 10 * time.Second
	}
	if h.UnhealthyThreshold <= 0 {
		h.UnhealthyThreshold = 3
	}
	if h.FailureThreshold <= 0 {
		h.FailureThreshold = 5
	}
	if h.OpenFor <= 0 {
		h.OpenFor = 60 * time.Second
	}
	return h
}

// Relay receives what backends send towards clients. ctx is the context of
// the client request whose call caused it, when vmcp can tell (it carries
// the front session); otherwise a background context.
type Relay interface {
	Elicit(ctx context.Context, backend string, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error)
	CreateMessage(ctx context.Context, backend string, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error)
	ListRoots(ctx context.Context, backend string, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error)
	// Notify forwards a notification (progress with the client's own token
	// restored, log messages, resources/updated).
	Notify(ctx context.Context, backend string, n mcp.JSONRPCNotification)
}

// Options tune NewManager; nil is valid.
type Options struct {
	Logger *slog.Logger
	Relay  Relay
	Health HealthPolicy
	// OnChange is called (from a background goroutine) after any
	// backend's catalogue or health changed.
	OnChange func()
	// OnStateChange is called after a backend's health (connecting, ready,
	// unhealthy) or circuit breaker (closed, open, half_open) changed,
	// outside the manager's locks, on the goroutine that changed it. The
	// first connection attempt's outcome is not a change; per-client
	// sessions are not reported.
	OnStateChange func(StateChange)
	// ClientName and ClientVersion identify vmcp to backends.
	ClientName, ClientVersion string
	// PrincipalIdle closes a per-principal session (user-bound outgoing
	// auth) after this long without a call (0 = 30m).
	PrincipalIdle time.Duration
	// DisableRawCalls sends every tools/call through mcp-go's client,
	// never the lean path of streamable-HTTP backends (rawcall.go): for
	// comparisons and diagnosis.
	DisableRawCalls bool
	// TraceContext, when set, gives the W3C trace context a tools/call
	// sends in its _meta for a call made with ctx (vmcp's CLIENT span:
	// telemetry traces on), written over the caller's traceparent,
	// tracestate and baggage (meta.go). ok false: the caller's _meta
	// passes as given. Unset: the caller's _meta passes as given.
	TraceContext func(ctx context.Context) (tc TraceContext, ok bool)
}

// Manager owns every backend connection.
type Manager struct {
	conns  []*Conn
	byName map[string]*Conn
	opts   Options
	log    *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	changeCh chan struct{}
	per      perClient
}

// ErrUnknownBackend is returned for calls to a backend that is not
// configured.
var ErrUnknownBackend = errors.New("unknown backend")

// NewManager validates the specs; Start connects.
func NewManager(specs []Spec, opts *Options) (*Manager, error) {
	m := &Manager{byName: map[string]*Conn{}, changeCh: make(chan struct{}, 1)}
	if opts != nil {
		m.opts = *opts
	}
	m.opts.Health = m.opts.Health.withDefaults()
	m.log = m.opts.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.opts.ClientName == "" {
		m.opts.ClientName = "vmcp"
	}
	if m.opts.PrincipalIdle <= 0 {
		m.opts.PrincipalIdle = 30 * time.Minute
	}
	for i := range specs {
		s := specs[i]
		n := 0
		if len(s.Command) > 0 {
			n++
		}
		if s.URL != "" {
			n++
		}
		if s.InProcess != nil {
			n++
		}
		if n != 1 {
			return nil, fmt.Errorf("backend %q: exactly one of command, url or an in-process server is needed", s.Name)
		}
		if err := checkAuth(&s); err != nil {
			return nil, err
		}
		if _, dup := m.byName[s.Name]; dup {
			return nil, fmt.Errorf("backend %q is defined twice", s.Name)
		}
		c := newConn(m, s)
		m.conns = append(m.conns, c)
		m.byName[s.Name] = c
	}
	return m, nil
}

// Start connects to every backend concurrently and returns once each was
// tried once (a backend that fails keeps being retried in the background
// and does not stop the others).
func (m *Manager) Start(ctx context.Context) {
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	var tried sync.WaitGroup
	for _, c := range m.conns {
		tried.Add(1)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			c.run(m.ctx, tried.Done)
		}()
	}
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		m.changeLoop()
	}()
	go func() {
		defer m.wg.Done()
		m.reapLoop(m.ctx)
	}()
	tried.Wait()
}

// StateChange is a backend moving between health or circuit states.
type StateChange struct {
	Backend string
	// Kind is "health" or "circuit".
	Kind     string
	From, To string
	// Reason is the error that caused it, if any.
	Reason string
}

// stateChanged reports a change of a shared (not per-client) session.
func (m *Manager) stateChanged(c *Conn, ch StateChange) {
	if m.opts.OnStateChange == nil || m.byName[c.spec.Name] != c {
		return
	}
	m.opts.OnStateChange(ch)
}

// changed coalesces change notifications.
func (m *Manager) changed() {
	select {
	case m.changeCh <- struct{}{}:
	default:
	}
}

func (m *Manager) changeLoop() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.changeCh:
			if m.opts.OnChange != nil {
				m.opts.OnChange()
			}
		}
	}
}

// Close disconnects every backend and reaps every child process.
func (m *Manager) Close() error {
	if m.cancel != nil {
		m.cancel()
	}
	m.closeAllClients()
	var errs []error
	for _, c := range m.conns {
		if err := c.close(); err != nil {
			errs = append(errs, fmt.Errorf("backend %q: %w", c.spec.Name, err))
		}
	}
	m.wg.Wait()
	return errors.Join(errs...)
}

// Names lists the backends in config order.
func (m *Manager) Names() []string {
	out := make([]string, len(m.conns))
	for i, c := range m.conns {
		out[i] = c.spec.Name
	}
	return out
}

// Snapshot is the catalogue of the healthy backends at one moment.
type Snapshot struct {
	Order     []string // healthy backends in config order
	Tools     map[string][]*RawTool
	Resources map[string][]json.RawMessage
	Templates map[string][]json.RawMessage
	Prompts   map[string][]json.RawMessage
}

// Snapshot returns what the healthy backends offer.
func (m *Manager) Snapshot() *Snapshot {
	s := &Snapshot{Tools: map[string][]*RawTool{}, Resources: map[string][]json.RawMessage{},
		Templates: map[string][]json.RawMessage{}, Prompts: map[string][]json.RawMessage{}}
	for _, c := range m.conns {
		c.mu.Lock()
		if c.state == StateReady {
			s.Order = append(s.Order, c.spec.Name)
			s.Tools[c.spec.Name] = c.tools
			s.Resources[c.spec.Name] = c.resources
			s.Templates[c.spec.Name] = c.templates
			s.Prompts[c.spec.Name] = c.prompts
		}
		c.mu.Unlock()
	}
	return s
}

// AllTools returns every backend's last known tools, healthy or not (for
// compiling workflows, whose references must resolve even while a backend
// is down).
func (m *Manager) AllTools() map[string][]*RawTool {
	out := map[string][]*RawTool{}
	for _, c := range m.conns {
		c.mu.Lock()
		out[c.spec.Name] = c.tools
		c.mu.Unlock()
	}
	return out
}

// BackendStatus is one backend's line on /status.
type BackendStatus struct {
	Name        string    `json:"name"`
	Transport   string    `json:"transport"`
	State       string    `json:"state"`
	Tools       int       `json:"tools"`
	Resources   int       `json:"resources"`
	Prompts     int       `json:"prompts"`
	Protocol    string    `json:"protocol,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	Connects    int       `json:"connects"`
	CircuitOpen bool      `json:"circuit_open,omitempty"`
	Since       time.Time `json:"since"`
	PID         int       `json:"pid,omitempty"`
	// Auth is the outgoing_auth type (never a credential).
	Auth string `json:"auth,omitempty"`
	// Circuit is the breaker's state: closed, open or half_open.
	Circuit string `json:"circuit,omitempty"`
}

// Status reports every backend.
func (m *Manager) Status() []BackendStatus {
	out := make([]BackendStatus, 0, len(m.conns))
	for _, c := range m.conns {
		out = append(out, c.status())
	}
	return out
}

// Ready reports whether every backend was tried at least once.
func (m *Manager) Ready() bool {
	for _, c := range m.conns {
		c.mu.Lock()
		tried := c.tried
		c.mu.Unlock()
		if !tried {
			return false
		}
	}
	return true
}

// CallResult is a backend's tools/call result, raw.
type CallResult struct {
	Content           json.RawMessage
	StructuredContent json.RawMessage
	IsError           bool
	Meta              json.RawMessage
}

// CallTool calls one tool of one backend with raw JSON arguments. meta is
// sent as the request's _meta; a "progressToken" in it is replaced by one
// of vmcp's own, and the backend's progress is relayed under the caller's
// token.
func (m *Manager) CallTool(ctx context.Context, backend, tool string, args json.RawMessage, meta map[string]any) (*CallResult, error) {
	c, err := m.route(ctx, backend)
	if err != nil {
		return nil, err
	}
	return c.callTool(ctx, tool, args, meta)
}

// Request sends one raw request (resources/read, prompts/get,
// completion/complete, …) to a backend and returns the raw result.
func (m *Manager) Request(ctx context.Context, backend, method string, params any) (json.RawMessage, error) {
	c, err := m.route(ctx, backend)
	if err != nil {
		return nil, err
	}
	return c.request(ctx, method, params)
}

// SetLevel forwards logging/setLevel to every ready backend that logs.
func (m *Manager) SetLevel(ctx context.Context, level mcp.LoggingLevel) {
	for _, c := range m.conns {
		c.setLevel(ctx, level)
	}
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
