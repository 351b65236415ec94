package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/backends"
	"github.com/vmcp-dev/vmcp/elicitation"
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/steps"
	"github.com/vmcp-dev/vmcp/telemetry"
)

// caller routes the engine's backend calls to the manager.
type caller struct {
	mgr *backends.Manager
	g   *Gateway
}

func (c caller) CallTool(ctx context.Context, call *steps.Call) (*steps.Result, error) {
	if err := c.admit(ctx, call); err != nil {
		return nil, err
	}
	return c.send(ctx, call)
}

// admit decides whether a call may go out at all: the step's
// authorization (check_steps) and this replica's lease.
func (c caller) admit(ctx context.Context, call *steps.Call) error {
	if err := c.g.checkStep(ctx, call); err != nil {
		return err
	}
	if x := executionOf(ctx); x != nil && x.dropped.Load() {
		return &errLeftForTakeover{run: x.run}
	}
	if call.Step != "" && (!c.g.runs.live() || !c.g.runs.holds(ctx)) {
		// Not live, or the lease lapsed during this execution and the
		// run is no longer this replica's: no call; leave the run.
		c.g.runs.selfFence(ctx)
		return errNotLive
	}
	return nil
}

// send makes an admitted call.
func (c caller) send(ctx context.Context, call *steps.Call) (*steps.Result, error) {
	r, err := c.mgr.CallTool(clientCtx(ctx), call.Backend, call.Tool, call.Arguments, call.Meta)
	if err != nil {
		return nil, err
	}
	return &steps.Result{Content: r.Content, StructuredContent: r.StructuredContent, IsError: r.IsError, Meta: r.Meta}, nil
}

// clientCtx tags a call with the front session it serves, for backends
// configured with per_client sessions.
func clientCtx(ctx context.Context) context.Context {
	if s := mcpserver.ClientSessionFromContext(ctx); s != nil {
		return backends.WithClient(ctx, s.SessionID())
	}
	return ctx
}

// rawContent passes one content item through byte for byte (mcp.Content is
// a closed interface; embedding a TextContent satisfies it).
type rawContent struct {
	mcp.TextContent
	raw json.RawMessage
}

func (r rawContent) MarshalJSON() ([]byte, error) { return r.raw, nil }

// toolHandler serves one advertised tool. The catalogue is read per call,
// so a rebuilt catalogue takes effect at once.
func (g *Gateway) toolHandler(name string) mcpserver.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		cat := g.cat.Load()
		te := cat.tools[name]
		if te == nil {
			return mcp.NewToolResultError(fmt.Sprintf("unknown tool %q", name)), nil
		}
		args := rawArgs(req)
		// A relay retry answers a backend call that was authorized when
		// it started (the bridge checks caller and tool); its arguments
		// are not sent again, so they are not decided again.
		if !strings.HasPrefix(req.Params.RequestState, relayStatePrefix) {
			if refused := g.authorizeTool(ctx, cat, te, args); refused != nil {
				return refused, nil
			}
		}
		if te.composite {
			return g.callComposite(ctx, te.plan, req, args)
		}
		ctx = context.WithValue(ctx, directCallKey{}, true)
		if bridged(ctx, req) {
			return g.bridge.call(ctx, name, req, func(ctx context.Context) (*mcp.CallToolResult, error) {
				return g.callPlain(ctx, te, req, args)
			})
		}
		return g.callPlain(ctx, te, req, args)
	}
}

// plainCallMeta is the caller's _meta a plain tool call sends its backend
// (nil: none), and the context to call with: the progress token, and,
// when vmcp does not trace, the client's W3C trace context (traceparent,
// with its tracestate), so a trace goes on through a gateway that records
// none of its own. A version-00 traceparent (55 bytes, the only kind
// there is today) rides in the context and the backends package writes
// it into the request as it writes vmcp's own span's (passedTrace), with
// no map; a longer one of a later version goes in the map. When vmcp
// traces, its CLIENT span's context is sent instead (backends, meta.go).
// Nothing else of the client's _meta: baggage and other keys may be meant
// for vmcp only, and backends may be untrusted.
func (g *Gateway) plainCallMeta(ctx context.Context, m *mcp.Meta) (context.Context, map[string]any) {
	if m == nil {
		return ctx, nil
	}
	var meta map[string]any
	if m.ProgressToken != nil {
		meta = map[string]any{"progressToken": m.ProgressToken}
	}
	if g.tel.Tracing() {
		return ctx, meta
	}
	tp, ok := m.AdditionalFields["traceparent"].(string)
	if !ok || !telemetry.ValidTraceParent(tp) {
		return ctx, meta
	}
	ts, _ := m.AdditionalFields["tracestate"].(string)
	if len(tp) == len(passedTrace{}.parent) {
		pt := &passedTrace{state: ts}
		copy(pt.parent[:], tp)
		return context.WithValue(ctx, passedTraceKey{}, pt), meta
	}
	if meta == nil {
		meta = map[string]any{}
	}
	meta["traceparent"] = tp
	if ts != "" {
		meta["tracestate"] = ts
	}
	return ctx, meta
}

