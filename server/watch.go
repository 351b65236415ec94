package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/steps"
)

// Wake-ups (design §5.4). A client waiting live in an open call follows
// its run through the store's change hints (state.Driver.Changes): when
// the question is answered elsewhere — another surface of this process,
// or another replica sharing PostgreSQL — the live question is withdrawn
// and the call returns what the run did (its result, its next question,
// or where to look if it is still running when the call's budget ends).
// The replica that accepted the answer executes the rest of the run; the
// waiter only re-reads the store. The same hints carry a cancel made
// elsewhere to the process executing the run, which cancels the run's
// context (and so its backend calls).

// pollEvery re-reads every watched run even without a hint: a lost
// notification costs at most this much.
const pollEvery = 5 * time.Second

// watchers are this process's live calls following a run. (The runs
// this process executes are tracked by runs.ex, takeover.go.)
type watchers struct {
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// watch registers interest in run id: the channel gets a (coalesced)
// signal whenever the run may have changed. Call the returned func when
// done.
func (w *watchers) watch(id string) (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	w.mu.Lock()
	if w.waiters == nil {
		w.waiters = map[string]map[chan struct{}]struct{}{}
	}
	if w.waiters[id] == nil {
		w.waiters[id] = map[chan struct{}]struct{}{}
	}
	w.waiters[id][c] = struct{}{}
	w.mu.Unlock()
	return c, func() {
		w.mu.Lock()
		delete(w.waiters[id], c)
		if len(w.waiters[id]) == 0 {
			delete(w.waiters, id)
		}
		w.mu.Unlock()
	}
}

// wake signals the waiters of id ("" : every waiter).
func (w *watchers) wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	signal := func(set map[chan struct{}]struct{}) {
		for c := range set {
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}
	if id == "" {
		for _, set := range w.waiters {
			signal(set)
		}
		return
	}
	signal(w.waiters[id])
}

// errCancelledElsewhere is the cause of a run context cancelled because
// the run was cancelled through the store (vmcp_run_cancel, the HTTP API
// or `vmcp runs cancel`, on any replica).
var errCancelledElsewhere = errors.New("the run was cancelled (vmcp_run_cancel, POST /api/v1/runs/{id}/cancel or `vmcp runs cancel`)")

// executingIDs lists the runs executing here (id "") or reports whether
// id is one of them.
func (r *runs) executingIDs(id string) []string {
	r.ex.mu.Lock()
	defer r.ex.mu.Unlock()
	if id != "" {
		if len(r.ex.active[id]) > 0 {
			return []string{id}
		}
		return nil
	}
	out := make([]string, 0, len(r.ex.active))
	for k := range r.ex.active {
		out = append(out, k)
	}
	return out
}

// stopIfCancelled re-reads run id and, if the store has it cancelled,
// cancels its executions here. Only "cancelled" stops a run: this
// process's own pauses and finishes also send hints.
func (r *runs) stopIfCancelled(ctx context.Context, id string) {
	run, err := r.store.Get(ctx, id)
	if err != nil || run.Status != state.StatusCancelled {
		return
	}
	r.ex.mu.Lock()
	var es []*execution
	for x := range r.ex.active[id] {
		es = append(es, x)
	}
	r.ex.mu.Unlock()
	if len(es) > 0 {
		r.g.log.Info("run cancelled elsewhere; stopping its execution here", "run_id", id)
	}
	for _, e := range es {
		e.cancel(errCancelledElsewhere)
	}
}

// refusedCancelled marks the execution behind ctx cancelled elsewhere
// when the store refused its write because the run was cancelled: the
// change hint may be late or lost (the poll wakes only live waiters).
// The engine ends a run whose save failed anyway, but as failed ("could
// not persist the run's progress"); with the cause set, the execution
// ends cancelled, as it does when the hint comes first.
func (r *runs) refusedCancelled(ctx context.Context, err error) {
	var te *state.TransitionError
	if x := executionOf(ctx); x != nil && errors.As(err, &te) && te.Status == state.StatusCancelled {
		r.g.log.Info("run cancelled elsewhere (its write was refused); stopping its execution here", "run_id", x.run)
		x.cancel(errCancelledElsewhere)
	}
}

// followChanges is the process's one consumer of the store's change
// hints: it wakes local waiters and stops local executions of runs
// cancelled elsewhere. Every pollEvery it wakes every waiter (they
// re-read), so a lost hint delays a waiter at most that much; after a
// Change{} (hints were lost) it also re-checks every local execution.
func (r *runs) followChanges(ctx context.Context) {
	hints := r.store.Changes(ctx)
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			r.watch.wake("")
		case c, ok := <-hints:
			if !ok {
				return // the store closed
			}
			r.watch.wake(c.RunID)
			switch {
			case c.RunID == "":
				for _, id := range r.executingIDs("") {
					r.stopIfCancelled(ctx, id)
				}
			case c.Status == state.StatusCancelled || c.Status == "":
				if len(r.executingIDs(c.RunID)) > 0 {
					r.stopIfCancelled(ctx, c.RunID)
				}
			}
		}
	}
}

