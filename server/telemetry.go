package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
	"github.com/mark3labs/mcp-go/tracing"

	"github.com/vmcp-dev/vmcp/backends"
	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/steps"
	"github.com/vmcp-dev/vmcp/telemetry"
)

// This file is the server's side of telemetry: the hooks the request
// path, backend calls and runs call. Every hook is a no-op when telemetry
// is off (g.tel is nil).

// telemetryConfig converts the config's telemetry block.
func telemetryConfig(c dsl.Telemetry, version string) telemetry.Config {
	tc := telemetry.Config{ServiceName: c.ServiceName.Value, ServiceVersion: version}
	tc.Traces.Exporter = c.Traces.Exporter.Value
	tc.Traces.Endpoint = c.Traces.OTLP.Endpoint.Value
	if c.Traces.SamplingRatio.Set {
		r := c.Traces.SamplingRatio.Value
		tc.Traces.SamplingRatio = &r
	}
	tc.Traces.PropagateBaggage = c.Traces.PropagateBaggage.Value
	tc.Metrics.Prometheus = c.Metrics.Prometheus.Enabled.Value
	tc.Metrics.OTLP = c.Metrics.OTLP.Enabled.Value
	tc.Metrics.OTLPEndpoint = c.Metrics.OTLP.Endpoint.Value
	tc.Metrics.OTLPInterval = c.Metrics.OTLP.Interval.Value
	tc.Metrics.NoToolLabel = c.Metrics.ToolLabel.Set && !c.Metrics.ToolLabel.Value
	tc.Metrics.CardinalityLimit = int(c.Metrics.CardinalityLimit.Value)
	tc.Audit.Path = c.Audit.Path.Value
	tc.Audit.IncludeArguments = c.Audit.IncludeArguments.Value
	tc.Audit.IncludeAnswers = c.Audit.IncludeAnswers.Value
	for _, r := range c.Audit.Redact {
		tc.Audit.Redact = append(tc.Audit.Redact, r.Value)
	}
	return tc
}

// initTelemetry builds g.tel (unless Options.Telemetry handed one in) and
// registers the gauges read at collection time.
func (g *Gateway) initTelemetry(opts *Options) error {
	if opts.Telemetry != nil {
		g.tel = opts.Telemetry
	} else {
		t, err := telemetry.New(context.Background(), telemetryConfig(g.cfg.Telemetry, g.ver), &telemetry.Options{Logger: g.log})
		if err != nil {
			return err
		}
		g.tel, g.ownTel = t, true
	}
	return g.tel.RegisterGauges(telemetry.Gauges{
		Runs: func(ctx context.Context) map[string]int {
			if g.runs == nil {
				return nil
			}
			return g.runCounts(ctx)
		},
		Replicas: func(ctx context.Context) int {
			if g.runs == nil {
				return -1
			}
			pg, ok := g.runs.base.(*postgres.Store)
			if !ok {
				return -1
			}
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			rs, err := pg.Replicas(ctx)
			if err != nil {
				return -1
			}
			n := 0
			for _, r := range rs {
				if r.Live {
					n++
				}
			}
			return n
		},
		Backends: func() []telemetry.BackendState {
			var out []telemetry.BackendState
			for _, st := range g.mgr.Status() {
				out = append(out, telemetry.BackendState{Name: st.Name, Up: st.State == backends.StateReady, Circuit: st.Circuit, Connects: int64(st.Connects)})
			}
			return out
		},
		CatalogTools: func() map[string]int {
			out := map[string]int{}
			if c := g.cat.Load(); c != nil {
				for _, te := range c.tools {
					if !te.composite {
						out[te.backend]++
					}
				}
			}
			return out
		},
	})
}

