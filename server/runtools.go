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

	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/steps"
)

// Built-in run tools (SPEC §5). Only a run's owner sees or answers it;
// in anonymous mode every caller is the one owner "anonymous".
const (
	toolRunsList  = "vmcp_runs_list"
	toolRunGet    = "vmcp_run_get"
	toolRunResume = "vmcp_run_resume"
	toolRunCancel = "vmcp_run_cancel"
)

func builtinToolNames() []string {
	return []string{toolRunsList, toolRunGet, toolRunResume, toolRunCancel}
}

func (g *Gateway) builtinTools() []mcpserver.ServerTool {
	ro, notDestructive := true, false
	return []mcpserver.ServerTool{
		{Tool: builtinTool(toolRunsList, "List your composite-tool runs, newest first (waiting runs have a pending question).",
			`{"type":"object","properties":{"status":{"type":"string","enum":["running","waiting","interrupted","completed","failed","cancelled"]},"workflow":{"type":"string"},"limit":{"type":"integer","minimum":1,"maximum":100},"cursor":{"type":"string"}}}`,
			mcp.ToolAnnotation{ReadOnlyHint: &ro}), Handler: g.handleRunsList},
		{Tool: builtinTool(toolRunGet, "Show one run: status, steps, the pending question (message and schema) and its history.",
			`{"type":"object","properties":{"run_id":{"type":"string"}},"required":["run_id"]}`,
			mcp.ToolAnnotation{ReadOnlyHint: &ro}), Handler: g.handleRunGet},
		{Tool: builtinTool(toolRunResume, "Answer a waiting run's question (accept with content, decline or cancel) and continue it; or continue an interrupted run.",
			`{"type":"object","properties":{"run_id":{"type":"string"},"action":{"type":"string","enum":["accept","decline","cancel"]},"content":{"type":"object"}},"required":["run_id","action"]}`,
			mcp.ToolAnnotation{DestructiveHint: &notDestructive}), Handler: g.handleRunResume},
		{Tool: builtinTool(toolRunCancel, "Cancel a run: a waiting or interrupted one at once; a running one also stops its backend calls, on whichever replica executes it.",
			`{"type":"object","properties":{"run_id":{"type":"string"}},"required":["run_id"]}`,
			mcp.ToolAnnotation{DestructiveHint: &notDestructive}), Handler: g.handleRunCancel},
	}
}

func builtinTool(name, desc, schema string, a mcp.ToolAnnotation) mcp.Tool {
	t := mcp.NewToolWithRawSchema(name, desc, json.RawMessage(schema))
	t.Annotations = a
	return t
}

func jsonResult(v any) *mcp.CallToolResult {
	b, _ := steps.EncodeJSON(v)
	res := &mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent(string(b))}}
	if _, ok := v.(map[string]any); ok {
		res.RawStructuredContent = b
	}
	return res
}

// listRuns lists the caller's runs.
func (g *Gateway) listRuns(ctx context.Context, status, workflow string, limit int, cursor string) (map[string]any, error) {
	if status != "" && !state.ValidStatus(status) {
		return nil, fmt.Errorf("unknown status %q (running, waiting, interrupted, completed, failed, cancelled)", status)
	}
	if limit <= 0 || limit > 100 {
		limit = 50
	}
	list, next, err := g.runs.store.List(ctx, state.Filter{Owner: principal(ctx), Status: status, Workflow: workflow, Limit: limit, Cursor: cursor})
	if err != nil {
		return nil, err
	}
	runs := make([]map[string]any, len(list))
	for i, r := range list {
		m := map[string]any{"id": r.ID, "workflow": r.Workflow, "status": r.Status,
			"created": r.Created.Format(time.RFC3339Nano), "updated": r.Updated.Format(time.RFC3339Nano)}
		if r.PendingStep != "" {
			m["step"], m["message"] = r.PendingStep, r.PendingMessage
			if !r.Deadline.IsZero() {
				m["deadline"] = r.Deadline.Format(time.RFC3339)
			}
		}
		if r.Error != "" {
			m["error"] = r.Error
		}
		runs[i] = m
	}
	out := map[string]any{"runs": runs}
	if next != "" {
		out["next_cursor"] = next
	}
	return out, nil
}

