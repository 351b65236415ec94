package backends

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/backends/outauth"
)

// Backend states.
const (
	StateConnecting = "connecting"
	StateReady      = "ready"
	StateUnhealthy  = "unhealthy"
	StateClosed     = "closed"
)

// ErrUnavailable is returned (wrapped) by calls to a backend that is not
// ready or whose circuit is open.
var ErrUnavailable = errors.New("backend unavailable")

// Conn is one backend: its client session, catalogue and health.
type Conn struct {
	m    *Manager
	spec Spec

	mu        sync.Mutex
	connectMu sync.Mutex // serialises lazy connects of per-client sessions
	client    *client.Client
	proc      *cmdTransport // stdio backends: the spawned process
	state     string
	since     time.Time
	tried     bool
	lastErr   string
	connects  int
	protocol  string
	tools     []*RawTool
	resources []json.RawMessage
	templates []json.RawMessage
	prompts   []json.RawMessage
	level     mcp.LoggingLevel

	// failures counts consecutive failed calls; openUntil is when an open
	// circuit lets a trial call through.
	failures  int
	openUntil time.Time
	halfOpen  bool // the open period ended and a trial call went out

	// in-flight calls, to route what a backend sends back.
	seq      atomic.Uint64
	inflight map[uint64]*callInfo
	tokens   map[string]*callInfo

	lost   chan struct{} // signalled when the session is found dead
	closed bool

	// subject is the principal a per-principal session (user-bound
	// outgoing auth) belongs to, with its latest token; nil for the shared
	// session, whose requests carry service credentials only.
	subject atomic.Pointer[outauth.Subject]
	// lastUsed is when a per-client session was last routed to (guarded
	// by Manager.per.mu).
	lastUsed time.Time

	// raw is the lean tools/call path of a streamable-HTTP session
	// (rawcall.go); nil for other transports. Guarded by mu.
	raw *rawSession
}

type callInfo struct {
	ctx   context.Context
	token any // the client's progress token, if any
	start time.Time
}

type callKey struct{}

func newConn(m *Manager, s Spec) *Conn {
	return &Conn{m: m, spec: s, state: StateConnecting, since: time.Now(),
		inflight: map[uint64]*callInfo{}, tokens: map[string]*callInfo{}, lost: make(chan struct{}, 1)}
}

// run connects, keeps the connection healthy and reconnects with backoff
// until ctx ends. tried is called once, after the first attempt.
func (c *Conn) run(ctx context.Context, tried func()) {
	if err := c.spec.Auth.Refused(); err != nil {
		// outgoing_auth error: never connected, shown as unhealthy.
		c.setState(StateUnhealthy, err)
		c.mu.Lock()
		c.tried = true
		c.mu.Unlock()
		tried()
		return
	}
	backoff := 500 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		err := c.connect(ctx)
		// The state is set before the first attempt is reported, so that
		// whoever waits on Start sees this backend's outcome.
		if err != nil {
			c.setState(StateUnhealthy, err)
		} else {
			c.setState(StateReady, nil)
		}
		c.mu.Lock()
		c.tried = true
		c.mu.Unlock()
		if first {
			tried()
			first = false
		}
		if err != nil {
			c.m.log.Warn("backend connect failed", "backend", c.spec.Name, "err", err, "retry_in", backoff)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		up := time.Now()
		c.m.changed()
		c.watch(ctx)
		c.disconnect()
		if ctx.Err() == nil {
			c.m.changed()
		}
		// A lost backend is reconnected after a pause: at least 500 ms
		// (clients see it gone, and get list_changed both ways), growing
		// while it keeps dying within a minute of starting, so a crash
		// loop does not spin.
		if time.Since(up) > time.Minute {
			backoff = 500 * time.Millisecond
		}
		c.m.log.Warn("backend lost; reconnecting", "backend", c.spec.Name, "retry_in", backoff)
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// watch pings the backend until it fails UnhealthyThreshold times in a
// row or the session is found dead; then the caller reconnects.
func (c *Conn) watch(ctx context.Context) {
	h := c.m.opts.Health
	t := time.NewTicker(h.Interval)
	defer t.Stop()
	// A stdio child that exits is noticed within a second, without
	// waiting for a health check.
	var alive <-chan time.Time
	c.mu.Lock()
	proc := c.proc
	c.mu.Unlock()
	if proc != nil {
		lt := time.NewTicker(time.Second)
		defer lt.Stop()
		alive = lt.C
	}
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.lost:
			c.setState(StateUnhealthy, errors.New("connection lost"))
			return
		case <-alive:
			if processGone(proc.pid()) {
				c.setState(StateUnhealthy, errors.New("the backend process exited"))
				return
			}
			continue
		case <-t.C:
		}
		cl := c.currentClient()
		if cl == nil {
			return // closed while the ticker fired
		}
		pctx, cancel := context.WithTimeout(ctx, h.Timeout)
		err := probe(pctx, cl)
		cancel()
		if errors.Is(err, transport.ErrTransportClosed) {
			c.setState(StateUnhealthy, errors.New("connection lost"))
			return
		}
		if err == nil {
			if fails > 0 {
				c.m.log.Info("backend healthy again", "backend", c.spec.Name)
			}
			fails = 0
			continue
		}
		fails++
		c.m.log.Warn("backend health check failed", "backend", c.spec.Name, "failures", fails, "err", err)
		if fails >= h.UnhealthyThreshold {
			c.setState(StateUnhealthy, fmt.Errorf("%d health checks failed: %w", fails, err))
			return
		}
	}
}