// noteBackendChange counts circuit transitions and audits every health
// or circuit change of a backend (backends.Options.OnStateChange).
func (g *Gateway) noteBackendChange(ch backends.StateChange) {
	if g.tel == nil {
		return
	}
	ctx := context.Background()
	if ch.Kind == "circuit" {
		g.tel.CircuitChanged(ctx, ch.Backend, ch.To)
	}
	outcome := "success"
	if ch.To == backends.StateUnhealthy || ch.To == backends.CircuitOpen {
		outcome = "failure"
	}
	detail := map[string]any{"kind": ch.Kind, "from": ch.From, "to": ch.To}
	if ch.Reason != "" {
		detail["reason"] = ch.Reason
	}
	g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditBackendChanged, Outcome: outcome,
		Principal: &telemetry.Principal{Sub: "vmcp", Auth: "none"}, Target: &telemetry.Target{Backend: ch.Backend}, Detail: detail})
}

// noteRebuilt counts a catalogue rebuild.
func (g *Gateway) noteRebuilt(startup bool) {
	reason := "change"
	if startup {
		reason = "startup"
	}
	g.tel.CatalogRebuilt(context.Background(), reason)
}

// shutdownTelemetry flushes the exporters, for at most 5 s: an
// unreachable collector must not hold up the process's exit.
func (g *Gateway) shutdownTelemetry() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.tel.Shutdown(ctx); err != nil {
		g.log.Warn("telemetry not flushed at shutdown", "err", err)
	}
	return nil
}

// mcpTelemetryOptions are the mcp-go options that give every request
// mcp-go dispatches a SERVER span and a duration (mcpTracer, started
// after mcp-go extracted the _meta trace context through metaPropagator),
// and name the operation of tools/call and prompts/get once the handler
// runs.
func (g *Gateway) mcpTelemetryOptions() []mcpserver.ServerOption {
	if g.tel == nil {
		return nil
	}
	return []mcpserver.ServerOption{
		mcpserver.WithMetaPropagator(metaPropagator{g.tel}),
		mcpserver.WithTracer(mcpTracer{g}),
		mcpserver.WithToolHandlerMiddleware(func(next mcpserver.ToolHandlerFunc) mcpserver.ToolHandlerFunc {
			return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				op := telemetry.OpFromContext(ctx)
				op.SetTarget(g.toolTarget(req.Params.Name), "")
				res, err := next(ctx, req)
				op.Fail(resultError(res, err))
				return res, err
			}
		}),
		mcpserver.WithPromptHandlerMiddleware(func(next mcpserver.PromptHandlerFunc) mcpserver.PromptHandlerFunc {
			return func(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
				telemetry.OpFromContext(ctx).SetTarget("", req.Params.Name)
				return next(ctx, req)
			}
		}),
	}
}

// mcpTracer is mcp-go's tracing hook (WithTracer): mcp-go starts a
// "mcp.<method>" server span around every JSON-RPC request it dispatches,
// over HTTP and stdio; vmcp makes it its SERVER operation (span and
// duration, in ctx for the handlers). mcp-go's per-tool internal spans are
// dropped (the SERVER span and the backend CLIENT span say it all).
type mcpTracer struct{ g *Gateway }

func (m mcpTracer) Start(ctx context.Context, name string, kind tracing.SpanKind, _ ...tracing.Attribute) (context.Context, tracing.Span) {
	method, ok := strings.CutPrefix(name, "mcp.")
	if !ok || kind != tracing.SpanKindServer {
		return ctx, noSpan{}
	}
	// A method name is a label value: one mcp-go does not dispatch (any
	// string a client sends) becomes _OTHER, answered "method not found".
	known := dispatched[method]
	if !known {
		method = telemetry.OtherTool
	}
	ctx, op := m.g.tel.StartServer(ctx, m.g.serverRequest(ctx, method, "", "", nil))
	if op == nil {
		return ctx, noSpan{}
	}
	if !known {
		op.Fail(strconv.Itoa(mcp.METHOD_NOT_FOUND), "method not found")
	}
	return telemetry.ContextWithOp(ctx, op), &mcpSpan{op: op, ctx: ctx}
}

