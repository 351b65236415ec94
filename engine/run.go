package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/steps"
)

// Run executes plan p with the client's arguments (raw JSON object; empty
// means {}). A one-node plan of a plain tool passes the arguments through
// unchanged and returns the backend's result as Outcome.Raw.
//
// The returned error is for misuse only (bad arguments to the workflow
// are a failed Outcome, so clients see them as tool errors).
func (e *Engine) Run(ctx context.Context, p *Plan, args json.RawMessage, ro *RunOptions) (*Outcome, error) {
	if ro == nil {
		ro = &RunOptions{}
	}
	if p.oneNode {
		return e.runOneNode(ctx, p, args, ro)
	}
	params, err := p.prepareParams(args)
	if err != nil {
		return &Outcome{RunID: ro.RunID, Status: StatusFailed, Err: &RunError{Workflow: p.Name, Cause: err.Error()}}, nil
	}
	cp := &Checkpoint{Version: CheckpointVersion, RunID: ro.RunID, Workflow: p.Name, Params: params, Steps: map[string]*StepState{}}
	return e.execute(ctx, p, cp, ro)
}

// Resume continues a paused run from its checkpoint with an answer to the
// pending question. An answer that does not fit is ErrInvalidAnswer and
// changes nothing.
func (e *Engine) Resume(ctx context.Context, p *Plan, cp *Checkpoint, ans Answer, ro *RunOptions) (*Outcome, error) {
	if ro == nil {
		ro = &RunOptions{}
	}
	if cp == nil || cp.Pending == nil {
		return nil, ErrNotWaiting
	}
	st := p.Step(cp.Pending.Step)
	if st == nil {
		return nil, fmt.Errorf("checkpoint waits on step %q, which workflow %q does not have", cp.Pending.Step, p.Name)
	}
	el, ok := st.Kind.(*steps.Elicitation)
	if !ok {
		return nil, fmt.Errorf("step %q is not an elicitation", st.ID)
	}
	res, err := applyAnswer(el, ans)
	if err != nil {
		return nil, err
	}
	res.Finished = e.clock.Now()
	if prev := cp.Steps[st.ID]; prev != nil {
		res.Started = prev.Started
	}
	next := cloneCheckpoint(cp)
	next.Pending = nil
	next.Steps[st.ID] = res
	if ro.RunID == "" {
		ro.RunID = cp.RunID
	}
	return e.execute(ctx, p, next, ro, answered{step: st, action: ans.Action})
}

// answered carries the outcome of the answered question into the run.
type answered struct {
	step   *Step
	action string
}

func applyAnswer(el *steps.Elicitation, ans Answer) (*StepState, error) {
	res := &StepState{Status: StepCompleted, Attempts: 1, Action: ans.Action}
	switch ans.Action {
	case ActionAccept:
		content := ans.Content
		if content == nil {
			content = map[string]any{}
		}
		b, err := steps.EncodeJSON(content)
		if err != nil {
			return nil, invalidAnswer("content is not JSON: %v", err)
		}
		if len(b) > MaxElicitContent {
			return nil, invalidAnswer("content is %d bytes; the limit is %d", len(b), MaxElicitContent)
		}
		v, err := steps.DecodeJSON(b)
		if err != nil {
			return nil, invalidAnswer("%v", err)
		}
		if el.Schema != nil {
			v = el.Schema.Coerce(v)
			if err := el.Schema.Validate(v); err != nil {
				return nil, invalidAnswer("%v", err)
			}
		}
		res.Content = v
		res.Output = v
	case ActionDecline, ActionCancel:
		res.Content = map[string]any{}
	default:
		return nil, invalidAnswer("action must be accept, decline or cancel, got %q", ans.Action)
	}
	return res, nil
}

func cloneCheckpoint(cp *Checkpoint) *Checkpoint {
	n := *cp
	n.Steps = make(map[string]*StepState, len(cp.Steps))
	for k, v := range cp.Steps {
		n.Steps[k] = v
	}
	return &n
}

