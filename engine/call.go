package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/steps"
)

// attemptResult is one attempt's outcome.
type attemptResult struct {
	res   *steps.Result
	class errClass // 0 on success
	err   error
}

// callOnce makes one backend call under the process-wide limit and the
// step's per-attempt timeout.
func (e *Engine) callOnce(ctx context.Context, st *Step, k *steps.ToolCall, args json.RawMessage, meta map[string]any, attempt int) attemptResult {
	select {
	case e.slots <- struct{}{}:
	case <-ctx.Done():
		return attemptResult{class: classTransport, err: ctx.Err()}
	}
	defer func() { <-e.slots }()
	if ctx.Err() != nil { // select picks at random when both were ready
		return attemptResult{class: classTransport, err: ctx.Err()}
	}
	actx := ctx
	if st.timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, st.timeout)
		defer cancel()
	}
	call := &steps.Call{Backend: k.Backend, Tool: k.Tool, Arguments: args, Meta: meta, Attempt: attempt}
	if attempt > 0 {
		call.Step = st.ID
	}
	res, err := e.caller.CallTool(actx, call)
	switch {
	case err != nil && ctx.Err() == nil && actx.Err() != nil:
		return attemptResult{class: classTimeout, err: fmt.Errorf("%s.%s timed out after %s", k.Backend, k.Tool, st.timeout)}
	case err != nil:
		return attemptResult{class: classTransport, err: fmt.Errorf("%s.%s: %w", k.Backend, k.Tool, err)}
	case res == nil:
		return attemptResult{class: classTransport, err: fmt.Errorf("%s.%s: backend returned no result", k.Backend, k.Tool)}
	case res.IsError:
		return attemptResult{res: res, class: classToolError, err: fmt.Errorf("%s.%s returned an error: %s", k.Backend, k.Tool, resultText(res))}
	}
	return attemptResult{res: res}
}

// callWithRetry runs a tool step's attempts.
func (e *Engine) callWithRetry(ctx context.Context, r *runState, st *Step, k *steps.ToolCall, args json.RawMessage) (*StepState, *RunError) {
	a, attempts := e.attempts(ctx, r, st, k, args, -1)
	s := &StepState{Attempts: attempts}
	if a.err != nil {
		s.Status, s.Error = StepFailed, a.err.Error()
		if a.res != nil && st.needContent {
			s.Content = decodeContent(a.res)
		}
		return s, &RunError{Workflow: r.p.Name, Step: st.ID, Attempt: attempts, Attempts: st.maxAttempts(), Pos: st.Pos, Cause: a.err.Error()}
	}
	s.Status = StepCompleted
	s.Output = stepOutput(a.res)
	if st.needContent {
		s.Content = decodeContent(a.res)
	}
	return s, nil
}