// dispatched are the methods mcp-go's request handler serves.
var dispatched = func() map[string]bool {
	out := map[string]bool{}
	for _, m := range []mcp.MCPMethod{mcp.MethodInitialize, mcp.MethodPing, mcp.MethodServerDiscover, mcp.MethodSubscriptionsListen,
		mcp.MethodSetLogLevel, mcp.MethodResourcesList, mcp.MethodResourcesTemplatesList, mcp.MethodResourcesRead,
		mcp.MethodResourcesSubscribe, mcp.MethodResourcesUnsubscribe, mcp.MethodPromptsList, mcp.MethodPromptsGet,
		mcp.MethodToolsList, mcp.MethodToolsCall, mcp.MethodTasksGet, mcp.MethodTasksList, mcp.MethodTasksResult,
		mcp.MethodTasksCancel, mcp.MethodCompletionComplete} {
		out[string(m)] = true
	}
	return out
}()

// mcpSpan ends the SERVER operation when mcp-go ends its span; the
// failure was noted by the OnError hook or the handler middleware.
type mcpSpan struct {
	op  *telemetry.Op
	ctx context.Context
}

func (s *mcpSpan) SetAttributes(...tracing.Attribute) {}
func (s *mcpSpan) RecordError(error)                  {}
func (s *mcpSpan) SetStatus(code tracing.StatusCode, desc string) {
	if code == tracing.StatusError {
		s.op.Fail(telemetry.ErrInternal, desc) // unless a hook said better
	}
}
func (s *mcpSpan) End() { s.op.End(s.ctx, "", "") }

type noSpan struct{}

func (noSpan) SetAttributes(...tracing.Attribute)   {}
func (noSpan) RecordError(error)                    {}
func (noSpan) SetStatus(tracing.StatusCode, string) {}
func (noSpan) End()                                 {}

// metaPropagator extracts the client's trace context from a request's
// _meta for mcp-go (WithMetaPropagator), before the SERVER span starts.
type metaPropagator struct{ t *telemetry.T }

func (p metaPropagator) InjectMeta(_ context.Context, meta *mcp.Meta) *mcp.Meta { return meta }
func (p metaPropagator) ExtractMeta(ctx context.Context, meta *mcp.Meta) context.Context {
	if meta == nil {
		return ctx
	}
	return p.t.ExtractMeta(ctx, meta.AdditionalFields)
}

// toolTarget is a tools/call's name as a label value: an advertised tool
// (or builtin), else OtherTool.
func (g *Gateway) toolTarget(tool string) string {
	if c := g.cat.Load(); c == nil || (c.tools[tool] == nil && !isBuiltin(tool)) {
		return telemetry.OtherTool
	}
	return tool
}

// traceToolCall wraps a tool handler in its own SERVER span (telemetry
// on): for the tools/call that vmcp serves without mcp-go (toolscall.go),
// where mcp-go's tracer (mcpTracer) does not run. tr describes the
// request: fastCall knows all of it (fastServerRequest), so nothing is
// looked up in the request's context, whose chain is long and cold here.
func (g *Gateway) traceToolCall(next mcpserver.ToolHandlerFunc, tr telemetry.Request) mcpserver.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		ctx, op := g.tel.StartServer(ctx, tr)
		res, err := next(ctx, req)
		et, msg := resultError(res, err)
		op.End(ctx, et, msg)
		return res, err
	}
}

// fastServerRequest is what serverRequest says of a tools/call fastCall
// serves: an advertised backend tool, over HTTP from client (the peer
// httpContext put in the context), on a session-era (pre-2026-07-28)
// session.
func (g *Gateway) fastServerRequest(tool, client, session string, meta *mcp.Meta) telemetry.Request {
	r := telemetry.Request{Method: string(mcp.MethodToolsCall), Tool: tool, Transport: "tcp", Client: client,
		Session: session, Protocol: g.tel.SessionProtocol(session)}
	if meta != nil {
		r.Meta = meta.AdditionalFields
	}
	return r
}

// transportKey marks requests that arrived over HTTP.
type transportKey struct{}