// passedTrace is a client's trace context a plain call passes to its
// backend when vmcp does not trace (plainCallMeta).
type passedTrace struct {
	parent [55]byte
	state  string
}

type passedTraceKey struct{}

// callPlain runs a backend tool's one-node plan and passes its result
// through.
func (g *Gateway) callPlain(ctx context.Context, te *toolEntry, req mcp.CallToolRequest, args json.RawMessage) (*mcp.CallToolResult, error) {
	ctx, meta := g.plainCallMeta(ctx, req.Params.Meta)
	start := time.Now()
	out, err := g.eng.Run(ctx, te.plan, args, &engine.RunOptions{Meta: meta})
	g.noteToolCalled(ctx, te.name, te.backend, args, out, err, start)
	if err != nil {
		return nil, err
	}
	if out.Raw == nil {
		return mcp.NewToolResultError(out.Err.Cause), nil
	}
	return passThrough(out.Raw), nil
}

func rawArgs(req mcp.CallToolRequest) json.RawMessage {
	if len(req.Params.RawArguments) > 0 {
		return req.Params.RawArguments
	}
	if req.Params.Arguments == nil {
		return nil
	}
	b, _ := json.Marshal(req.Params.Arguments)
	return b
}

// passThrough rebuilds a backend's result without decoding its content.
func passThrough(r *steps.Result) *mcp.CallToolResult {
	res := &mcp.CallToolResult{IsError: r.IsError}
	var items []json.RawMessage
	_ = json.Unmarshal(r.Content, &items)
	res.Content = make([]mcp.Content, 0, len(items))
	for _, it := range items {
		res.Content = append(res.Content, rawContent{raw: it})
	}
	if len(r.StructuredContent) > 0 && string(r.StructuredContent) != "null" {
		res.RawStructuredContent = r.StructuredContent
	}
	if len(r.Meta) > 0 {
		var m map[string]any
		if json.Unmarshal(r.Meta, &m) == nil {
			// mcp-go adds its own server info for modern clients.
			delete(m, "io.modelcontextprotocol/serverInfo")
			if len(m) > 0 {
				res.Meta = &mcp.Meta{AdditionalFields: m}
			}
		}
	}
	return res
}

// callComposite runs (or resumes) a composite tool and delivers its
// outcome: the result, the next question, or a paused result.
func (g *Gateway) callComposite(ctx context.Context, p *engine.Plan, req mcp.CallToolRequest, args json.RawMessage) (*mcp.CallToolResult, error) {
	owner := principal(ctx)
	ro := &engine.RunOptions{Durable: true}
	if req.Params.Meta != nil && req.Params.Meta.ProgressToken != nil {
		ro.Observer = progressObserver(ctx, g.mcp, req.Params.Meta.ProgressToken)
	}
	// A 2026-07-28 client retrying with the answer to input_required.
	if tok := req.Params.RequestState; tok != "" {
		out, l, err := g.answerToken(ctx, tok, p.Name, req.Params.InputResponses, owner, ro)
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		return g.deliver(ctx, l.plan, out, ro, owner)
	}
	ro.RunID, ro.Unrecorded = g.runs.create(p, args, owner), true
	defer g.runs.drop(ro.RunID) // a no-op once the run is in the store
	out, err := g.eng.Run(ctx, p, args, ro)
	ro.Unrecorded = false // from here on the run is in the store
	if isLeftForTakeover(err) {
		return mcp.NewToolResultError(err.Error()), nil
	}
	if err != nil {
		return nil, err
	}
	return g.deliver(ctx, p, out, ro, owner)
}