// probe checks that a backend answers. mcp-go's Ping does nothing on a
// 2026-07-28 connection (that protocol has no ping), so those backends are
// asked server/discover, their cheapest request.
func probe(ctx context.Context, cl *client.Client) error {
	if mcp.IsModernProtocol(cl.ProtocolVersion()) {
		_, err := cl.Discover(ctx, mcp.DiscoverRequest{})
		return err
	}
	return cl.Ping(ctx)
}

func (c *Conn) currentClient() *client.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client
}

func (c *Conn) setState(s string, err error) {
	c.mu.Lock()
	changed := c.state != s
	from, tried := c.state, c.tried
	c.state = s
	if changed {
		c.since = time.Now()
	}
	if err != nil {
		c.lastErr = err.Error()
	}
	c.mu.Unlock()
	if changed && s != StateConnecting {
		c.m.changed()
	}
	// The first attempt's outcome is startup, not a change (the startup
	// log and /status show it).
	if changed && tried {
		c.m.stateChanged(c, StateChange{Backend: c.spec.Name, Kind: "health", From: from, To: s, Reason: errString(err)})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Circuit breaker states (BackendStatus.Circuit).
const (
	CircuitClosed   = "closed"
	CircuitOpen     = "open"
	CircuitHalfOpen = "half_open"
)

// circuitLocked is the breaker's state now (c.mu held): open until
// openUntil, then half-open (a trial call may go through) until a call
// succeeds or fails.
func (c *Conn) circuitLocked(now time.Time) string {
	switch {
	case c.openUntil.IsZero():
		return CircuitClosed
	case now.Before(c.openUntil):
		return CircuitOpen
	}
	return CircuitHalfOpen
}

// connect opens a session and loads the catalogue.
func (c *Conn) connect(ctx context.Context) error {
	tr, hc, err := c.transport()
	if err != nil {
		return err
	}
	proc, _ := tr.(*cmdTransport)
	opts := []client.ClientOption{
		client.WithElicitationHandler(elicitHandler{c}),
		client.WithSamplingHandler(samplingHandler{c}),
		client.WithRootsHandler(rootsHandler{c}),
	}
	if c.spec.ProtocolVersion != "" {
		opts = append(opts, client.WithProtocolVersion(c.spec.ProtocolVersion))
	} else {
		opts = append(opts, client.WithDiscoverTimeout(time.Second))
	}
	wrapped, tp := wrapTransport(tr)
	cl := client.NewClient(wrapped, opts...)
	cl.OnNotification(c.onNotification)
	if err := cl.Start(context.WithoutCancel(ctx)); err != nil {
		_ = cl.Close()
		return fmt.Errorf("starting: %w", err)
	}
	ictx, cancel := context.WithTimeout(ctx, c.initTimeout())
	defer cancel()
	init, err := cl.Initialize(ictx, mcp.InitializeRequest{Params: mcp.InitializeParams{
		ClientInfo: mcp.Implementation{Name: c.m.opts.ClientName, Version: c.m.opts.ClientVersion},
	}})
	if err != nil {
		_ = cl.Close()
		return fmt.Errorf("initialize: %w", err)
	}
	c.mu.Lock()
	c.client, c.proc = cl, proc
	c.protocol = init.ProtocolVersion
	c.raw = newRawSession(c, tr, hc, tp, init.ProtocolVersion)
	c.connects++
	c.failures, c.openUntil = 0, time.Time{}
	lvl := c.level
	c.mu.Unlock()
	if err := c.refresh(ictx, "all"); err != nil {
		c.disconnect()
		return err
	}
	if lvl != "" {
		c.setLevel(ctx, lvl)
	}
	return nil
}

func (c *Conn) initTimeout() time.Duration {
	if c.spec.Timeout > 0 && c.spec.Timeout < 30*time.Second {
		return max(c.spec.Timeout, 5*time.Second)
	}
	return 30 * time.Second
}

// transport builds the client transport for the spec, and for
// streamable HTTP the HTTP client it uses.
func (c *Conn) transport() (transport.Interface, *http.Client, error) {
	s := c.spec
	// mcp-go's transports log through the gateway's logger (their own
	// default is slog.Default), naming the backend; their Info lines
	// ("listening to server forever", …) are chatter, logged at Debug.
	log := slog.New(infoAsDebug{c.m.log.Handler()}).With("backend", s.Name)
	switch {
	case s.InProcess != nil:
		return transport.NewInProcessTransportWithOptions(s.InProcess,
			transport.WithElicitationHandler(elicitHandler{c}),
			transport.WithSamplingHandler(samplingHandler{c}),
			transport.WithRootsHandler(rootsHandler{c})), nil, nil
	case len(s.Command) > 0:
		var cmd *exec.Cmd
		env := make([]string, 0, len(s.Env))
		for _, k := range sortedKeys(s.Env) {
			env = append(env, k+"="+s.Env[k])
		}
		tr := transport.NewStdioWithOptions(s.Command[0], env, s.Command[1:],
			transport.WithCommandFunc(func(ctx context.Context, command string, env []string, args []string) (*exec.Cmd, error) {
				path, err := exec.LookPath(command)
				if err != nil {
					return nil, fmt.Errorf("command %q: %w", command, err)
				}
				cmd = exec.Command(path, args...)
				cmd.Dir = s.Cwd
				cmd.Env = append(os.Environ(), env...)
				// Its own process group, so shutdown can stop the
				// whole tree a wrapper (npx, sh) started.
				cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
				return cmd, nil
			}),
			transport.WithCommandStderrWriter(&stderrLog{c: c}),
			transport.WithCommandLogger(log))
		if _, err := exec.LookPath(s.Command[0]); err != nil {
			return nil, nil, fmt.Errorf("command %q not found: %w", s.Command[0], err)
		}
		return &cmdTransport{Interface: tr, cmd: &cmd}, nil, nil
	case s.Transport == "sse":
		tr, err := transport.NewSSE(s.URL, transport.WithHeaders(s.Headers), transport.WithHTTPClient(c.httpClient()), transport.WithSSELogger(log))
		return tr, nil, err
	default:
		hc := c.httpClient()
		opts := []transport.StreamableHTTPCOption{transport.WithHTTPHeaders(s.Headers), transport.WithHTTPBasicClient(hc), transport.WithHTTPLogger(log)}
		if s.ProtocolVersion == "" || s.ProtocolVersion < "2026-07-28" {
			// Keep the standalone GET stream open: it is how a
			// 2025-11-25 server tells vmcp its lists changed. (mcp-go
			// speaks the 2025-11-25 era on such a connection; pin
			// protocol_version: 2026-07-28 to get the new era instead.)
			opts = append(opts, transport.WithContinuousListening())
		}
		tr, err := transport.NewStreamableHTTP(s.URL, opts...)
		return tr, hc, err
	}
}

// pooledClient is the HTTP client of one backend: Go's default keeps only
// two idle connections per host, so concurrent calls would open a new
// connection each time.
func pooledClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 256
	return &http.Client{Transport: t}
}

// httpClient is pooledClient with the backend's outgoing credentials set
// on each request.
func (c *Conn) httpClient() *http.Client {
	hc := pooledClient()
	if c.spec.Auth.SendsHeaders() {
		hc.Transport = &authTransport{base: hc.Transport, c: c}
	}
	return hc
}

// cmdTransport remembers the spawned command (its pid, for status and for
// killing the process group on close).
type cmdTransport struct {
	transport.Interface
	cmd **exec.Cmd
}

func (t *cmdTransport) SetRequestHandler(h transport.RequestHandler) {
	t.Interface.(transport.BidirectionalInterface).SetRequestHandler(h)
}

func (t *cmdTransport) Close() error {
	err := t.Interface.Close()
	if cmd := *t.cmd; cmd != nil && cmd.Process != nil {
		// The transport signals only the leader; take the group down too.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return err
}

func (t *cmdTransport) pid() int {
	if cmd := *t.cmd; cmd != nil && cmd.Process != nil {
		return cmd.Process.Pid
	}
	return 0
}

type stderrLog struct{ c *Conn }

func (w *stderrLog) Write(p []byte) (int, error) {
	w.c.m.log.Debug("backend stderr", "backend", w.c.spec.Name, "line", string(p))
	return len(p), nil
}

// refresh reloads one list ("tools", "resources", "prompts" or "all"),
// following pagination, keeping the raw JSON.
func (c *Conn) refresh(ctx context.Context, what string) error {
	cl := c.currentClient()
	if cl == nil {
		return ErrUnavailable
	}
	caps := cl.GetServerCapabilities()
	if what == "all" || what == "tools" {
		var tools []*RawTool
		if caps.Tools != nil {
			items, err := listAll(ctx, cl, "tools/list", "tools")
			if err != nil {
				return fmt.Errorf("tools/list: %w", err)
			}
			for _, it := range items {
				t, err := ParseRawTool(it)
				if err != nil {
					c.m.log.Warn("backend sent an unusable tool", "backend", c.spec.Name, "err", err)
					continue
				}
				tools = append(tools, t)
			}
		}
		c.mu.Lock()
		c.tools = tools
		c.mu.Unlock()
	}
	if (what == "all" || what == "resources") && caps.Resources != nil {
		res, err := listAll(ctx, cl, "resources/list", "resources")
		if err != nil {
			return fmt.Errorf("resources/list: %w", err)
		}
		tpl, err := listAll(ctx, cl, "resources/templates/list", "resourceTemplates")
		if err != nil {
			c.m.log.Debug("resources/templates/list failed", "backend", c.spec.Name, "err", err)
		}
		c.mu.Lock()
		c.resources, c.templates = res, tpl
		c.mu.Unlock()
	}
	if (what == "all" || what == "prompts") && caps.Prompts != nil {
		ps, err := listAll(ctx, cl, "prompts/list", "prompts")
		if err != nil {
			return fmt.Errorf("prompts/list: %w", err)
		}
		c.mu.Lock()
		c.prompts = ps
		c.mu.Unlock()
	}
	return nil
}

// listAll pages through a list method with the high-level client (so the
// protocol era is handled) and collects the raw items via the tap.
func listAll(ctx context.Context, cl *client.Client, method, field string) ([]json.RawMessage, error) {
	var out []json.RawMessage
	cursor := mcp.Cursor("")
	seen := map[mcp.Cursor]bool{}
	for page := 0; page < 1000; page++ {
		sctx, sink := withSink(ctx, method)
		var err error
		switch method {
		case "tools/list":
			req := mcp.ListToolsRequest{}
			req.Params.Cursor = cursor
			_, err = cl.ListToolsByPage(sctx, req)
		case "resources/list":
			req := mcp.ListResourcesRequest{}
			req.Params.Cursor = cursor
			_, err = cl.ListResourcesByPage(sctx, req)
		case "resources/templates/list":
			req := mcp.ListResourceTemplatesRequest{}
			req.Params.Cursor = cursor
			_, err = cl.ListResourceTemplatesByPage(sctx, req)
		case "prompts/list":
			req := mcp.ListPromptsRequest{}
			req.Params.Cursor = cursor
			_, err = cl.ListPromptsByPage(sctx, req)
		}
		raw := sink.get()
		if raw == nil {
			if err == nil {
				err = errors.New("no result")
			}
			return nil, err
		}
		var pageDoc map[string]json.RawMessage
		if jerr := json.Unmarshal(raw, &pageDoc); jerr != nil {
			return nil, jerr
		}
		var items []json.RawMessage
		if b, ok := pageDoc[field]; ok {
			if jerr := json.Unmarshal(b, &items); jerr != nil {
				return nil, fmt.Errorf("%s: %w", field, jerr)
			}
		}
		out = append(out, items...)
		var next mcp.Cursor
		if b, ok := pageDoc["nextCursor"]; ok {
			_ = json.Unmarshal(b, &next)
		}
		if next == "" || seen[next] {
			return out, nil
		}
		seen[next] = true
		cursor = next
	}
	return out, nil
}

func (c *Conn) disconnect() {
	c.mu.Lock()
	cl, raw := c.client, c.raw
	c.client, c.raw = nil, nil
	c.mu.Unlock()
	raw.closeIdle()
	if cl != nil {
		_ = cl.Close()
	}
}

func (c *Conn) close() error {
	c.mu.Lock()
	c.closed = true
	c.state = StateClosed
	cl, raw := c.client, c.raw
	c.client, c.raw = nil, nil
	c.mu.Unlock()
	raw.closeIdle()
	if cl != nil {
		return cl.Close()
	}
	return nil
}

func (c *Conn) status() BackendStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := BackendStatus{Name: c.spec.Name, Transport: c.spec.Kind(), State: c.state, Tools: len(c.tools),
		Resources: len(c.resources), Prompts: len(c.prompts), Protocol: c.protocol, LastError: c.lastErr,
		Connects: c.connects, Since: c.since}
	st.Circuit = c.circuitLocked(time.Now())
	st.CircuitOpen = st.Circuit == CircuitOpen
	if c.client != nil && c.proc != nil {
		st.PID = c.proc.pid()
	}
	if c.spec.Auth != nil {
		st.Auth = c.spec.Auth.Type()
	}
	return st
}

// acquire checks state and circuit before a call, and returns the
// session's client and its lean tools/call path (nil: none).
func (c *Conn) acquire() (*client.Client, *rawSession, error) {
	cl, raw, trial, err := c.acquireLocked()
	if trial {
		// The open period is over: this call is the trial.
		c.m.stateChanged(c, StateChange{Backend: c.spec.Name, Kind: "circuit", From: CircuitOpen, To: CircuitHalfOpen})
	}
	return cl, raw, err
}

func (c *Conn) acquireLocked() (cl *client.Client, raw *rawSession, trial bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != StateReady || c.client == nil {
		why := c.lastErr
		if why == "" {
			why = c.state
		}
		return nil, nil, false, fmt.Errorf("%w: backend %q is %s (%s)", ErrUnavailable, c.spec.Name, c.state, why)
	}
	switch c.circuitLocked(time.Now()) {
	case CircuitOpen:
		return nil, nil, false, fmt.Errorf("%w: backend %q: circuit open after %d failed calls, retrying after %s", ErrUnavailable, c.spec.Name, c.failures, c.openUntil.Format(time.RFC3339))
	case CircuitHalfOpen:
		trial = !c.halfOpen
		c.halfOpen = true
	}
	return c.client, c.raw, trial, nil
}

// record updates the circuit breaker after a call.
func (c *Conn) record(err error) {
	c.mu.Lock()
	from := c.circuitLocked(time.Now())
	if err == nil {
		c.failures, c.openUntil, c.halfOpen = 0, time.Time{}, false
	} else {
		c.failures++
		if c.failures >= c.m.opts.Health.FailureThreshold {
			c.openUntil = time.Now().Add(c.m.opts.Health.OpenFor)
			c.halfOpen = false
			c.lastErr = err.Error()
		}
	}
	to := c.circuitLocked(time.Now())
	c.mu.Unlock()
	if from != to {
		c.m.stateChanged(c, StateChange{Backend: c.spec.Name, Kind: "circuit", From: from, To: to, Reason: errString(err)})
	}
}

// track registers a call in flight and returns its context and id, and
// the progress token vmcp sends in place of the caller's ("" when the
// caller's meta has none): the caller's meta is not copied or modified.
func (c *Conn) track(ctx context.Context, meta map[string]any) (context.Context, uint64, string) {
	id := c.seq.Add(1)
	ci := &callInfo{ctx: ctx, start: time.Now()}
	tok := ""
	if t, ok := meta["progressToken"]; ok && t != nil {
		ci.token = t
		tok = "vmcp-" + strconv.FormatUint(id, 10)
	}
	c.mu.Lock()
	c.inflight[id] = ci
	if tok != "" {
		c.tokens[tok] = ci
	}
	c.mu.Unlock()
	return context.WithValue(detach(ctx), callKey{}, ci), id, tok
}

// detach returns a context with ctx's cancellation and deadline but none
// of its values: the front request's values (its HTTP headers, session,
// protocol info) must not leak into the backend request, where an
// in-process mcp-go server would read them as its own.
func detach(ctx context.Context) context.Context {
	return valuelessCtx{ctx}
}

type valuelessCtx struct{ parent context.Context }

func (c valuelessCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }
func (c valuelessCtx) Done() <-chan struct{}       { return c.parent.Done() }
func (c valuelessCtx) Err() error                  { return c.parent.Err() }
func (c valuelessCtx) Value(any) any               { return nil }

func (c *Conn) untrack(id uint64, tok string) {
	c.mu.Lock()
	delete(c.inflight, id)
	if tok != "" {
		delete(c.tokens, tok)
	}
	c.mu.Unlock()
}

// callCtx finds the client request behind a backend-initiated message:
// the context itself for HTTP backends, else the most recent in-flight
// call (stdio gives no correlation; see docs/gateway.md).
func (c *Conn) callCtx(ctx context.Context) context.Context {
	if ci, ok := ctx.Value(callKey{}).(*callInfo); ok {
		return ci.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var best *callInfo
	principals := map[string]bool{}
	for _, ci := range c.inflight {
		if best == nil || ci.start.After(best.start) {
			best = ci
		}
		sub, _ := outauth.SubjectFrom(ci.ctx)
		principals[sub.Principal] = true
	}
	switch {
	case best == nil:
		return context.Background()
	case len(principals) > 1:
		// Calls of several principals: a guess could hand one caller's
		// question, answer or log line to another.
		return context.WithValue(context.Background(), ambiguousKey{}, true)
	}
	return best.ctx
}

type ambiguousKey struct{}

// Ambiguous reports a backend-initiated message that vmcp cannot tie to
// one caller: a stdio backend sent it while calls of several principals
// were in flight. It must go to nobody rather than to a guess.
func Ambiguous(ctx context.Context) bool {
	v, _ := ctx.Value(ambiguousKey{}).(bool)
	return v
}

// begin prepares one request to the backend: the session (state and
// circuit checked), the configured timeout, and tracking of the call so
// that what the backend sends back can be routed. ctx keeps the timeout
// (the caller's deadline check); tctx is what goes to the client; tok is
// the progress token substituted for the caller's (track).
func (c *Conn) begin(ctx context.Context, meta map[string]any) (cl *client.Client, rs *rawSession, tctx, ctxOut context.Context, tok string, end func(), err error) {
	cl, rs, err = c.acquire()
	if err != nil {
		return nil, nil, nil, nil, "", nil, err
	}
	cancel := func() {}
	if c.spec.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.spec.Timeout)
	}
	tctx, id, tok := c.track(ctx, meta)
	return cl, rs, tctx, ctx, tok, func() { c.untrack(id, tok); cancel() }, nil
}