// attempts runs attempts until success, a failure not covered by the retry
// policy, exhaustion or cancellation. item ≥ 0 names a for_each item in
// retry events.
func (e *Engine) attempts(ctx context.Context, r *runState, st *Step, k *steps.ToolCall, args json.RawMessage, item int) (attemptResult, int) {
	maxN := st.maxAttempts()
	for n := 1; ; n++ {
		a := e.callOnce(ctx, st, k, args, r.ro.Meta, n)
		if a.err == nil || n >= maxN || ctx.Err() != nil || st.retry == nil || !st.retry.covers(a.class) {
			return a, n
		}
		ev := Event{Type: EventRetried, Step: st.ID, Attempt: n + 1, Err: a.err.Error()}
		if item >= 0 {
			ev.Err = fmt.Sprintf("item %d: %s", item, ev.Err)
		}
		r.emit(ev)
		t := time.NewTimer(st.retry.wait(n + 1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return attemptResult{class: classTransport, err: fmt.Errorf("%w (after attempt %d: %v)", ctx.Err(), n, a.err)}, n
		}
	}
}

func (st *Step) maxAttempts() int {
	if st.retry == nil || st.retry.maxAttempts < 1 {
		return 1
	}
	return st.retry.maxAttempts
}

// forEach calls the tool once per item with bounded parallelism. Outputs
// keep item order; the step fails if any item failed.
func (e *Engine) forEach(ctx context.Context, r *runState, st *Step, k *steps.ForEach, items []json.RawMessage) (*StepState, *RunError) {
	s := &StepState{Status: StepCompleted, Items: make([]ItemState, len(items)), Output: make([]any, len(items))}
	par := k.MaxParallel
	if par < 1 {
		par = 1
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, args := range items {
		sem <- struct{}{}
		if ctx.Err() != nil {
			<-sem
			mu.Lock()
			s.Items[i] = ItemState{Status: StepCancelled, Error: ctx.Err().Error()}
			mu.Unlock()
			continue
		}
		wg.Add(1)
		e.work.start(func() {
			defer wg.Done()
			defer func() { <-sem }()
			var it ItemState
			defer func() {
				if v := recover(); v != nil {
					it = ItemState{Status: StepFailed, Error: fmt.Sprintf("internal error: panic: %v", v), Attempts: 1}
				}
				mu.Lock()
				s.Items[i] = it
				if it.Status == StepCompleted {
					s.Output.([]any)[i] = it.Output
				}
				mu.Unlock()
			}()
			a, n := e.attempts(ctx, r, st, k.Call, args, i)
			it = ItemState{Status: StepCompleted, Attempts: n}
			if a.err != nil {
				it.Status, it.Error = StepFailed, a.err.Error()
				return
			}
			it.Output = stepOutput(a.res)
		})
	}
	wg.Wait()
	var failed []string
	for i, it := range s.Items {
		s.Attempts = max(s.Attempts, it.Attempts)
		if it.Status != StepCompleted {
			failed = append(failed, fmt.Sprintf("item %d: %s", i, it.Error))
		}
	}
	if len(failed) > 0 {
		s.Status = StepFailed
		s.Error = fmt.Sprintf("%d of %d items failed: %s", len(failed), len(items), strings.Join(failed, "; "))
		return s, &RunError{Workflow: r.p.Name, Step: st.ID, Pos: st.Pos, Cause: s.Error}
	}
	return s, nil
}

// stepOutput is structuredContent when present, else {text: …}.
func stepOutput(res *steps.Result) any {
	if len(res.StructuredContent) > 0 && string(res.StructuredContent) != "null" {
		if v, err := steps.DecodeJSON(res.StructuredContent); err == nil {
			return v
		}
	}
	return map[string]any{"text": resultText(res)}
}

// resultText joins the text items of a result's content.
func resultText(res *steps.Result) string {
	var items []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if len(res.Content) == 0 || json.Unmarshal(res.Content, &items) != nil {
		return ""
	}
	var b strings.Builder
	for _, it := range items {
		if it.Type == "text" {
			if b.Len() > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(it.Text)
		}
	}
	return b.String()
}

func decodeContent(res *steps.Result) any {
	if len(res.Content) == 0 {
		return []any{}
	}
	v, err := steps.DecodeJSON(res.Content)
	if err != nil {
		return nil
	}
	return v
}

// NewToolPlan builds the one-node plan for a plain backend tool: compiled
// once per catalogue version, run with the client's arguments passed
// through as raw JSON, no checkpoint, no rendering.
func NewToolPlan(t *Tool, advertised string, timeout time.Duration) *Plan {
	name := advertised
	if name == "" {
		name = t.Ref()
	}
	st := &Step{ID: "call", Kind: &steps.ToolCall{Backend: t.Backend, Tool: t.Name, Ref: t.Ref(),
		ReadOnly: t.Annotations.readOnly(), Idempotent: t.Annotations.idempotent()}, onError: dsl.ActionAbort, timeout: timeout}
	p := &Plan{Name: name, Description: t.Description, InputSchema: t.InputSchema, OutputSchema: t.OutputSchema,
		MaxParallel: 1, Steps: []*Step{st}, byID: map[string]*Step{"call": st}, sinks: []int{0}, oneNode: true}
	if t.Annotations != nil {
		p.Annotations = *t.Annotations
	}
	return p
}

// runOneNode is the fast path for plain tools.
func (e *Engine) runOneNode(ctx context.Context, p *Plan, args json.RawMessage, ro *RunOptions) (*Outcome, error) {
	st := p.Steps[0]
	k := st.Kind.(*steps.ToolCall)
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	a := e.callOnce(ctx, st, k, args, ro.Meta, 0)
	if a.err != nil && a.res == nil {
		status := StatusFailed
		if ctx.Err() != nil {
			status = StatusCancelled
		}
		return &Outcome{RunID: ro.RunID, Status: status, Err: &RunError{Workflow: p.Name, Step: st.ID, Attempt: 1, Cause: a.err.Error()}}, nil
	}
	// A tool's isError result is passed through to the client unchanged.
	return &Outcome{RunID: ro.RunID, Status: StatusCompleted, Raw: a.res}, nil
}

// IsInvalidAnswer reports whether err rejects an answer.
func IsInvalidAnswer(err error) bool { return errors.Is(err, ErrInvalidAnswer) }