// answerToken applies the answer a 2026-07-28 client sent with its
// resume token, to a run of workflow (any workflow for "": the
// vmcp_run_resume tool). The token is sealed, bound to run, step, owner and pause,
// and single-use: replayed, tampered, expired or someone else's tokens are
// refused and change nothing.
func (g *Gateway) answerToken(ctx context.Context, tok, workflow string, responses mcp.InputResponses, owner string, ro *engine.RunOptions) (*engine.Outcome, *loaded, error) {
	c, err := g.runs.sealer.Open(tok, time.Now())
	switch {
	case err != nil && !errors.Is(err, elicitation.ErrTokenExpired):
		g.tokenRejected(ctx, "tampered", "")
		return nil, nil, errors.New("invalid requestState: not a resume token issued by this vmcp")
	case c.Owner != owner:
		g.tokenRejected(ctx, "wrong_owner", c.Run)
		return nil, nil, errors.New("invalid requestState: this question was asked to another principal")
	case err != nil:
		g.tokenRejected(ctx, "expired", c.Run)
		return nil, nil, fmt.Errorf("this requestState expired at the question's deadline (run %s); see vmcp_run_get for what the run did then", c.Run)
	}
	l, err := g.runs.load(ctx, c.Run, owner)
	if err != nil {
		return nil, nil, err
	}
	if workflow != "" && l.run.Workflow != workflow {
		// The retry must come to the tool that asked: policies were
		// checked for this tool, and its steps are checked as its own.
		return nil, nil, fmt.Errorf("this requestState belongs to a run of %q, not of %q: retry the call to %q", l.run.Workflow, workflow, l.run.Workflow)
	}
	if l.run.Pending == nil || l.run.Pending.Step != c.Step || l.run.Pending.Seq != c.Seq {
		g.tokenRejected(ctx, "replayed", c.Run)
		return nil, nil, fmt.Errorf("this requestState was already used: run %s is %s", c.Run, l.run.Status)
	}
	res := mcpserver.ElicitationResponse(responses, c.Step)
	if res == nil {
		return nil, nil, fmt.Errorf("the retry carries no answer to question %q of run %s", c.Step, c.Run)
	}
	a := toAnswer(res)
	ctx = withSurface(ctx, "mrtr")
	if err := g.runs.claim(ctx, l, c.Step, c.Seq, owner, a); err != nil {
		return nil, nil, err
	}
	ro.RunID = c.Run
	out, err := g.eng.Resume(ctx, l.plan, l.cp, a, ro)
	if err != nil {
		return nil, nil, err
	}
	return out, l, nil
}

func toAnswer(r *mcp.ElicitationResult) engine.Answer {
	a := engine.Answer{Action: string(r.Action)}
	if m, ok := r.Content.(map[string]any); ok {
		a.Content = m
	} else if r.Content != nil {
		b, _ := json.Marshal(r.Content)
		_ = json.Unmarshal(b, &a.Content)
	}
	return a
}

// deliver turns an outcome into the tool result. A pause was persisted by
// the engine (durable runs) before this is reached; the question is then
// asked by the best means the client supports (SPEC §5).
func (g *Gateway) deliver(ctx context.Context, p *engine.Plan, out *engine.Outcome, ro *engine.RunOptions, owner string) (*mcp.CallToolResult, error) {
	for {
		switch out.Status {
		case engine.StatusCompleted:
			g.runs.finish(ctx, out)
			return compositeResult(out), nil
		case engine.StatusWaiting:
		default:
			g.runs.finish(ctx, out)
			return mcp.NewToolResultError(out.Err.Error()), nil
		}
		q := out.Question
		params := mcp.ElicitationParams{Message: q.Message, RequestedSchema: json.RawMessage(q.Schema)}
		caps, modern := clientCaps(ctx)
		switch {
		case modern:
			tok, err := g.runs.token(ctx, out.RunID, owner, q)
			if err != nil {
				return nil, err
			}
			g.notePaused(ctx, out.Workflow, "mrtr")
			return mcpserver.NewInputRequestBuilder(tok).Elicit(q.Step, params).ToolResult(), nil
		case caps.Elicitation != nil:
			g.notePaused(ctx, out.Workflow, "live")
			next, final, err := g.askLive(ctx, out, params, owner, ro)
			if err != nil {
				return nil, err
			}
			if final != nil { // the run finished (or moved on) elsewhere
				return final, nil
			}
			if next == nil {
				return pausedResult(out.RunID, p.Name, q), nil
			}
			out = next
		default:
			g.notePaused(ctx, out.Workflow, "paused_result")
			return pausedResult(out.RunID, p.Name, q), nil
		}
	}
}