func (c *Conn) callTool(ctx context.Context, tool string, args json.RawMessage, meta map[string]any) (*CallResult, error) {
	// The trace context is the CLIENT span's in the caller's ctx (tctx
	// is detached from its values).
	cm := c.m.newCallMeta(ctx, meta, "")
	cl, rs, tctx, ctx, tok, end, err := c.begin(ctx, meta)
	if err != nil {
		return nil, err
	}
	defer end()
	cm.token = tok
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	var r *rawResult
	if rs != nil {
		r, err = rs.callTool(tctx, tool, args, &cm)
	} else {
		r, err = c.callToolClient(cl, tctx, tool, args, cm.asMap())
	}
	if r == nil {
		if errors.Is(err, errUnreadable) {
			c.record(nil) // a result arrived
			return nil, fmt.Errorf("backend %q: %s: %w", c.spec.Name, tool, err)
		}
		if err == nil || errors.Is(err, errNoResult) {
			err = errNoResult
		}
		if ctx.Err() == nil {
			c.record(err)
			c.checkLost(err)
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && c.spec.Timeout > 0 {
			return nil, fmt.Errorf("backend %q: %s timed out after %s (backends[].timeout)", c.spec.Name, tool, c.spec.Timeout)
		}
		if ae := authCause(err); ae != err {
			return nil, ae
		}
		return nil, fmt.Errorf("backend %q: %s: %w", c.spec.Name, tool, err)
	}
	// A result arrived: whatever the client made of it (it rejects unknown
	// content types, for one), the raw result is what we pass on.
	c.record(nil)
	if len(r.Content) == 0 || string(r.Content) == "null" {
		r.Content = json.RawMessage("[]")
	}
	return &CallResult{Content: r.Content, StructuredContent: r.StructuredContent, IsError: r.IsError, Meta: r.Meta}, nil
}

// callToolClient makes the call with mcp-go's client and returns the raw
// result the tap kept.
func (c *Conn) callToolClient(cl *client.Client, tctx context.Context, tool string, args json.RawMessage, sentMeta map[string]any) (*rawResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = args
	if sentMeta != nil {
		m := &mcp.Meta{AdditionalFields: map[string]any{}}
		for k, v := range sentMeta {
			if k == "progressToken" {
				m.ProgressToken = v
			} else {
				m.AdditionalFields[k] = v
			}
		}
		req.Params.Meta = m
	}
	sctx, sink := withSink(tctx, "tools/call")
	_, err := cl.CallTool(sctx, req)
	raw := sink.get()
	if raw == nil {
		return nil, err
	}
	var r rawResult
	if jerr := json.Unmarshal(raw, &r); jerr != nil {
		return nil, fmt.Errorf("%w: %w", errUnreadable, jerr)
	}
	return &r, nil
}

// checkLost notices a dead session (a stdio child that exited).
func (c *Conn) checkLost(err error) {
	if errors.Is(err, transport.ErrTransportClosed) || errors.Is(err, transport.ErrSessionTerminated) {
		select {
		case c.lost <- struct{}{}:
		default:
		}
	}
}

func (c *Conn) request(ctx context.Context, method string, params any) (json.RawMessage, error) {
	cl, _, tctx, _, _, end, err := c.begin(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer end()
	sctx, sink := withSink(tctx, method)
	b, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	switch method {
	case "resources/read":
		var req mcp.ReadResourceRequest
		if err := json.Unmarshal(b, &req.Params); err != nil {
			return nil, err
		}
		_, err = cl.ReadResource(sctx, req)
	case "prompts/get":
		var req mcp.GetPromptRequest
		if err := json.Unmarshal(b, &req.Params); err != nil {
			return nil, err
		}
		_, err = cl.GetPrompt(sctx, req)
	case "completion/complete":
		var req mcp.CompleteRequest
		if err := json.Unmarshal(b, &req.Params); err != nil {
			return nil, err
		}
		_, err = cl.Complete(sctx, req)
	case "resources/subscribe":
		var req mcp.SubscribeRequest
		if err := json.Unmarshal(b, &req.Params); err != nil {
			return nil, err
		}
		err = cl.Subscribe(sctx, req)
		if err == nil {
			return json.RawMessage("{}"), nil
		}
	case "resources/unsubscribe":
		var req mcp.UnsubscribeRequest
		if err := json.Unmarshal(b, &req.Params); err != nil {
			return nil, err
		}
		err = cl.Unsubscribe(sctx, req)
		if err == nil {
			return json.RawMessage("{}"), nil
		}
	default:
		return nil, fmt.Errorf("vmcp does not forward %s", method)
	}
	if raw := sink.get(); raw != nil {
		return raw, nil
	}
	if err == nil {
		err = errors.New("no result")
	}
	c.checkLost(err)
	if ae := authCause(err); ae != err {
		return nil, ae
	}
	return nil, fmt.Errorf("backend %q: %s: %w", c.spec.Name, method, err)
}

func (c *Conn) setLevel(ctx context.Context, level mcp.LoggingLevel) {
	c.mu.Lock()
	c.level = level
	cl := c.client
	logs := cl != nil && c.state == StateReady && cl.GetServerCapabilities().Logging != nil
	c.mu.Unlock()
	if !logs {
		return
	}
	req := mcp.SetLevelRequest{}
	req.Params.Level = level
	if err := cl.SetLevel(ctx, req); err != nil {
		c.m.log.Debug("logging/setLevel failed", "backend", c.spec.Name, "err", err)
	}
}

// onNotification runs on the transport's read loop: never block here.
func (c *Conn) onNotification(n mcp.JSONRPCNotification) {
	switch n.Method {
	case "notifications/tools/list_changed", "notifications/resources/list_changed", "notifications/prompts/list_changed":
		what := map[string]string{
			"notifications/tools/list_changed":     "tools",
			"notifications/resources/list_changed": "resources",
			"notifications/prompts/list_changed":   "prompts",
		}[n.Method]
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.refresh(ctx, what); err != nil {
				c.m.log.Warn("refreshing after list_changed failed", "backend", c.spec.Name, "list", what, "err", err)
				return
			}
			c.m.changed()
		}()
	case "notifications/progress":
		tok := fmt.Sprint(n.Params.AdditionalFields["progressToken"])
		c.mu.Lock()
		ci := c.tokens[tok]
		c.mu.Unlock()
		if ci == nil || c.m.opts.Relay == nil {
			return
		}
		n.Params.AdditionalFields["progressToken"] = ci.token
		c.m.opts.Relay.Notify(ci.ctx, c.spec.Name, n)
	default:
		if c.m.opts.Relay != nil {
			c.m.opts.Relay.Notify(c.callCtx(context.Background()), c.spec.Name, n)
		}
	}
}

// Server-to-client requests from the backend, relayed to the client whose
// call caused them.
type elicitHandler struct{ c *Conn }

func (h elicitHandler) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	if h.c.m.opts.Relay == nil {
		return nil, errors.New("vmcp cannot relay elicitation")
	}
	return h.c.m.opts.Relay.Elicit(h.c.callCtx(ctx), h.c.spec.Name, req)
}