// runView is what vmcp_run_get and GET /api/v1/runs/{id} show.
func (g *Gateway) runView(ctx context.Context, id string) (map[string]any, error) {
	l, err := g.runs.load(ctx, id, principal(ctx))
	if err != nil {
		return nil, err
	}
	r := l.run
	m := map[string]any{"id": r.ID, "workflow": r.Workflow, "status": r.Status,
		"created": r.Created.Format(time.RFC3339Nano), "updated": r.Updated.Format(time.RFC3339Nano),
		"definition": r.DefinitionName}
	if r.Pending != nil && r.Status == state.StatusWaiting {
		m["question"] = map[string]any{"step": r.Pending.Step, "message": r.Pending.Message,
			"schema": json.RawMessage(r.Pending.Schema), "deadline": deadlineOrNil(r.Pending.Deadline)}
	}
	if r.Status == state.StatusInterrupted {
		d := map[string]any{"in_flight": r.InFlight}
		if unsafe := engine.Unsafe(l.plan, l.cp); len(unsafe) > 0 {
			d["needs_decision"] = unsafe
			d["message"] = interruptedMessage(r.ID, unsafe)
			d["schema"] = json.RawMessage(`{"type":"object","properties":{"rerun":{"type":"boolean","title":"Run the interrupted steps again?"}},"required":["rerun"]}`)
		}
		m["interrupted"] = d
	}
	st := map[string]any{}
	for sid, s := range l.cp.Steps {
		e := map[string]any{"status": s.Status, "attempts": s.Attempts}
		if s.Error != "" {
			e["error"] = s.Error
		}
		if s.Action != "" {
			e["action"] = s.Action
		}
		st[sid] = e
	}
	m["steps"] = st
	if len(r.Result) > 0 {
		m["output"] = json.RawMessage(r.Result)
	}
	if r.Error != "" {
		m["error"] = r.Error
	}
	hist := make([]map[string]any, len(r.History))
	for i, e := range r.History {
		h := map[string]any{"at": e.At.Format(time.RFC3339Nano), "kind": e.Kind}
		if e.Who != "" {
			h["who"] = e.Who
		}
		if e.Step != "" {
			h["step"] = e.Step
		}
		if len(e.Detail) > 0 {
			h["detail"] = json.RawMessage(e.Detail)
		}
		hist[i] = h
	}
	m["history"] = hist
	return m, nil
}

func interruptedMessage(id string, unsafe []string) string {
	return fmt.Sprintf("run %s was interrupted (vmcp stopped) while step(s) %s were executing; their tools are neither read-only nor idempotent, so running them again may repeat their effect. "+
		`Resume with action "accept" and content {"rerun": true} to run them again, or {"rerun": false} to fail them (their on_error applies); decline or cancel ends the run`,
		id, strings.Join(unsafe, ", "))
}

// ResumeRun answers a waiting run, or continues an interrupted one, for
// the caller (the built-in tool, the HTTP API and `vmcp runs resume`).
func (g *Gateway) ResumeRun(ctx context.Context, id string, a engine.Answer) (*engine.Outcome, *engine.Plan, error) {
	owner := principal(ctx)
	l, err := g.runs.load(ctx, id, owner)
	if err != nil {
		return nil, nil, err
	}
	ro := &engine.RunOptions{RunID: id, Durable: true}
	switch l.run.Status {
	case state.StatusWaiting:
		step, seq, err := pendingOf(l.run)
		if err != nil {
			return nil, nil, err
		}
		if err := g.runs.claim(ctx, l, step, seq, owner, a); err != nil {
			return nil, nil, err
		}
		out, err := g.eng.Resume(ctx, l.plan, l.cp, a, ro)
		return out, l.plan, err
	case state.StatusInterrupted:
		if a.Action == engine.ActionDecline || a.Action == engine.ActionCancel {
			if err := g.runs.store.Cancel(ctx, id, owner); err != nil {
				return nil, nil, err
			}
			return &engine.Outcome{RunID: id, Status: engine.StatusCancelled, Err: &engine.RunError{Workflow: l.run.Workflow, Cause: "cancelled after the interruption"}}, l.plan, nil
		}
		rerun := false
		if unsafe := engine.Unsafe(l.plan, l.cp); len(unsafe) > 0 {
			v, ok := a.Content["rerun"].(bool)
			if !ok {
				return nil, nil, fmt.Errorf("%w: %s", engine.ErrInvalidAnswer, interruptedMessage(id, unsafe))
			}
			rerun = v
		}
		if _, err := g.runs.store.Resume(ctx, id, owner); err != nil {
			return nil, nil, err
		}
		g.runs.supersede(id) // a stale execution of it here, if any, stops
		out, err := g.eng.Continue(ctx, l.plan, l.cp, rerun, ro)
		return out, l.plan, err
	default:
		return nil, nil, &state.TransitionError{Op: "resume", RunID: id, Status: l.run.Status, Err: state.ErrNotWaiting}
	}
}