// serverRequest describes the request in ctx for its SERVER span.
func (g *Gateway) serverRequest(ctx context.Context, method, tool, prompt string, meta *mcp.Meta) telemetry.Request {
	r := telemetry.Request{Method: method, Tool: tool, Prompt: prompt, Transport: "pipe"}
	if tool != "" {
		r.Tool = g.toolTarget(tool)
	}
	if addr, ok := ctx.Value(transportKey{}).(string); ok {
		r.Transport, r.Client = "tcp", addr
	}
	if info := mcpserver.RequestProtocolInfoFromContext(ctx); info != nil && info.Modern {
		r.Protocol = info.ProtocolVersion
	} else if s := mcpserver.ClientSessionFromContext(ctx); s != nil {
		r.Session = s.SessionID()
		r.Protocol = g.tel.SessionProtocol(r.Session)
	}
	if meta != nil {
		r.Meta = meta.AdditionalFields
	}
	return r
}

func isBuiltin(name string) bool {
	for _, n := range builtinToolNames() {
		if n == name {
			return true
		}
	}
	return false
}

// resultError classifies an outcome as the convention's error.type.
func resultError(res *mcp.CallToolResult, err error) (string, string) {
	switch {
	case err == nil && res != nil && res.IsError:
		return telemetry.ErrToolError, ""
	case err == nil:
		return "", ""
	}
	return errorType(err), err.Error()
}

func errorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return telemetry.ErrTimeout
	case errors.Is(err, context.Canceled):
		return telemetry.ErrCanceled
	}
	var je interface{ ToJSONRPCError() mcp.JSONRPCError }
	if errors.As(err, &je) {
		return strconv.Itoa(je.ToJSONRPCError().Error.Code)
	}
	return telemetry.ErrInternal
}

// observeToolsList records a tools/list answered from the pre-serialised
// catalogue.
func (g *Gateway) observeToolsList(r *http.Request, body []byte, start time.Time) {
	if g.tel == nil {
		return
	}
	ctx := withTransport(r.Context(), r)
	req := g.serverRequest(ctx, string(mcp.MethodToolsList), "", "", nil)
	// The client's trace context, if its _meta carries one (decoded only
	// then).
	if bytes.Contains(body, []byte(`"traceparent"`)) {
		var p struct {
			Params struct {
				Meta map[string]any `json:"_meta"`
			} `json:"params"`
		}
		if json.Unmarshal(body, &p) == nil {
			req.Meta = p.Params.Meta
		}
	}
	// The fast path serves session-era requests only, outside mcp-go.
	req.Session = r.Header.Get(mcpserver.HeaderKeySessionID)
	req.Protocol = g.tel.SessionProtocol(req.Session)
	g.tel.ServerOperation(ctx, req, start, "")
}

// installTelemetryHooks wires session metrics and audit lines.
func (g *Gateway) installTelemetryHooks(h *mcpserver.Hooks) {
	if g.tel == nil {
		return
	}
	// A request mcp-go refuses (unknown tool, bad params, a handler's
	// error): its SERVER operation gets the JSON-RPC code as error.type.
	h.AddOnError(func(ctx context.Context, _ any, _ mcp.MCPMethod, _ any, err error) {
		telemetry.OpFromContext(ctx).Fail(errorType(err), err.Error())
	})
	h.AddAfterInitialize(func(ctx context.Context, _ any, _ *mcp.InitializeRequest, res *mcp.InitializeResult) {
		if s := mcpserver.ClientSessionFromContext(ctx); s != nil && res != nil {
			g.tel.SessionNegotiated(s.SessionID(), res.ProtocolVersion)
		}
	})
	h.AddOnRegisterSession(func(ctx context.Context, s mcpserver.ClientSession) {
		g.tel.SessionStarted(ctx, s.SessionID(), g.transportOf(ctx))
		g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditSessionCreated, Principal: auditPrincipal(ctx), Client: &telemetry.Client{Address: clientAddr(ctx)}})
	})
	h.AddOnUnregisterSession(func(ctx context.Context, s mcpserver.ClientSession) {
		if !g.tel.SessionEnded(ctx, s.SessionID()) {
			return
		}
		g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditSessionClosed, Principal: auditPrincipal(ctx)})
	})
}