// cancelledOutcome says why a run stopped when its context was cancelled
// elsewhere (the engine can only say "cancelled by the client", or a step
// may have failed on its refused checkpoint): the run is cancelled.
func cancelledOutcome(ctx context.Context, out *engine.Outcome) {
	if out != nil && out.Status != engine.StatusCompleted && errors.Is(context.Cause(ctx), errCancelledElsewhere) {
		out.Status = engine.StatusCancelled
		out.Err = &engine.RunError{Workflow: out.Workflow, Cause: errCancelledElsewhere.Error()}
	}
}

// elicitOrFollow sends a live question for run id and waits for the
// first of: the client's answer (returned as res, err), or the run
// leaving this question elsewhere (returned as moved: the run as it is
// now). In the second case the question is withdrawn: the request's
// context is cancelled. (mcp-go v1.2.1 then stops waiting but sends the
// client no notifications/cancelled, and its request id is internal, so
// vmcp cannot send one either: a client still showing the question gets
// no reply to a late answer.)
func (g *Gateway) elicitOrFollow(ctx context.Context, id string, req mcp.ElicitationRequest) (res *mcp.ElicitationResult, err error, moved *state.Run) {
	wake, stop := g.runs.watch.watch(id)
	defer stop()
	run, gerr := g.runs.store.Get(ctx, id)
	if gerr == nil && (run.Status != state.StatusWaiting || run.Pending == nil) {
		return nil, nil, run // answered before it could be asked
	}
	var seq uint64
	if gerr == nil {
		seq = run.Pending.Seq
	}
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	type reply struct {
		res *mcp.ElicitationResult
		err error
	}
	done := make(chan reply, 1)
	go func() {
		res, err := g.mcp.RequestElicitation(ectx, req)
		done <- reply{res, err}
	}()
	for {
		select {
		case r := <-done:
			return r.res, r.err, nil
		case <-wake:
			run, err := g.runs.store.Get(ctx, id)
			if err != nil || (run.Status == state.StatusWaiting && run.Pending != nil && (seq == 0 || run.Pending.Seq == seq)) {
				continue
			}
			cancel()
			<-done
			return nil, nil, run
		}
	}
}

// followRun follows a run that left the question this call asked (it
// was answered, cancelled or timed out elsewhere) until it finishes,
// asks again, or budget runs out. It returns the final result, or the
// run's next question as an outcome (to be asked here), or a result that
// says the run is still running and where to look.
func (g *Gateway) followRun(ctx context.Context, run *state.Run, budget time.Duration) (*engine.Outcome, *mcp.CallToolResult, error) {
	id := run.ID
	wake, stop := g.runs.watch.watch(id)
	defer stop()
	// Re-read now that hints reach this watch: one may have come between
	// the caller's read and here.
	if fresh, err := g.runs.store.Get(ctx, id); err == nil {
		run = fresh
	}
	timer := time.NewTimer(budget)
	defer timer.Stop()
	for {
		switch run.Status {
		case state.StatusCompleted:
			return nil, storedResult(run), nil
		case state.StatusFailed:
			return nil, mcp.NewToolResultError(fmt.Sprintf("run %s of %s failed: %s", id, run.Workflow, run.Error)), nil
		case state.StatusCancelled:
			return nil, mcp.NewToolResultError(fmt.Sprintf("run %s of %s was cancelled", id, run.Workflow)), nil
		case state.StatusWaiting:
			if run.Pending != nil {
				q := run.Pending
				return &engine.Outcome{RunID: id, Workflow: run.Workflow, Status: engine.StatusWaiting,
					Question: &engine.Question{Step: q.Step, Message: q.Message, Schema: q.Schema, Deadline: q.Deadline}}, nil, nil
			}
		case state.StatusInterrupted:
			return nil, elsewhereResult(run, "was interrupted (the replica executing it stopped); resume it with vmcp_run_resume"), nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-timer.C:
			return nil, elsewhereResult(run, "was answered elsewhere and is still running"), nil
		case <-wake:
		}
		next, err := g.runs.store.Get(ctx, id)
		if err != nil {
			if isNotFound(err) {
				return nil, nil, err
			}
			continue
		}
		run = next
	}
}

// storedResult is a completed run's result as read from the store, in
// the same shape as compositeResult.
func storedResult(run *state.Run) *mcp.CallToolResult {
	var v any
	if len(run.Result) > 0 {
		v, _ = steps.DecodeJSON(run.Result)
	}
	return compositeResult(&engine.Outcome{RunID: run.ID, Workflow: run.Workflow, Status: engine.StatusCompleted, Output: v})
}

// elsewhereResult tells the waiting client its run continues without it.
func elsewhereResult(run *state.Run, what string) *mcp.CallToolResult {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Run %s of %s %s. ", run.ID, run.Workflow, what)
	fmt.Fprintf(&sb, "See its status and result with vmcp_run_get {\"run_id\": %q}, GET /api/v1/runs/%s, or `vmcp runs show %s`.", run.ID, run.ID, run.ID)
	meta := map[string]any{"vmcp/run": map[string]any{"id": run.ID, "status": run.Status, "workflow": run.Workflow}}
	return &mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent(sb.String())}, Result: mcp.Result{Meta: &mcp.Meta{AdditionalFields: meta}}}
}

// errWithdrawn ends a live question's span when the run moved on
// elsewhere.
var errWithdrawn = errors.New("question withdrawn: the run was answered, cancelled or timed out elsewhere")