// prepareParams decodes, defaults and validates the workflow's arguments.
func (p *Plan) prepareParams(args json.RawMessage) (map[string]any, error) {
	var params map[string]any
	if len(strings.TrimSpace(string(args))) == 0 || string(args) == "null" {
		params = map[string]any{}
	} else {
		v, err := steps.DecodeJSON(args)
		if err != nil {
			return nil, fmt.Errorf("arguments are not valid JSON: %v", err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("arguments must be a JSON object, got %s", steps.TypeName(v))
		}
		params = m
	}
	if p.params == nil {
		return params, nil
	}
	for k, d := range p.params.defaults {
		if _, ok := params[k]; !ok {
			params[k] = d
		}
	}
	if p.params.schema != nil {
		coerced, _ := p.params.schema.Coerce(params).(map[string]any)
		if coerced != nil {
			params = coerced
		}
		if err := p.params.schema.Validate(params); err != nil {
			return nil, fmt.Errorf("invalid arguments: %v", err)
		}
	}
	// Declared but absent parameters read as null rather than failing.
	for _, k := range p.params.declared {
		if _, ok := params[k]; !ok {
			params[k] = nil
		}
	}
	return params, nil
}

// runState is one execution segment of a run. Only the owner goroutine
// (execute) touches it, except the fields workers send back on done.
type runState struct {
	e     *Engine
	p     *Plan
	ro    *RunOptions
	cp    *Checkpoint
	start time.Time

	ctx    context.Context
	cancel context.CancelFunc

	waiting  []int // unfinished dependency counts
	started  []bool
	finished []bool
	ready    []int
	running  int
	inflight map[string]bool // steps with a worker
	// starting are workers to launch after the next persist; mustRecord
	// says one of them needs the record first.
	starting   []pendingStart
	mustRecord bool
	// unrecorded: the run is not in the store yet (RunOptions.Unrecorded);
	// the first launch waits for a checkpoint.
	unrecorded bool
	done       chan completion

	scopeSteps map[string]any
	workflow   map[string]any

	obsMu     sync.Mutex
	nDone     int
	failure   *RunError
	pause     *Question
	skipRest  bool
	cancelled bool
}

// pendingStart is a worker waiting for the record that must precede it.
type pendingStart struct {
	idx int
	fn  func()
}

type completion struct {
	idx   int
	state *StepState
	err   *RunError // step failed (after retries)
}

func (e *Engine) execute(ctx context.Context, p *Plan, cp *Checkpoint, ro *RunOptions, ans ...answered) (*Outcome, error) {
	r := &runState{e: e, p: p, ro: ro, cp: cp, start: e.clock.Now(), unrecorded: ro.Durable && ro.Unrecorded}
	n := len(p.Steps)
	r.waiting = make([]int, n)
	r.started = make([]bool, n)
	r.finished = make([]bool, n)
	r.done = make(chan completion, n)
	r.inflight = map[string]bool{}
	r.workflow = map[string]any{"name": p.Name, "run_id": ro.RunID}
	r.scopeSteps = make(map[string]any, n)
	r.skipRest = cp.SkipRemaining

	runCtx := ctx
	var cancelTimeout context.CancelFunc = func() {}
	if p.Timeout > 0 {
		left := p.Timeout - cp.Elapsed
		if left <= 0 {
			left = time.Nanosecond
		}
		runCtx, cancelTimeout = context.WithTimeout(ctx, left)
	}
	defer cancelTimeout()
	r.ctx, r.cancel = context.WithCancel(runCtx)
	defer r.cancel()

	for _, st := range p.Steps {
		r.waiting[st.Index] = len(st.Deps)
		if s := cp.Steps[st.ID]; s != nil {
			r.started[st.Index], r.finished[st.Index] = true, true
			r.scopeSteps[st.ID] = s.view()
			r.nDone++
		} else {
			r.scopeSteps[st.ID] = map[string]any{"status": StepPending, "output": nil, "error": "", "attempts": int64(0), "content": nil, "action": "", "items": nil}
		}
	}
	for _, st := range p.Steps {
		if r.finished[st.Index] {
			for _, d := range st.Dependents {
				r.waiting[d]--
			}
		}
	}
	for _, a := range ans {
		r.emit(Event{Type: EventFinished, Step: a.step.ID, Status: StepCompleted, Action: a.action, Attempt: 1})
		r.afterAnswer(a)
	}
	for _, st := range p.Steps {
		if !r.started[st.Index] && r.waiting[st.Index] == 0 {
			r.ready = append(r.ready, st.Index)
		}
	}
	if r.skipRest {
		r.skipAllPending("skip_remaining")
	}

	r.loop()

	cp.Elapsed += e.clock.Now().Sub(r.start)
	return r.finish(ctx, runCtx)
}

// afterAnswer applies on_decline / on_cancel for the answered step.
func (r *runState) afterAnswer(a answered) {
	el := a.step.Kind.(*steps.Elicitation)
	policy := ""
	switch a.action {
	case ActionDecline:
		policy = el.OnDecline
	case ActionCancel:
		policy = el.OnCancel
	default:
		return
	}
	switch policy {
	case dsl.ActionSkipRemaining:
		r.skipRest = true
		r.cp.SkipRemaining = true
	case dsl.ActionContinue:
	default: // abort
		what := "declined"
		if a.action == ActionCancel {
			what = "cancelled"
		}
		r.failure = &RunError{Workflow: r.p.Name, Step: a.step.ID, Pos: a.step.Pos, Cause: "the question was " + what}
		r.cancelled = a.action == ActionCancel
	}
}

// loop is the scheduler: start ready steps up to the parallelism bound,
// collect completions, release dependents; stop starting new steps on
// failure, pause or cancellation, and drain what runs.
//
// Commits are coalesced, never deferred past an action: the result of an
// unsafe step is written before anything else happens (before the next
// step is launched, and before the scheduler waits again), but in the same
// commit as the in-flight record of the steps it released and the results
// of the other completions that were already waiting. A chain of unsafe
// steps costs one commit per step, not two (docs/durability.md).
func (r *runState) loop() {
	dirty := false // an unsafe step finished since the last persist
	for {
		for r.failure == nil && r.pause == nil && r.ctx.Err() == nil && len(r.ready) > 0 && r.running < r.p.MaxParallel {
			idx := r.ready[0]
			r.ready = r.ready[1:]
			r.dispatch(idx)
		}
		// Persist before the calls go out: a step whose effect cannot be
		// repeated safely must be on record as in flight before its
		// backend can see the call (SPEC §5's re-execution rule).
		if len(r.starting) > 0 {
			if r.failure == nil && (r.mustRecord || dirty || r.unrecorded) {
				r.persist()
				r.mustRecord, dirty = false, false
			}
			if r.failure != nil || r.ctx.Err() != nil {
				// Nothing starts once the run failed (or its record
				// could not be saved): a step unsafe to repeat must
				// never run without being on record.
				for _, ps := range r.starting {
					r.running--
					delete(r.inflight, r.p.Steps[ps.idx].ID)
					r.record(ps.idx, &StepState{Status: StepCancelled, Error: "not started: the run ended first"}, EventFinished)
				}
			} else if len(r.starting) == 1 && r.running == 1 {
				// The only step in flight (a chain): run it here. The
				// owner would only wait for its completion, so handing it
				// to a worker buys nothing and costs two goroutine
				// switches per step (BenchmarkChain).
				r.starting[0].fn()
			} else {
				for _, ps := range r.starting {
					r.e.work.start(ps.fn)
				}
			}
			r.starting = r.starting[:0]
		}
		// (A run about to pause writes its results with the pause.)
		if dirty && !(r.running == 0 && r.pause != nil && r.failure == nil && r.ctx.Err() == nil) {
			r.persist()
			dirty = false
		}
		if r.running == 0 {
			return
		}
		c := <-r.done
		for {
			r.running--
			delete(r.inflight, r.p.Steps[c.idx].ID)
			r.complete(c)
			if r.p.Steps[c.idx].unsafe() {
				dirty = true
			}
			select {
			case c = <-r.done:
				continue
			default:
			}
			break
		}
	}
}

// persist saves a durable run's checkpoint after a state transition (a
// step started or finished), so that after a crash the store knows which
// steps were in flight. A failed save ends the run: executing without a
// record would break the re-execution rules.
func (r *runState) persist() {
	if !r.ro.Durable || r.e.store == nil {
		return
	}
	r.cp.InFlight = r.cp.InFlight[:0]
	for _, st := range r.p.Steps {
		if r.inflight[st.ID] {
			r.cp.InFlight = append(r.cp.InFlight, st.ID)
		}
	}
	if err := r.e.store.SaveCheckpoint(r.ctx, r.cp); err != nil {
		if r.failure == nil {
			r.failure = &RunError{Workflow: r.p.Name, Cause: "could not persist the run's progress: " + err.Error()}
			r.cancel()
		}
		return
	}
	r.unrecorded = false
}

// dispatch evaluates a step's condition and renders its inputs here, in the
// owner goroutine, then hands the call to a worker.
func (r *runState) dispatch(idx int) {
	st := r.p.Steps[idx]
	r.started[idx] = true
	if r.skipRest {
		r.record(idx, &StepState{Status: StepSkipped, Output: st.defaultOutput}, EventSkipped)
		return
	}
	now := r.e.clock.Now()
	if st.condition != nil {
		ok, err := st.condition.eval(r.ctx, r.vars())
		if err != nil {
			r.fail(idx, &StepState{Status: StepFailed, Error: err.Error(), Started: now, Finished: now}, &RunError{Workflow: r.p.Name, Step: st.ID, Pos: st.Pos, Cause: err.Error()})
			return
		}
		if !ok {
			r.record(idx, &StepState{Status: StepSkipped, Output: st.defaultOutput, Started: now, Finished: now}, EventSkipped)
			return
		}
	}
	if _, ok := st.Kind.(*steps.Elicitation); !ok {
		r.emit(Event{Type: EventStarted, Step: st.ID, Attempt: 1})
	}
	switch k := st.Kind.(type) {
	case *steps.Elicitation:
		q, err := r.question(st, k)
		if err != nil {
			r.fail(idx, &StepState{Status: StepFailed, Error: err.Error(), Started: now, Finished: now}, &RunError{Workflow: r.p.Name, Step: st.ID, Pos: st.Pos, Cause: err.Error()})
			return
		}
		// The step stays unstarted: Resume records it with the answer.
		r.pause = q
		r.started[idx] = false
		r.emit(Event{Type: EventPaused, Step: st.ID})
	case *steps.ToolCall:
		args, err := r.renderArgs(k, nil)
		if err != nil {
			r.fail(idx, &StepState{Status: StepFailed, Error: err.Error(), Started: now, Finished: now}, &RunError{Workflow: r.p.Name, Step: st.ID, Pos: st.Pos, Cause: err.Error()})
			return
		}
		r.launch(st, now, func(ctx context.Context) (*StepState, *RunError) {
			return r.e.callWithRetry(ctx, r, st, k, args)
		})
	case *steps.ForEach:
		items, err := r.renderItems(k)
		if err != nil {
			r.fail(idx, &StepState{Status: StepFailed, Error: err.Error(), Started: now, Finished: now}, &RunError{Workflow: r.p.Name, Step: st.ID, Pos: st.Pos, Cause: err.Error()})
			return
		}
		r.launch(st, now, func(ctx context.Context) (*StepState, *RunError) {
			return r.e.forEach(ctx, r, st, k, items)
		})
	}
}

// launch queues a step's worker; loop launches it once the run's record
// says the step is in flight (when that matters).
func (r *runState) launch(st *Step, now time.Time, fn func(context.Context) (*StepState, *RunError)) {
	r.running++
	r.inflight[st.ID] = true
	if st.unsafe() {
		r.mustRecord = true
	}
	r.starting = append(r.starting, pendingStart{st.Index, func() { r.worker(st.Index, now, fn) }})
}

// unsafe reports a tool step whose tool is neither read-only nor
// idempotent: after a crash it must not run again without a decision, so
// durable runs record it in flight before calling it, and its result right
// after. Steps that are safe to repeat are not written one by one: after a
// crash they simply run again.
func (st *Step) unsafe() bool {
	var call *steps.ToolCall
	switch k := st.Kind.(type) {
	case *steps.ToolCall:
		call = k
	case *steps.ForEach:
		call = k.Call
	}
	return call != nil && !call.ReadOnly && !call.Idempotent
}

// worker runs one step and reports back; a panic becomes the step's error.
func (r *runState) worker(idx int, started time.Time, fn func(context.Context) (*StepState, *RunError)) {
	st := r.p.Steps[idx]
	var c completion
	defer func() {
		if v := recover(); v != nil {
			msg := fmt.Sprintf("internal error: panic: %v", v)
			r.e.log.Error("step panicked", "workflow", r.p.Name, "run_id", r.ro.RunID, "step", st.ID, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			c = completion{idx: idx, state: &StepState{Status: StepFailed, Error: msg, Attempts: 1}, err: &RunError{Workflow: r.p.Name, Step: st.ID, Pos: st.Pos, Cause: msg}}
		}
		c.state.Started = started
		c.state.Finished = r.e.clock.Now()
		r.done <- c
	}()
	s, err := fn(r.ctx)
	c = completion{idx: idx, state: s, err: err}
}

// complete records a worker's result.
func (r *runState) complete(c completion) {
	if c.err != nil {
		r.fail(c.idx, c.state, c.err)
		return
	}
	r.record(c.idx, c.state, EventFinished)
}

// fail applies on_error to a failed step.
func (r *runState) fail(idx int, s *StepState, err *RunError) {
	st := r.p.Steps[idx]
	if s.Status == "" {
		s.Status = StepFailed
	}
	if r.ctx.Err() != nil && r.failure == nil && r.pause == nil {
		// Cancelled or out of time: the run ends, whatever on_error says.
		s.Status = StepCancelled
		r.record(idx, s, EventFinished)
		return
	}
	if st.onError == dsl.ActionContinue {
		if st.hasDefault {
			s.Output = st.defaultOutput
		}
		r.record(idx, s, EventFinished)
		return
	}
	r.record(idx, s, EventFinished)
	if r.failure == nil {
		r.failure = err
		r.cancel()
	}
}

// record stores a finished step and releases its dependents.
func (r *runState) record(idx int, s *StepState, ev EventType) {
	st := r.p.Steps[idx]
	r.finished[idx] = true
	r.cp.Steps[st.ID] = s
	r.scopeSteps[st.ID] = s.view()
	r.nDone++
	r.emit(Event{Type: ev, Step: st.ID, Status: s.Status, Attempt: s.Attempts, Err: s.Error})
	for _, d := range st.Dependents {
		r.waiting[d]--
		if r.waiting[d] == 0 && !r.started[d] {
			r.ready = append(r.ready, d)
		}
	}
}

// skipAllPending marks every step not yet started as skipped.
func (r *runState) skipAllPending(reason string) {
	for _, st := range r.p.Steps {
		if !r.started[st.Index] {
			r.started[st.Index] = true
			r.finished[st.Index] = true
			s := &StepState{Status: StepSkipped, Output: st.defaultOutput, Error: ""}
			r.cp.Steps[st.ID] = s
			r.scopeSteps[st.ID] = s.view()
			r.nDone++
			r.emit(Event{Type: EventSkipped, Step: st.ID, Status: StepSkipped, Err: reason})
		}
	}
	r.ready = nil
}

func (r *runState) emit(ev Event) {
	if r.ro.Observer == nil {
		return
	}
	r.obsMu.Lock()
	defer r.obsMu.Unlock()
	ev.RunID = r.ro.RunID
	ev.Time = r.e.clock.Now()
	ev.Done, ev.Total = r.nDone, len(r.p.Steps)
	r.ro.Observer(ev)
}

func (r *runState) vars() map[string]any {
	return map[string]any{"params": r.cp.Params, "steps": r.scopeSteps, "workflow": r.workflow}
}

func (r *runState) scope() *steps.Scope {
	return &steps.Scope{Params: r.cp.Params, Steps: r.scopeSteps, Workflow: r.workflow}
}

// renderArgs renders and coerces a tool call's arguments.
func (r *runState) renderArgs(k *steps.ToolCall, sc *steps.Scope) (json.RawMessage, error) {
	if k.Args == nil {
		return json.RawMessage("{}"), nil
	}
	if sc == nil {
		sc = r.scope()
	}
	if _, ok := k.Args.Static(); ok && k.Input == nil {
		return k.Args.RenderJSON(sc)
	}
	v, err := k.Args.Render(sc)
	if err != nil {
		return nil, err
	}
	if k.Input != nil {
		v = k.Input.Coerce(v)
	}
	b, err := steps.EncodeJSON(v)
	if err != nil {
		return nil, err
	}
	if len(b) > steps.MaxRenderedBytes {
		return nil, fmt.Errorf("rendered arguments are %d bytes, over the 1 MiB limit", len(b))
	}
	return b, nil
}

// renderItems renders a for_each list and each item's arguments.
func (r *runState) renderItems(k *steps.ForEach) ([]json.RawMessage, error) {
	v, err := k.Items.Render(r.scope())
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = []any{}
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("for_each gave %s %s, not a list", steps.TypeName(v), shortJSON(v))
	}
	if len(list) > MaxForEachItems {
		return nil, fmt.Errorf("for_each gave %d items; the limit is %d", len(list), MaxForEachItems)
	}
	out := make([]json.RawMessage, len(list))
	for i, item := range list {
		sc := r.scope()
		sc.ItemVar, sc.Item, sc.Index = k.As, item, i
		b, err := r.renderArgs(k.Call, sc)
		if err != nil {
			return nil, fmt.Errorf("item %d: %v", i, err)
		}
		out[i] = b
	}
	return out, nil
}

// question renders an elicitation step's question.
func (r *runState) question(st *Step, k *steps.Elicitation) (*Question, error) {
	msg := ""
	if k.Message != nil {
		v, err := k.Message.Render(r.scope())
		if err != nil {
			return nil, err
		}
		if s, ok := v.(string); ok {
			msg = s
		} else {
			msg = shortJSON(v)
		}
	}
	q := &Question{Step: st.ID, Message: msg, Schema: k.SchemaJSON}
	if st.timeout > 0 {
		q.Deadline = r.e.clock.Now().Add(st.timeout)
	}
	return q, nil
}

// finish builds the outcome once the scheduler stopped.
func (r *runState) finish(parent, runCtx context.Context) (*Outcome, error) {
	out := &Outcome{RunID: r.ro.RunID, Workflow: r.p.Name}
	switch {
	case r.failure != nil:
		out.Status = StatusFailed
		if r.cancelled {
			out.Status = StatusCancelled
		}
		out.Err = r.failure
		return out, nil
	case parent.Err() != nil:
		out.Status = StatusCancelled
		out.Err = &RunError{Workflow: r.p.Name, Cause: "cancelled by the client"}
		return out, nil
	case runCtx.Err() != nil:
		out.Status = StatusFailed
		out.Err = &RunError{Workflow: r.p.Name, Cause: fmt.Sprintf("workflow timed out after %s", r.p.Timeout)}
		return out, nil
	case r.pause != nil:
		r.cp.Pending = r.pause
		r.cp.InFlight = nil // a pause waits for every running step to finish
		out.Status = StatusWaiting
		out.Question = r.pause
		out.Checkpoint = r.cp
		if r.e.store != nil {
			if err := r.e.store.SaveCheckpoint(parent, r.cp); err != nil {
				return nil, fmt.Errorf("saving the paused run: %w", err)
			}
		}
		return out, nil
	}
	v, partial, err := r.output()
	if err != nil {
		out.Status = StatusFailed
		out.Err = &RunError{Workflow: r.p.Name, Cause: err.Error()}
		return out, nil
	}
	out.Status, out.Output, out.Partial = StatusCompleted, v, partial
	return out, nil
}

// output renders `output` (or the sink default) and validates it.
func (r *runState) output() (any, bool, error) {
	p := r.p
	if p.output == nil {
		if len(p.sinks) == 1 {
			return r.cp.Steps[p.Steps[p.sinks[0]].ID].Output, false, nil
		}
		m := make(map[string]any, len(p.sinks))
		for _, i := range p.sinks {
			m[p.Steps[i].ID] = r.cp.Steps[p.Steps[i].ID].Output
		}
		return m, false, nil
	}
	sc := r.scope()
	sc.Lenient = r.skipRest
	v, err := p.output.Render(sc)
	if err != nil {
		return nil, false, fmt.Errorf("output: %v", err)
	}
	if p.outputSchema != nil {
		if err := p.outputSchema.Validate(v); err != nil {
			if r.skipRest {
				return v, true, nil
			}
			return nil, false, fmt.Errorf("output does not match output_schema: %v", err)
		}
	}
	return v, r.skipRest, nil
}

func shortJSON(v any) string {
	b, err := steps.EncodeJSON(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}
