package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmcp-dev/vmcp/authz"
	"github.com/vmcp-dev/vmcp/backends/outauth"
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/state"
)

// Takeover (PostgreSQL driver, several replicas).
//
// When the sweep of this replica interrupts runs whose replica stopped
// (state/postgres Options.OnTakeover), each is continued here if every
// step it had in flight is safe to repeat (its tool is read-only or
// idempotent): the run is claimed with Resume (interrupted → running,
// held by this replica at a new epoch: of replicas racing for it, and of
// a person resuming it at the same moment, exactly one claim applies) and
// executed in the background with its owner as the principal. A run with
// an unsafe step in flight stays interrupted and waits for a decision
// (vmcp_run_resume with {"rerun": bool}), as after a restart.
//
// An execution of a run that this replica must stop (its lease lapsed
// before a step's backend call: self-fencing; or the store refused a
// write as fenced; or the run was taken over and resumed again here)
// is dropped: its context is cancelled, it makes no further backend calls
// and no further writes, and its engine call returns errLeftForTakeover
// (nothing is finished). A run dropped while this replica still held it
// is released (its holder cleared at this replica's epoch) as soon as the
// database answers, so that the next sweep anywhere takes it over: it is
// never left running under a replica that is alive again.

// errLeftForTakeover: this replica stopped executing a run and left it to
// the takeover (by another replica's sweep, or by its own once released).
type errLeftForTakeover struct{ run string }

func (e *errLeftForTakeover) Error() string {
	return fmt.Sprintf("this vmcp replica stopped executing run %s: it could not keep its lease on the shared state store, or another replica took the run over; "+
		"the run is left for a takeover (see vmcp_run_get %s for where it goes on)", e.run, e.run)
}

func isLeftForTakeover(err error) bool {
	var e *errLeftForTakeover
	return errors.As(err, &e)
}

// execution is one engine call executing a durable run on this replica.
type execution struct {
	run     string
	cancel  context.CancelCauseFunc // errCancelledElsewhere: cancelled through the store (watch.go)
	dropped atomic.Bool
	// settled: its run paused (committed); it writes nothing more, so a
	// new claim of the run does not make it stale.
	settled atomic.Bool
	// lapses is the store's lease-lapse count when this execution last
	// knew it held its run (see runs.holds).
	lapses atomic.Uint64
}

// lapser is a driver whose replica lease can lapse (PostgreSQL).
type lapser interface {
	Lapses() uint64
	Holds(ctx context.Context, id string) (bool, error)
}

// holds reports whether the execution behind ctx may still act for its
// run: yes unless this replica's lease lapsed since the execution last
// checked and the store says the run is no longer held by this replica at
// the epoch it claimed (taken over meanwhile), or cannot say.
func (r *runs) holds(ctx context.Context) bool {
	x := executionOf(ctx)
	l, ok := r.base.(lapser)
	if x == nil || !ok {
		return true
	}
	n := l.Lapses()
	if n == x.lapses.Load() {
		return true
	}
	held, err := l.Holds(ctx, x.run)
	if err != nil || !held {
		return false
	}
	x.lapses.Store(n)
	return true
}

type executionKey struct{}

func executionOf(ctx context.Context) *execution {
	x, _ := ctx.Value(executionKey{}).(*execution)
	return x
}

// settle records whether the execution behind ctx paused its run (it
// then writes nothing more, see supersede). It is set before the pause's
// commit and taken back if the commit fails.
func settle(ctx context.Context, paused bool) {
	if x := executionOf(ctx); x != nil {
		x.settled.Store(paused)
	}
}

// drop stops the execution: no more backend calls or writes.
func (x *execution) drop() {
	if x != nil && x.dropped.CompareAndSwap(false, true) {
		x.cancel(nil)
	}
}

// executions tracks the executions of durable runs on this replica, and
// the runs it dropped but still holds in the store.
type executions struct {
	mu        sync.Mutex
	active    map[string]map[*execution]struct{}
	unrelease map[string]int64 // dropped while held: to release (at epoch)
}