// askLive asks a session client within the call, for up to the live wait.
// It returns the run's next outcome, or nil when the wait ended without a
// usable answer (the run stays waiting). When the question is answered
// elsewhere meanwhile (another surface or replica), it withdraws it and
// follows the run (watch.go): a final result, or the run's next question.
func (g *Gateway) askLive(ctx context.Context, out *engine.Outcome, params mcp.ElicitationParams, owner string, ro *engine.RunOptions) (*engine.Outcome, *mcp.CallToolResult, error) {
	q := out.Question
	wait := g.cfg.Elicitation.LiveWait.Value
	if wait <= 0 {
		wait = 60 * time.Second
	}
	if !q.Deadline.IsZero() {
		wait = min(wait, time.Until(q.Deadline))
	}
	for attempt := 0; attempt < 5; attempt++ {
		ectx, cancel := context.WithTimeout(ctx, wait)
		ectx, eop := g.startElicitation(ectx, q.Step)
		res, err, moved := g.elicitOrFollow(ectx, out.RunID, mcp.ElicitationRequest{
			Request: mcp.Request{Method: string(mcp.MethodElicitationCreate)},
			Params:  params,
		})
		if moved != nil {
			err = errWithdrawn
		}
		endElicitation(ectx, eop, res, err)
		cancel()
		if moved != nil {
			return g.followRun(ctx, moved, wait)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			g.log.InfoContext(ctx, "live elicitation ended without an answer; the run stays waiting", "run_id", out.RunID, "step", q.Step, "err", err)
			return nil, nil, nil
		}
		l, err := g.runs.load(ctx, out.RunID, owner)
		if err != nil {
			return nil, nil, err
		}
		step, seq, err := pendingOf(l.run)
		if err != nil {
			return g.followRun(ctx, l.run, wait) // answered elsewhere meanwhile
		}
		a := toAnswer(res)
		if err := g.runs.claim(withSurface(ctx, "live"), l, step, seq, owner, a); err != nil {
			if engine.IsInvalidAnswer(err) {
				g.log.InfoContext(ctx, "answer rejected; asking again", "run_id", out.RunID, "err", err)
				params.Message = q.Message + "\n\n(" + err.Error() + ")"
				continue
			}
			if run, gerr := g.runs.store.Get(ctx, out.RunID); gerr == nil {
				return g.followRun(ctx, run, wait) // another answer won
			}
			return nil, nil, nil
		}
		ro.RunID = out.RunID
		next, err := g.eng.Resume(withSurface(ctx, "live"), l.plan, l.cp, a, ro)
		return next, nil, err
	}
	return nil, nil, nil
}

// compositeResult: the structured value, and its JSON as text.
func compositeResult(out *engine.Outcome) *mcp.CallToolResult {
	b, _ := steps.EncodeJSON(out.Output)
	res := &mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent(string(b))}}
	if _, isObj := out.Output.(map[string]any); isObj && !out.Partial {
		res.RawStructuredContent = b
	}
	res.Meta = &mcp.Meta{AdditionalFields: map[string]any{"vmcp/run": map[string]any{"id": out.RunID, "status": string(out.Status)}}}
	return res
}

// pausedResult tells a client that cannot answer now how to resume.
func pausedResult(runID, workflow string, q *engine.Question) *mcp.CallToolResult {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Run %s of %s is waiting for an answer to step %q:\n\n%s\n\n", runID, workflow, q.Step, q.Message)
	fmt.Fprintf(&sb, "Answer schema: %s\n", q.Schema)
	if !q.Deadline.IsZero() {
		fmt.Fprintf(&sb, "Deadline: %s\n", q.Deadline.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&sb, "\nResume with the tool vmcp_run_resume {\"run_id\": %q, \"action\": \"accept\", \"content\": {…}} (or decline / cancel), ", runID)
	fmt.Fprintf(&sb, "POST /api/v1/runs/%s/resume, or `vmcp runs resume %s`.", runID, runID)
	meta := map[string]any{"vmcp/run": map[string]any{
		"id": runID, "status": "waiting", "workflow": workflow, "step": q.Step,
		"message": q.Message, "schema": json.RawMessage(q.Schema), "deadline": deadlineOrNil(q.Deadline),
	}}
	return &mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent(sb.String())}, Result: mcp.Result{Meta: &mcp.Meta{AdditionalFields: meta}}}
}

func deadlineOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}

// progressObserver reports a progress notification per finished step.
func progressObserver(ctx context.Context, srv *mcpserver.MCPServer, token any) func(engine.Event) {
	return func(ev engine.Event) {
		if ev.Type != engine.EventFinished && ev.Type != engine.EventSkipped {
			return
		}
		msg := fmt.Sprintf("step %s %s", ev.Step, ev.Status)
		_ = srv.SendNotificationToClient(ctx, "notifications/progress", map[string]any{
			"progressToken": token, "progress": ev.Done, "total": ev.Total, "message": msg,
		})
	}
}

// clientCaps returns the calling client's capabilities and whether it
// speaks the 2026-07-28 (stateless, input_required) protocol.
func clientCaps(ctx context.Context) (mcp.ClientCapabilities, bool) {
	if info := mcpserver.RequestProtocolInfoFromContext(ctx); info != nil && info.Modern {
		if info.ClientCapabilities != nil {
			return *info.ClientCapabilities, true
		}
		return mcp.ClientCapabilities{}, true
	}
	if s, ok := mcpserver.ClientSessionFromContext(ctx).(mcpserver.SessionWithClientInfo); ok {
		return s.GetClientCapabilities(), false
	}
	return mcp.ClientCapabilities{}, false
}

// principal is the caller's identity; anonymous until incoming
// authentication exists.
func principal(ctx context.Context) string {
	if p, ok := ctx.Value(principalKey{}).(string); ok && p != "" {
		return p
	}
	return "anonymous"
}

type principalKey struct{}