type samplingHandler struct{ c *Conn }

func (h samplingHandler) CreateMessage(ctx context.Context, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	if h.c.m.opts.Relay == nil {
		return nil, errors.New("vmcp cannot relay sampling")
	}
	return h.c.m.opts.Relay.CreateMessage(h.c.callCtx(ctx), h.c.spec.Name, req)
}

type rootsHandler struct{ c *Conn }

func (h rootsHandler) ListRoots(ctx context.Context, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	if h.c.m.opts.Relay == nil {
		return &mcp.ListRootsResult{Roots: []mcp.Root{}}, nil
	}
	return h.c.m.opts.Relay.ListRoots(h.c.callCtx(ctx), h.c.spec.Name, req)
}

// processGone reports whether pid has exited (is gone or a zombie).
func processGone(pid int) bool {
	if pid <= 0 {
		return false
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return false // no procfs: rely on health checks
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return os.IsNotExist(err)
	}
	// The state follows the ")" that ends the command name.
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
		}
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// infoAsDebug logs Info records at Debug (Warn and Error as they are).
type infoAsDebug struct{ slog.Handler }

func (h infoAsDebug) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return h.Handler.Enabled(ctx, l)
}

func (h infoAsDebug) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo {
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h infoAsDebug) WithAttrs(as []slog.Attr) slog.Handler {
	return infoAsDebug{h.Handler.WithAttrs(as)}
}

func (h infoAsDebug) WithGroup(name string) slog.Handler {
	return infoAsDebug{h.Handler.WithGroup(name)}
}