func (g *Gateway) transportOf(ctx context.Context) string {
	if _, ok := ctx.Value(transportKey{}).(string); ok {
		return "tcp"
	}
	return "pipe"
}

func clientAddr(ctx context.Context) string {
	s, _ := ctx.Value(transportKey{}).(string)
	return s
}

func auditPrincipal(ctx context.Context) *telemetry.Principal {
	p := principal(ctx)
	auth := "bearer"
	if p == "anonymous" {
		auth = "none"
	}
	return &telemetry.Principal{Sub: p, Auth: auth}
}

// withTransport tags an HTTP request's context with its peer (for
// client.address and network.transport).
func withTransport(ctx context.Context, r *http.Request) context.Context {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return context.WithValue(ctx, transportKey{}, host)
}

// tracedCaller gives each backend call a CLIENT span, a duration and the
// span's trace context in _meta.
type tracedCaller struct {
	caller
	t *telemetry.T
}

func (c tracedCaller) CallTool(ctx context.Context, call *steps.Call) (*steps.Result, error) {
	if c.t == nil {
		return c.caller.CallTool(ctx, call)
	}
	// A refused call (authorization, fencing) never went out: no CLIENT
	// span, no backend duration.
	if err := c.admit(ctx, call); err != nil {
		return nil, err
	}
	c.g.observeResume(ctx)
	// The backend call's _meta gets this span's trace context from the
	// backends package (Options.TraceContext: backendTraceContext),
	// written into the request without a copy of the map.
	ctx, op := c.t.StartCall(ctx, telemetry.Call{Method: string(mcp.MethodToolsCall), Backend: call.Backend, Tool: call.Tool, Step: call.Step, Attempt: call.Attempt})
	r, err := c.send(ctx, call)
	switch {
	case err != nil:
		op.End(ctx, errorType(err), err.Error())
	case r.IsError:
		op.End(ctx, telemetry.ErrToolError, "")
	default:
		op.End(ctx, "", "")
	}
	return r, err
}

// backendTraceContext is the trace context backend tools/calls carry in
// their _meta: when traces are on, the CLIENT span tracedCaller started,
// as telemetry.InjectMeta would write it; when they are off, the
// client's own, which a plain call passes on (plainCallMeta), and none
// for any other call (the caller's _meta passes as given).
func (g *Gateway) backendTraceContext() func(context.Context) (backends.TraceContext, bool) {
	if !g.tel.Tracing() {
		return func(ctx context.Context) (tc backends.TraceContext, ok bool) {
			pt, ok := ctx.Value(passedTraceKey{}).(*passedTrace)
			if !ok {
				return tc, false
			}
			return backends.TraceContext{Parent: pt.parent, HasParent: true, State: pt.state}, true
		}
	}
	tel := g.tel
	return func(ctx context.Context) (tc backends.TraceContext, ok bool) {
		tc.HasParent, tc.State, tc.Baggage = tel.TraceMeta(ctx, &tc.Parent)
		return tc, true
	}
}

// tracedEngine gives each execution segment of a durable (composite) run
// an invoke_workflow span; plain tools pass straight through.
type tracedEngine struct {
	*engine.Engine
	g *Gateway
}

func (e *tracedEngine) Run(ctx context.Context, p *engine.Plan, args json.RawMessage, ro *engine.RunOptions) (*engine.Outcome, error) {
	ctx, end := e.g.runs.begin(ctx, ro, p.Name) // takeover.go: an execution this replica may drop
	return end(e.run(ctx, p, args, ro))
}