// begin registers an engine call for a durable run of workflow; end it
// with the returned function, which turns the outcome of a dropped
// execution into errLeftForTakeover, and that of one cancelled elsewhere
// into a cancelled outcome.
func (r *runs) begin(ctx context.Context, ro *engine.RunOptions, workflow string) (context.Context, func(*engine.Outcome, error) (*engine.Outcome, error)) {
	if r == nil || ro == nil || !ro.Durable || ro.RunID == "" {
		return ctx, func(o *engine.Outcome, err error) (*engine.Outcome, error) { return o, err }
	}
	ctx, cancel := context.WithCancelCause(ctx)
	x := &execution{run: ro.RunID, cancel: cancel}
	if l, ok := r.base.(lapser); ok {
		x.lapses.Store(l.Lapses())
	}
	r.ex.mu.Lock()
	set := r.ex.active[x.run]
	if set == nil {
		set = map[*execution]struct{}{}
		r.ex.active[x.run] = set
	}
	set[x] = struct{}{}
	r.ex.mu.Unlock()
	return context.WithValue(ctx, executionKey{}, x), func(o *engine.Outcome, err error) (*engine.Outcome, error) {
		r.ex.mu.Lock()
		delete(r.ex.active[x.run], x)
		if len(r.ex.active[x.run]) == 0 {
			delete(r.ex.active, x.run)
		}
		r.ex.mu.Unlock()
		if o == nil && err != nil && !x.dropped.Load() && errors.Is(context.Cause(ctx), errCancelledElsewhere) {
			// E.g. its pause was refused: the cancel committed first.
			o, err = &engine.Outcome{RunID: x.run, Workflow: workflow, Status: engine.StatusCancelled}, nil
		}
		cancelledOutcome(ctx, o) // before cancel(nil): it reads the cause
		cancel(nil)
		if x.dropped.Load() {
			return nil, &errLeftForTakeover{run: x.run}
		}
		return o, err
	}
}

// supersede drops every execution of run id on this replica that has not
// paused: the run was just claimed here (resumed after an interruption,
// answered, or its deadline applied) and is about to execute anew, so any
// such execution is stale — its replica's lease lapsed while it ran, the
// run was taken over, and it came back here. The store's fence cannot
// tell it from the new execution (both are this replica's, at the new
// epoch).
func (r *runs) supersede(id string) {
	r.ex.mu.Lock()
	defer r.ex.mu.Unlock()
	for x := range r.ex.active[id] {
		if !x.settled.Load() {
			x.drop()
		}
	}
}

// selfFence drops the execution behind ctx (this replica's lease is not
// live) and queues its run for release.
func (r *runs) selfFence(ctx context.Context) {
	x := executionOf(ctx)
	if x == nil {
		return
	}
	if !x.dropped.Load() {
		r.g.log.Warn("this replica's lease on the state store lapsed: it stops executing the run and leaves it for a takeover", "run_id", x.run)
	}
	x.drop()
	// Release the claim held now, the dropped execution's: not a later
	// one (the run may be taken over and claimed here again before the
	// release reaches the database).
	rel, ok := r.base.(releaser)
	if !ok {
		return
	}
	if epoch, held := rel.HeldEpoch(x.run); held {
		r.ex.mu.Lock()
		r.ex.unrelease[x.run] = epoch
		r.ex.mu.Unlock()
	}
}

// fenced drops the execution behind ctx after the store refused its
// write as fenced (another replica holds the run now).
func (r *runs) fenced(ctx context.Context, err error) {
	if x := executionOf(ctx); x != nil && errors.Is(err, state.ErrFenced) {
		if !x.dropped.Load() {
			r.g.log.Warn("the store fenced this replica out of a run (another replica took it over); dropping it", "run_id", x.run)
		}
		x.drop()
	}
}

// releaser is a driver that can give up a run it holds (PostgreSQL).
type releaser interface {
	HeldEpoch(id string) (int64, bool)
	Release(ctx context.Context, id string, epoch int64) error
}

// releaseLoop releases the runs this replica dropped while holding them,
// retrying until the database answers.
func (r *runs) releaseLoop(ctx context.Context) {
	rel, ok := r.base.(releaser)
	if !ok {
		return
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.ex.mu.Lock()
		claims := make(map[string]int64, len(r.ex.unrelease))
		maps.Copy(claims, r.ex.unrelease)
		r.ex.mu.Unlock()
		for id, epoch := range claims {
			if err := rel.Release(ctx, id, epoch); err != nil {
				if ctx.Err() == nil {
					r.g.log.Debug("releasing a dropped run (retrying)", "run_id", id, "err", err)
				}
				break // the database does not answer: retry all later
			}
			r.ex.mu.Lock()
			if r.ex.unrelease[id] == epoch {
				delete(r.ex.unrelease, id)
			}
			r.ex.mu.Unlock()
			r.g.log.Info("released a run this replica stopped executing; the sweep takes it over", "run_id", id)
		}
	}
}

