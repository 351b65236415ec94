package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/steps"
)

// runRegistry keeps the runs of composite tools. It is in memory: the
// durable store (package state) replaces it.
type runRegistry struct {
	mu   sync.Mutex
	runs map[string]*liveRun
}

type liveRun struct {
	id      string
	plan    *engine.Plan
	owner   string
	status  string
	cp      *engine.Checkpoint
	seq     uint64
	created time.Time
	updated time.Time
	result  any
	errMsg  string
	history []historyEntry
}

type historyEntry struct {
	At     time.Time `json:"at"`
	Who    string    `json:"who,omitempty"`
	Kind   string    `json:"kind"`
	Step   string    `json:"step,omitempty"`
	Detail any       `json:"detail,omitempty"`
}

func newRunRegistry() *runRegistry { return &runRegistry{runs: map[string]*liveRun{}} }

// newRunID returns "r_" and 128 random bits, URL-safe.
func newRunID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "r_" + base64.RawURLEncoding.EncodeToString(b[:])
}

func (r *runRegistry) pause(p *engine.Plan, out *engine.Outcome, owner string) *liveRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now().UTC()
	run := r.runs[out.RunID]
	if run == nil {
		run = &liveRun{id: out.RunID, plan: p, owner: owner, created: now}
		run.history = append(run.history, historyEntry{At: now, Who: owner, Kind: "created"})
		r.runs[out.RunID] = run
	}
	run.status, run.cp, run.updated = string(engine.StatusWaiting), out.Checkpoint, now
	run.seq++
	run.history = append(run.history, historyEntry{At: now, Kind: "paused", Step: out.Question.Step})
	return run
}

func (r *runRegistry) finish(id string, out *engine.Outcome) {
	if id == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	run := r.runs[id]
	if run == nil {
		return
	}
	now := time.Now().UTC()
	run.status, run.updated = string(out.Status), now
	run.result = out.Output
	if out.Err != nil {
		run.errMsg = out.Err.Error()
	}
	run.history = append(run.history, historyEntry{At: now, Kind: string(out.Status)})
}

// token names the pending question for an input_required retry.
func (r *runRegistry) token(run *liveRun) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return run.id + "." + strconv.FormatUint(run.seq, 10)
}

func (r *runRegistry) claimToken(tok, owner string) (*liveRun, error) {
	id, seqStr, ok := strings.Cut(tok, ".")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if !ok || err != nil {
		return nil, fmt.Errorf("invalid requestState")
	}
	r.mu.Lock()
	run := r.runs[id]
	r.mu.Unlock()
	if run == nil {
		return nil, fmt.Errorf("invalid requestState: %w", errNoRun)
	}
	r.mu.Lock()
	stale := run.seq != seq
	r.mu.Unlock()
	if stale {
		return nil, fmt.Errorf("this requestState was already used (run %s moved on)", id)
	}
	step := ""
	if run.cp != nil && run.cp.Pending != nil {
		step = run.cp.Pending.Step
	}
	return r.claim(id, step, owner)
}

// claim moves a waiting run to running for one answer: a second answer to
// the same question gets a clear error and changes nothing.
func (r *runRegistry) claim(id, step, owner string) (*liveRun, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	run := r.runs[id]
	if run == nil || run.owner != owner {
		return nil, fmt.Errorf("run %s: %w", id, errNoRun)
	}
	if run.status != string(engine.StatusWaiting) || run.cp == nil || run.cp.Pending == nil {
		return nil, fmt.Errorf("run %s is %s, not waiting for an answer", id, run.status)
	}
	if step != "" && run.cp.Pending.Step != step {
		return nil, fmt.Errorf("run %s waits on step %q, not %q", id, run.cp.Pending.Step, step)
	}
	run.status = string(engine.StatusRunning)
	return run, nil
}

// release puts a claimed run back to waiting (the answer was rejected).
func (r *runRegistry) release(run *liveRun) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if run.status == string(engine.StatusRunning) {
		run.status = string(engine.StatusWaiting)
	}
}

func (r *runRegistry) answered(run *liveRun, who string, a engine.Answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	step := ""
	if run.cp != nil && run.cp.Pending != nil {
		step = run.cp.Pending.Step
	}
	run.history = append(run.history, historyEntry{At: time.Now().UTC(), Who: who, Kind: "answered", Step: step, Detail: a})
}

func (r *runRegistry) cancel(id, owner string) (*liveRun, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	run := r.runs[id]
	if run == nil || run.owner != owner {
		return nil, fmt.Errorf("run %s: %w", id, errNoRun)
	}
	if run.status != string(engine.StatusWaiting) && run.status != string(engine.StatusInterrupted) {
		return nil, fmt.Errorf("run %s is %s; only waiting or interrupted runs can be cancelled", id, run.status)
	}
	now := time.Now().UTC()
	run.status, run.updated = string(engine.StatusCancelled), now
	run.history = append(run.history, historyEntry{At: now, Who: owner, Kind: "cancelled"})
	return run, nil
}