func (e *tracedEngine) run(ctx context.Context, p *engine.Plan, args json.RawMessage, ro *engine.RunOptions) (*engine.Outcome, error) {
	ctx = withWorkflow(ctx, p, ro)
	if e.g.tel == nil || ro == nil || !ro.Durable {
		return e.Engine.Run(ctx, p, args, ro)
	}
	e.g.tel.RunStarted(ctx, p.Name)
	e.g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditRunStarted, Principal: auditPrincipal(ctx),
		Target: &telemetry.Target{Workflow: p.Name, Run: ro.RunID}, Detail: map[string]any{"arguments": e.g.tel.Arguments(args)}})
	ctx, seg := e.g.tel.StartSegment(ctx, p.Name, ro.RunID, "")
	out, err := e.Engine.Run(ctx, p, args, e.observeSteps(ctx, p, ro))
	endSegment(ctx, seg, out, err)
	return out, err
}

func (e *tracedEngine) Resume(ctx context.Context, p *engine.Plan, cp *engine.Checkpoint, a engine.Answer, ro *engine.RunOptions) (*engine.Outcome, error) {
	ctx, end := e.g.runs.begin(ctx, ro, p.Name)
	return end(e.resume(ctx, p, cp, a, ro))
}

func (e *tracedEngine) resume(ctx context.Context, p *engine.Plan, cp *engine.Checkpoint, a engine.Answer, ro *engine.RunOptions) (*engine.Outcome, error) {
	ctx = withWorkflow(ctx, p, ro)
	if e.g.tel == nil {
		return e.Engine.Resume(ctx, p, cp, a, ro)
	}
	// The answer's claim is committed (the caller claimed it): the clock
	// of vmcp_resume_seconds starts here.
	ctx = withResumeClock(ctx)
	ctx, seg := e.g.tel.StartSegment(ctx, p.Name, ro.RunID, cp.TraceParent)
	seg.Event("answered", telemetry.KeyAction.String(a.Action), telemetry.KeySurface.String(surfaceOf(ctx)))
	out, err := e.Engine.Resume(ctx, p, cp, a, e.observeSteps(ctx, p, ro))
	endSegment(ctx, seg, out, err)
	return out, err
}

func (e *tracedEngine) Continue(ctx context.Context, p *engine.Plan, cp *engine.Checkpoint, rerun bool, ro *engine.RunOptions) (*engine.Outcome, error) {
	ctx, end := e.g.runs.begin(ctx, ro, p.Name)
	return end(e.cont(ctx, p, cp, rerun, ro))
}

func (e *tracedEngine) cont(ctx context.Context, p *engine.Plan, cp *engine.Checkpoint, rerun bool, ro *engine.RunOptions) (*engine.Outcome, error) {
	ctx = withWorkflow(ctx, p, ro)
	if e.g.tel == nil {
		return e.Engine.Continue(ctx, p, cp, rerun, ro)
	}
	ctx, seg := e.g.tel.StartSegment(ctx, p.Name, ro.RunID, cp.TraceParent)
	out, err := e.Engine.Continue(ctx, p, cp, rerun, e.observeSteps(ctx, p, ro))
	endSegment(ctx, seg, out, err)
	return out, err
}

// observeSteps returns ro with an observer that also records each tool
// and for_each step's duration (vmcp_step_duration_seconds). Elicitation
// steps are left out: their time is a person's (vmcp_question_wait).
func (e *tracedEngine) observeSteps(ctx context.Context, p *engine.Plan, ro *engine.RunOptions) *engine.RunOptions {
	if ro == nil {
		return ro
	}
	kinds := make(map[string]string, len(p.Steps))
	for _, st := range p.Steps {
		switch st.Kind.(type) {
		case *steps.ToolCall:
			kinds[st.ID] = "tool"
		case *steps.ForEach:
			kinds[st.ID] = "for_each"
		}
	}
	started := map[string]time.Time{} // the engine calls an observer from one goroutine at a time
	next := ro.Observer
	c := *ro
	c.Observer = func(ev engine.Event) {
		switch ev.Type {
		case engine.EventStarted:
			if _, ok := kinds[ev.Step]; ok {
				started[ev.Step] = ev.Time
			}
		case engine.EventFinished:
			if at, ok := started[ev.Step]; ok {
				delete(started, ev.Step)
				e.g.tel.StepFinished(ctx, p.Name, kinds[ev.Step], ev.Status, ev.Time.Sub(at))
			}
		}
		if next != nil {
			next(ev)
		}
	}
	return &c
}

