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
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/steps"
)

func jsonMarshal(v any) (json.RawMessage, error) { return steps.EncodeJSON(v) }
func jsonUnmarshal(b []byte, v any) error        { return json.Unmarshal(b, v) }

// caller routes the engine's backend calls to the manager.
type caller struct{ mgr *backends.Manager }

func (c caller) CallTool(ctx context.Context, call *steps.Call) (*steps.Result, error) {
	r, err := c.mgr.CallTool(ctx, call.Backend, call.Tool, call.Arguments, call.Meta)
	if err != nil {
		return nil, err
	}
	return &steps.Result{Content: r.Content, StructuredContent: r.StructuredContent, IsError: r.IsError, Meta: r.Meta}, nil
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
		if te.composite {
			return g.callComposite(ctx, te.plan, req, args)
		}
		var meta map[string]any
		if req.Params.Meta != nil && req.Params.Meta.ProgressToken != nil {
			meta = map[string]any{"progressToken": req.Params.Meta.ProgressToken}
		}
		out, err := g.eng.Run(ctx, te.plan, args, &engine.RunOptions{Meta: meta})
		if err != nil {
			return nil, err
		}
		if out.Raw == nil {
			return mcp.NewToolResultError(out.Err.Cause), nil
		}
		return passThrough(out.Raw), nil
	}
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
	ro := &engine.RunOptions{}
	if req.Params.Meta != nil && req.Params.Meta.ProgressToken != nil {
		ro.Observer = progressObserver(ctx, g.mcp, req.Params.Meta.ProgressToken)
	}
	owner := principal(ctx)
	// A 2026-07-28 client retrying with the answer to input_required.
	if state := req.Params.RequestState; state != "" {
		run, err := g.runs.claimToken(state, owner)
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		ans := mcpserver.ElicitationResponse(req.Params.InputResponses, run.cp.Pending.Step)
		if ans == nil {
			g.runs.release(run)
			return mcp.NewToolResultError(fmt.Sprintf("the retry carries no answer to question %q of run %s", run.cp.Pending.Step, run.id)), nil
		}
		ro.RunID = run.id
		out, err := g.answer(ctx, run, toAnswer(ans), owner, ro)
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		return g.deliver(ctx, run.plan, out, ro, owner)
	}
	ro.RunID = newRunID()
	out, err := g.eng.Run(ctx, p, args, ro)
	if err != nil {
		return nil, err
	}
	return g.deliver(ctx, p, out, ro, owner)
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

// deliver turns an outcome into the tool result. A pause is stored first,
// then asked by the best means the client supports (SPEC §5).
func (g *Gateway) deliver(ctx context.Context, p *engine.Plan, out *engine.Outcome, ro *engine.RunOptions, owner string) (*mcp.CallToolResult, error) {
	for {
		switch out.Status {
		case engine.StatusCompleted:
			g.runs.finish(out.RunID, out)
			return compositeResult(out), nil
		case engine.StatusWaiting:
		default:
			g.runs.finish(out.RunID, out)
			return mcp.NewToolResultError(out.Err.Error()), nil
		}
		run := g.runs.pause(p, out, owner)
		q := out.Question
		params := mcp.ElicitationParams{Message: q.Message, RequestedSchema: json.RawMessage(q.Schema)}
		caps, modern := clientCaps(ctx)
		switch {
		case modern:
			tok := g.runs.token(run)
			return mcpserver.NewInputRequestBuilder(tok).Elicit(q.Step, params).ToolResult(), nil
		case caps.Elicitation != nil:
			wait := g.cfg.Elicitation.LiveWait.Value
			if wait <= 0 {
				wait = 60 * time.Second
			}
			if !q.Deadline.IsZero() {
				wait = min(wait, time.Until(q.Deadline))
			}
			ectx, cancel := context.WithTimeout(ctx, wait)
			res, err := g.mcp.RequestElicitation(ectx, mcp.ElicitationRequest{
				Request: mcp.Request{Method: string(mcp.MethodElicitationCreate)},
				Params:  params,
			})
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				g.log.Info("live elicitation ended without an answer; run stays waiting", "run_id", run.id, "step", q.Step, "err", err)
				return pausedResult(run, q), nil
			}
			claimed, cerr := g.runs.claim(run.id, q.Step, owner)
			if cerr != nil {
				return mcp.NewToolResultError(cerr.Error()), nil
			}
			next, err := g.answer(ctx, claimed, toAnswer(res), owner, ro)
			if err != nil {
				// An invalid answer leaves the run waiting: ask again.
				if engine.IsInvalidAnswer(err) {
					g.log.Info("answer rejected; asking again", "run_id", run.id, "err", err)
					out = &engine.Outcome{RunID: run.id, Status: engine.StatusWaiting, Question: q, Checkpoint: claimed.cp}
					continue
				}
				return mcp.NewToolResultError(err.Error()), nil
			}
			out = next
		default:
			return pausedResult(run, q), nil
		}
	}
}

// answer resumes a claimed run with an answer. An invalid answer is
// returned as an error and the run goes back to waiting.
func (g *Gateway) answer(ctx context.Context, run *liveRun, a engine.Answer, who string, ro *engine.RunOptions) (*engine.Outcome, error) {
	if ro.RunID == "" {
		ro.RunID = run.id
	}
	out, err := g.eng.Resume(ctx, run.plan, run.cp, a, ro)
	if err != nil {
		g.runs.release(run)
		if engine.IsInvalidAnswer(err) {
			return nil, err
		}
		return nil, fmt.Errorf("resuming run %s: %w", run.id, err)
	}
	g.runs.answered(run, who, a)
	return out, nil
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
func pausedResult(run *liveRun, q *engine.Question) *mcp.CallToolResult {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Run %s of %s is waiting for an answer to step %q:\n\n%s\n\n", run.id, run.plan.Name, q.Step, q.Message)
	fmt.Fprintf(&sb, "Answer schema: %s\n", q.Schema)
	if !q.Deadline.IsZero() {
		fmt.Fprintf(&sb, "Deadline: %s\n", q.Deadline.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&sb, "\nResume with the tool vmcp_run_resume {\"run_id\": %q, \"action\": \"accept\", \"content\": {…}} (or decline / cancel), ", run.id)
	fmt.Fprintf(&sb, "POST /api/v1/runs/%s/resume, or `vmcp runs resume %s`.", run.id, run.id)
	meta := map[string]any{"vmcp/run": map[string]any{
		"id": run.id, "status": "waiting", "workflow": run.plan.Name, "step": q.Step,
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

var errNoRun = errors.New("no such run")