func (r *runRegistry) get(id, owner string) (*liveRun, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	run := r.runs[id]
	if run == nil || run.owner != owner {
		return nil, fmt.Errorf("run %s: %w", id, errNoRun)
	}
	return run, nil
}

func (r *runRegistry) list(owner, status, workflow string, limit int) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var runs []*liveRun
	for _, run := range r.runs {
		if run.owner == owner && (status == "" || run.status == status) && (workflow == "" || run.plan.Name == workflow) {
			runs = append(runs, run)
		}
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].created.After(runs[j].created) })
	if limit <= 0 || limit > 100 {
		limit = 50
	}
	if len(runs) > limit {
		runs = runs[:limit]
	}
	out := make([]map[string]any, len(runs))
	for i, run := range runs {
		out[i] = run.summary()
	}
	return out
}

func (r *runRegistry) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := map[string]int{}
	for _, run := range r.runs {
		c[run.status]++
	}
	return c
}

func (run *liveRun) summary() map[string]any {
	m := map[string]any{"id": run.id, "workflow": run.plan.Name, "status": run.status,
		"created": run.created.Format(time.RFC3339Nano), "updated": run.updated.Format(time.RFC3339Nano)}
	if run.status == string(engine.StatusWaiting) && run.cp != nil && run.cp.Pending != nil {
		m["step"] = run.cp.Pending.Step
		m["message"] = run.cp.Pending.Message
	}
	return m
}

func (run *liveRun) detail() map[string]any {
	m := run.summary()
	if run.status == string(engine.StatusWaiting) && run.cp != nil && run.cp.Pending != nil {
		q := run.cp.Pending
		m["question"] = map[string]any{"step": q.Step, "message": q.Message, "schema": json.RawMessage(q.Schema), "deadline": deadlineOrNil(q.Deadline)}
	}
	if run.cp != nil {
		st := map[string]any{}
		for id, s := range run.cp.Steps {
			st[id] = map[string]any{"status": s.Status, "attempts": s.Attempts, "error": s.Error}
		}
		m["steps"] = st
	}
	if run.result != nil {
		m["output"] = run.result
	}
	if run.errMsg != "" {
		m["error"] = run.errMsg
	}
	m["history"] = run.history
	return m
}

// Built-in run tools (SPEC §5).
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
		{Tool: builtinTool(toolRunResume, "Answer a waiting run's question (accept with content, decline or cancel) and continue it.",
			`{"type":"object","properties":{"run_id":{"type":"string"},"action":{"type":"string","enum":["accept","decline","cancel"]},"content":{"type":"object"}},"required":["run_id","action"]}`,
			mcp.ToolAnnotation{DestructiveHint: &notDestructive}), Handler: g.handleRunResume},
		{Tool: builtinTool(toolRunCancel, "Cancel a waiting or interrupted run.",
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

func (g *Gateway) handleRunsList(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	runs := g.runs.list(principal(ctx), req.GetString("status", ""), req.GetString("workflow", ""), req.GetInt("limit", 50))
	return jsonResult(map[string]any{"runs": runs}), nil
}

func (g *Gateway) handleRunGet(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	run, err := g.runs.get(req.GetString("run_id", ""), principal(ctx))
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	g.runs.mu.Lock()
	d := run.detail()
	g.runs.mu.Unlock()
	return jsonResult(d), nil
}

func (g *Gateway) handleRunResume(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	var in struct {
		RunID   string         `json:"run_id"`
		Action  string         `json:"action"`
		Content map[string]any `json:"content"`
	}
	if err := json.Unmarshal(rawArgs(req), &in); err != nil {
		return mcp.NewToolResultError("invalid arguments: " + err.Error()), nil
	}
	out, run, err := g.Resume(ctx, in.RunID, engine.Answer{Action: in.Action, Content: in.Content})
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	ro := &engine.RunOptions{RunID: run.id}
	return g.deliver(ctx, run.plan, out, ro, principal(ctx))
}

// Resume answers a waiting run on behalf of the caller (built-in tool and
// HTTP API).
func (g *Gateway) Resume(ctx context.Context, runID string, a engine.Answer) (*engine.Outcome, *liveRun, error) {
	owner := principal(ctx)
	run, err := g.runs.claim(runID, "", owner)
	if err != nil {
		return nil, nil, err
	}
	out, err := g.answer(ctx, run, a, owner, &engine.RunOptions{RunID: run.id})
	if err != nil {
		return nil, nil, err
	}
	return out, run, nil
}

func (g *Gateway) handleRunCancel(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	run, err := g.runs.cancel(req.GetString("run_id", ""), principal(ctx))
	if err != nil {
		return mcp.NewToolResultError(err.Error()), nil
	}
	return jsonResult(map[string]any{"id": run.id, "status": run.status}), nil
}