func endSegment(ctx context.Context, seg *telemetry.Segment, out *engine.Outcome, err error) {
	status := "failed"
	if out != nil {
		if out.Workflow == "" && out.Err != nil {
			out.Workflow = out.Err.Workflow
		}
		status = string(out.Status)
		if q := out.Question; q != nil {
			seg.Event("paused", telemetry.KeyStepID.String(q.Step))
		}
	}
	seg.End(ctx, status, err)
}

// checkpointJSON is what a durable run stores: the engine's checkpoint,
// plus the traceparent of the segment that wrote it (a resumed segment
// links to it).
func checkpointJSON(ctx context.Context, cp *engine.Checkpoint) ([]byte, error) {
	tp := telemetry.TraceParent(ctx)
	if tp == "" {
		return json.Marshal(cp)
	}
	return json.Marshal(struct {
		*engine.Checkpoint
		TraceParent string `json:"trace_parent,omitempty"`
	}{cp, tp})
}

// surfaceKey carries where an answer came from (mrtr, live, tool, http).
type surfaceKey struct{}

func withSurface(ctx context.Context, s string) context.Context {
	return context.WithValue(ctx, surfaceKey{}, s)
}

func surfaceOf(ctx context.Context) string {
	if s, ok := ctx.Value(surfaceKey{}).(string); ok {
		return s
	}
	return "tool"
}

// notePaused counts a question by how it travels (mrtr, live,
// paused_result); the pause itself was audited at its commit.
func (g *Gateway) notePaused(ctx context.Context, workflow, delivery string) {
	if g.tel == nil {
		return
	}
	g.tel.Paused(ctx, workflow, delivery)
}

// notePauseCommitted audits a pause after its commit and times the write.
func (g *Gateway) notePauseCommitted(ctx context.Context, cp *engine.Checkpoint, seq uint64, took time.Duration) {
	if g.tel == nil {
		return
	}
	driver := g.cfg.State.Driver.Value
	if driver == "" {
		driver = dsl.DriverBbolt
	}
	g.tel.PausePersisted(ctx, driver, took)
	g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditRunPaused, Principal: auditPrincipal(ctx),
		Target: &telemetry.Target{Workflow: cp.Workflow, Run: cp.RunID, Step: cp.Pending.Step}, Detail: map[string]any{"seq": seq}})
}

// noteAnswer records an answer claimed (or refused) for a run, after the
// commit.
func (g *Gateway) noteAnswer(ctx context.Context, run *state.Run, step string, a engine.Answer, claimErr error, asked time.Time) {
	if g.tel == nil {
		return
	}
	surface := surfaceOf(ctx)
	tgt := &telemetry.Target{Workflow: run.Workflow, Run: run.ID, Step: step}
	detail := map[string]any{"action": a.Action, "surface": surface, "content": g.tel.Answer(a.Content)}
	if claimErr != nil {
		if engine.IsInvalidAnswer(claimErr) {
			g.tel.Answered(ctx, run.Workflow, "invalid", surface, 0)
			detail["reason"] = "invalid_content"
			g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditAnswerRejected, Outcome: "failure", Principal: auditPrincipal(ctx), Target: tgt, Detail: detail})
		}
		return
	}
	g.tel.Answered(ctx, run.Workflow, a.Action, surface, time.Since(asked))
	detail["history_seq"] = len(run.History)
	g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditRunAnswered, Principal: auditPrincipal(ctx), Target: tgt, Detail: detail})
}