// takeovers queues the runs this replica's sweep interrupted.
type takeovers struct {
	mu    sync.Mutex
	ids   []string
	ready chan struct{}
}

func newTakeovers() *takeovers { return &takeovers{ready: make(chan struct{}, 1)} }

// push is the store's OnTakeover hook: it never blocks.
func (q *takeovers) push(ids []string) {
	q.mu.Lock()
	q.ids = append(q.ids, ids...)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *takeovers) pop() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	ids := q.ids
	q.ids = nil
	return ids
}

// takeoverLoop continues the runs this replica took over, at most 8 at
// once (as deadlines are).
func (r *runs) takeoverLoop(ctx context.Context) {
	if r.takeovers == nil {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, 8)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.takeovers.ready:
		}
		for _, id := range r.takeovers.pop() {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				r.takeOver(ctx, id)
			}()
		}
	}
}

// takeOver continues a run this replica's sweep interrupted, when every
// step it had in flight is safe to repeat; otherwise it stays interrupted.
func (r *runs) takeOver(ctx context.Context, id string) {
	run, err := r.store.Get(ctx, id)
	if err != nil {
		if ctx.Err() == nil {
			r.g.log.Error("takeover: reading run", "run_id", id, "err", err)
		}
		return
	}
	if run.Status != state.StatusInterrupted {
		return // resumed, cancelled or claimed meanwhile
	}
	l, err := r.prepare(run)
	if err != nil {
		r.g.log.Error("takeover: the run cannot be continued here; it stays interrupted", "run_id", id, "err", err)
		return
	}
	if unsafe := engine.Unsafe(l.plan, l.cp); len(unsafe) > 0 {
		r.g.log.Warn("took over a run with steps in flight that are unsafe to repeat; it stays interrupted and waits for a decision",
			"run_id", id, "steps", unsafe)
		return
	}
	claimed, err := r.store.Resume(ctx, id, "vmcp")
	if err != nil {
		r.g.log.Debug("takeover: the run was claimed elsewhere", "run_id", id, "err", err)
		return
	}
	r.supersede(id) // a stale execution of it here, if any, stops
	if l, err = r.prepare(claimed); err != nil {
		r.finish(ctx, &engine.Outcome{RunID: id, Status: engine.StatusFailed, Err: &engine.RunError{Workflow: run.Workflow, Cause: err.Error()}})
		return
	}
	r.g.log.Info("took over a run whose replica stopped; re-running its in-flight steps (read-only or idempotent)",
		"run_id", id, "in_flight", run.InFlight)
	octx := asOwner(ctx, run.Owner)
	out, err := r.g.eng.Continue(withSurface(octx, "takeover"), l.plan, l.cp, false, &engine.RunOptions{RunID: id, Durable: true})
	switch {
	case isLeftForTakeover(err):
		r.g.log.Warn("takeover: this replica stopped executing the run in turn", "run_id", id)
	case err != nil:
		r.g.log.Error("takeover: continuing run", "run_id", id, "err", err)
		r.finish(octx, &engine.Outcome{RunID: id, Status: engine.StatusFailed, Err: &engine.RunError{Workflow: run.Workflow, Cause: err.Error()}})
	case out.Status != engine.StatusWaiting:
		r.finish(octx, out)
	}
	// A run that paused again waits for its answer like any other.
}

// asOwner makes a background continuation act for the run's owner:
// authorization (check_steps) sees the owner by name (groups and claims are
// not stored with a run), and outgoing credentials get the owner as
// subject without a token (token_exchange and pass_through refuse such a
// call with a clear error; service credentials apply).
func asOwner(ctx context.Context, owner string) context.Context {
	ctx = context.WithValue(ctx, principalKey{}, owner)
	ctx = context.WithValue(ctx, identityKey{}, &authz.Principal{Name: owner})
	return outauth.WithSubject(ctx, outauth.Subject{Principal: owner})
}