func (g *Gateway) handleRunsList(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	out, err := g.listRuns(ctx, req.GetString("status", ""), req.GetString("workflow", ""), req.GetInt("limit", 50), req.GetString("cursor", ""))
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	return jsonResult(out), nil
}

func (g *Gateway) handleRunGet(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	v, err := g.runView(ctx, req.GetString("run_id", ""))
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	return jsonResult(v), nil
}

func (g *Gateway) handleRunResume(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	// A 2026-07-28 client retrying after this tool returned the run's next
	// question as input_required: the answer is in the retry, not in the
	// arguments (which answered the previous question).
	if tok := req.Params.RequestState; tok != "" {
		ro := &engine.RunOptions{Durable: true}
		out, l, err := g.answerToken(ctx, tok, "", req.Params.InputResponses, principal(ctx), ro) // any run of the caller's
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		return g.deliver(ctx, l.plan, out, ro, principal(ctx))
	}
	var in struct {
		RunID   string         `json:"run_id"`
		Action  string         `json:"action"`
		Content map[string]any `json:"content"`
	}
	if err := json.Unmarshal(rawArgs(req), &in); err != nil {
		return mcp.NewToolResultError("invalid arguments: " + err.Error()), nil
	}
	out, p, err := g.ResumeRun(ctx, in.RunID, engine.Answer{Action: in.Action, Content: in.Content})
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	ro := &engine.RunOptions{RunID: in.RunID, Durable: true}
	return g.deliver(ctx, p, out, ro, principal(ctx))
}

func (g *Gateway) handleRunCancel(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	id := req.GetString("run_id", "")
	if err := g.cancelRun(ctx, id); err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	return jsonResult(map[string]any{"id": id, "status": state.StatusCancelled}), nil
}

func (g *Gateway) cancelRun(ctx context.Context, id string) error {
	run, err := g.runs.store.Get(ctx, id)
	if err != nil {
		return err
	}
	if run.Owner != principal(ctx) {
		return &state.TransitionError{Op: "cancel", RunID: id, Err: state.ErrNotFound}
	}
	return g.runs.store.Cancel(ctx, id, principal(ctx))
}

// runCounts counts waiting and interrupted runs for /status (up to 1000
// each: /status stays cheap however many runs are stored).
func (g *Gateway) runCounts(ctx context.Context) map[string]int {
	out := map[string]int{}
	if g.runs == nil {
		return out
	}
	for _, s := range []string{state.StatusWaiting, state.StatusInterrupted, state.StatusRunning} {
		list, _, err := g.runs.store.List(ctx, state.Filter{Status: s, Limit: 1000})
		if err == nil {
			out[s] = len(list)
		}
	}
	return out
}

// apiStatus maps a run error to an HTTP status.
func apiStatus(err error) (int, string) {
	var te *state.TransitionError
	switch {
	case errors.Is(err, state.ErrNotFound):
		return 404, "not_found"
	case engine.IsInvalidAnswer(err):
		return 422, "invalid_answer"
	case errors.As(err, &te):
		return 409, "conflict"
	case isLeftForTakeover(err):
		return 503, "left_for_takeover"
	}
	return 500, "internal"
}