// noteDenied audits a principal refused access to another's run.
func (g *Gateway) noteDenied(ctx context.Context, run *state.Run, reason string) {
	if !g.tel.Auditing() {
		return
	}
	g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditAuthzDenied, Outcome: "denied", Principal: auditPrincipal(ctx),
		Target: &telemetry.Target{Workflow: run.Workflow, Run: run.ID}, Detail: map[string]any{"reason": reason}})
}

// tokenRejected counts and audits a refused resume token.
func (g *Gateway) tokenRejected(ctx context.Context, reason, runID string) {
	if g.tel == nil {
		return
	}
	g.tel.TokenRejected(ctx, reason)
	g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditAnswerRejected, Outcome: "failure", Principal: auditPrincipal(ctx),
		Target: &telemetry.Target{Run: runID}, Detail: map[string]any{"reason": reason, "surface": "mrtr"}})
}

// noteFinished records a run's final status after its commit.
func (g *Gateway) noteFinished(ctx context.Context, workflow, runID, status string) {
	if g.tel == nil {
		return
	}
	g.tel.RunFinished(ctx, workflow, status)
	ev := telemetry.AuditRunFinished
	if status == string(engine.StatusCancelled) {
		ev = telemetry.AuditRunCancelled
	}
	g.tel.Audit(ctx, telemetry.AuditEvent{Event: ev, Principal: auditPrincipal(ctx), Target: &telemetry.Target{Workflow: workflow, Run: runID}, Detail: map[string]any{"status": status}})
}

// startElicitation starts the CLIENT span of a live elicitation.
func (g *Gateway) startElicitation(ctx context.Context, step string) (context.Context, *telemetry.Op) {
	ctx, op := g.tel.StartCall(ctx, telemetry.Call{Method: string(mcp.MethodElicitationCreate), Step: step})
	return ctx, op
}

func endElicitation(ctx context.Context, op *telemetry.Op, res *mcp.ElicitationResult, err error) {
	switch {
	case err != nil:
		op.End(ctx, errorType(err), err.Error())
	default:
		op.SetAttributes(telemetry.KeyOutcome.String(string(res.Action)))
		op.End(ctx, "", "")
	}
}

// noteToolCalled audits a plain tool call.
func (g *Gateway) noteToolCalled(ctx context.Context, tool, backend string, args json.RawMessage, out *engine.Outcome, err error, start time.Time) {
	if !g.tel.Auditing() {
		return
	}
	took := time.Since(start)
	outcome := "success"
	if err != nil || out == nil || out.Raw == nil || out.Raw.IsError {
		outcome = "failure"
	}
	g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditToolCalled, Outcome: outcome, Principal: auditPrincipal(ctx), Client: &telemetry.Client{Address: clientAddr(ctx)},
		Target: &telemetry.Target{Tool: tool, Backend: backend}, Detail: map[string]any{"arguments": g.tel.Arguments(args), "duration_ms": float64(took.Microseconds()) / 1000}})
}

// observeHTTP tags requests with their peer, counts and audits refused
// authentication (401, and 403 for another principal's session), and
// serves /metrics when Prometheus is on.
func (g *Gateway) observeHTTP(h http.Handler) http.Handler {
	if g.tel == nil {
		return h
	}
	metrics := g.tel.MetricsHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if metrics != nil && r.URL.Path == "/metrics" && r.Method == http.MethodGet {
			metrics.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == http.StatusUnauthorized || (sw.code == http.StatusForbidden && r.URL.Path == "/mcp") {
			reason := "missing_token"
			switch {
			case sw.code == http.StatusForbidden:
				reason = "session_owner"
			case strings.Contains(w.Header().Get("WWW-Authenticate"), "error="):
				reason = "invalid_token"
			}
			g.tel.AuthFailed(r.Context(), reason)
			g.tel.Audit(r.Context(), telemetry.AuditEvent{Event: telemetry.AuditAuthFailed, Outcome: "failure",
				Client: &telemetry.Client{Address: clientAddr(withTransport(r.Context(), r))}, Detail: map[string]any{"reason": reason, "path": r.URL.Path}})
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
