package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/elicitation"
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/steps"
)

// runs ties composite runs to the durable store: every run is created in
// the store before it executes, checkpointed at each step transition,
// paused (persisted) before its question is delivered, and finished with
// its outcome. Nothing waiting for a human lives only in memory.
type runs struct {
	g     *Gateway
	store state.Driver // the driver, timed by telemetry (telemetry_store.go)
	// base is the driver without the telemetry wrapper: type-assert the
	// driver's optional capabilities (Live, lapser, releaser,
	// state.Sessions, *postgres.Store) on it, never on store.
	base   state.Driver
	sealer *elicitation.Sealer

	// plans caches plans compiled from stored definitions, by hash.
	plansMu sync.Mutex
	plans   map[string]*engine.Plan

	// unborn are new runs not in the store yet: each is created by its
	// first transition (engine.RunOptions.Unrecorded), which the engine
	// makes before any step starts.
	unbornMu sync.Mutex
	unborn   map[string]*state.Run

	// watch: live waiters and local executions, woken by change hints
	// (watch.go).
	watch watchers

	// ex tracks executions on this replica (takeover.go); takeovers
	// queues the runs this replica's sweep took over (PostgreSQL).
	ex        executions
	takeovers *takeovers
}

// openRuns opens the store (the bbolt file at path, or the PostgreSQL
// database of state.driver postgres), recovers it (runs that were
// executing become interrupted) and loads the token key.
func openRuns(ctx context.Context, g *Gateway, path string, retention time.Duration) (*runs, error) {
	tk := newTakeovers()
	st, err := openStore(ctx, g, path, retention, tk.push)
	if err != nil {
		return nil, err
	}
	if g.wrapStore != nil {
		st = g.wrapStore(st)
	}
	base := st // for the driver's optional capabilities (lapser, releaser, state.Sessions)
	st = g.observeStore(st)
	n, err := st.Recover(ctx)
	g.noteInterrupted(ctx, storeReplica(base), n)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	if len(n) > 0 {
		g.log.Warn("runs were executing when vmcp stopped; they are interrupted and wait for a resume", "runs", len(n))
	}
	key, err := st.Key(ctx)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	sealer, err := elicitation.NewSealer(key)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	return &runs{g: g, store: st, base: base, sealer: sealer, plans: map[string]*engine.Plan{}, unborn: map[string]*state.Run{},
		ex: executions{active: map[string]map[*execution]struct{}{}, unrelease: map[string]int64{}}, takeovers: tk}, nil
}

func (r *runs) close() error { return r.store.Close() }

// openStore opens the configured state driver. onTakeover receives the
// runs the PostgreSQL sweep of this replica takes over (bbolt: none; a
// restart leaves its interrupted runs to an explicit resume, SPEC §5).
func openStore(ctx context.Context, g *Gateway, path string, retention time.Duration, onTakeover func([]string)) (state.Driver, error) {
	var sc dsl.StateConfig
	if g.cfg != nil {
		sc = g.cfg.State
	}
	if sc.Driver.Value != dsl.DriverPostgres {
		return state.Open(path, &state.Options{Retention: retention, Logger: g.log})
	}
	p := sc.Postgres
	var keys [][]byte
	for i, k := range p.TokenKeys {
		b, err := dsl.DecodeTokenKey(k.Value)
		if err != nil {
			return nil, fmt.Errorf("state.postgres.token_keys[%d]: %w", i, err)
		}
		keys = append(keys, b)
	}
	st, err := postgres.Open(ctx, sc.DSN.Value, &postgres.Options{Schema: p.Schema.Value, MaxConns: int32(p.MaxConns.Value),
		LeaseTTL: p.LeaseTTL.Value, Heartbeat: p.Heartbeat.Value, SweepInterval: p.SweepInterval.Value,
		StatementTimeout: p.StatementTimeout.Value, Retention: retention, TokenKeys: keys, ReplicaID: p.ReplicaID.Value,
		ListenDSN: p.ListenDSN.Value, Version: g.ver, Address: g.cfg.Listen.Value, Logger: g.log, OnTakeover: onTakeover, OnSweep: g.noteSwept})
	if err != nil {
		return nil, err
	}
	g.log.Info("state in PostgreSQL", "schema", cmp.Or(p.Schema.Value, postgres.DefaultSchema), "replica", st.ReplicaID())
	return st, nil
}

// checkpointer is the engine's Store: each checkpoint is one state
// transition in the store.
type checkpointer struct{ g *Gateway }

func (c checkpointer) SaveCheckpoint(ctx context.Context, cp *engine.Checkpoint) (err error) {
	r := c.g.runs
	if x := executionOf(ctx); x != nil {
		if x.dropped.Load() {
			// Dropped (self-fenced or taken over): no more writes.
			return &errLeftForTakeover{run: cp.RunID}
		}
		defer func() {
			r.fenced(ctx, err)
			r.refusedCancelled(ctx, err)
		}()
	}
	ctx = context.WithoutCancel(ctx) // a transition once started is recorded
	b, err := checkpointJSON(ctx, cp)
	if err != nil {
		return err
	}
	var q *state.Question
	if cp.Pending != nil {
		q = &state.Question{Step: cp.Pending.Step, Message: cp.Pending.Message, Schema: cp.Pending.Schema, Deadline: cp.Pending.Deadline}
	}
	start := time.Now()
	if run := r.take(cp.RunID); run != nil {
		// The run's first transition creates it: running with its
		// first steps in flight, or waiting on its first question.
		orig := *run
		defer func() {
			if err != nil { // finish may still record it
				r.unbornMu.Lock()
				r.unborn[orig.ID] = &orig
				r.unbornMu.Unlock()
			}
		}()
		run.Checkpoint = b
		if q != nil {
			run.Status, run.Pending = state.StatusWaiting, q
		} else {
			run.InFlight = cp.InFlight
		}
		// Settled before the commit: once it is in, an answer may claim
		// the run at once, and its supersede must spare this execution.
		settle(ctx, q != nil)
		if err = r.store.Create(ctx, run); err != nil {
			settle(ctx, false)
			return fmt.Errorf("recording the run: %w", err)
		}
		if q != nil {
			cp.Pending.Seq = run.Seq
			c.g.notePauseCommitted(ctx, cp, run.Seq, time.Since(start))
		}
		return nil
	}
	if q == nil {
		return r.store.Checkpoint(ctx, cp.RunID, b, cp.InFlight)
	}
	settle(ctx, true) // before the commit, as above
	seq, err := r.store.Pause(ctx, cp.RunID, b, *q)
	if err != nil {
		settle(ctx, false)
		return err
	}
	cp.Pending.Seq = seq
	c.g.notePauseCommitted(ctx, cp, seq, time.Since(start))
	return nil
}

// definition returns the workflow source a run stores: the file for a
// workflow file, the workflow's own YAML for an inline composite.
func definition(p *engine.Plan, wf *dsl.Workflow) (name string, src []byte) {
	if wf != nil && wf.Src != nil {
		// A workflow file's mapping starts at column 1; an inline
		// composite sits indented inside the config: store its own YAML.
		if wf.Node != nil && wf.Node.Column == 1 {
			return wf.Src.Name, wf.Src.Data
		}
		if wf.Node != nil {
			if b, err := yamlMarshal(wf.Node); err == nil {
				return wf.Src.Name + "#" + p.Name, b
			}
		}
	}
	return p.Name, nil
}

// create prepares a new run; its first transition writes it (before any
// of its steps starts, or with its first question), so a run that asks
// first costs one commit, not two. Run it with RunOptions.Unrecorded, and
// drop it when the call ends (a no-op once the run is in the store).
func (r *runs) create(p *engine.Plan, args json.RawMessage, owner string) string {
	name, src := r.g.definitionOf(p)
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	run := &state.Run{ID: state.NewRunID(), Workflow: p.Name, Owner: owner, Status: state.StatusRunning,
		Definition: src, DefinitionName: name, Params: args}
	r.unbornMu.Lock()
	r.unborn[run.ID] = run
	r.unbornMu.Unlock()
	return run.ID
}

// errNotLive refuses a workflow step's backend call on a replica that
// could not renew its lease (PostgreSQL driver); the run's execution here
// is dropped and the run left for a takeover (takeover.go).
var errNotLive = errors.New("this vmcp replica could not renew its lease on the shared state store, so it makes no backend calls for runs (another replica may take the run over)")

// live reports whether this process may act for its runs: always with
// bbolt; with PostgreSQL, while its lease was renewed within half a lease
// (self-fencing: a replica cut off from the database stops calling
// backends before another can take its runs over).
func (r *runs) live() bool {
	if r == nil {
		return true
	}
	if l, ok := r.base.(interface{ Live() bool }); ok {
		return l.Live()
	}
	return true
}

// take removes and returns a run not yet in the store (nil if it is).
func (r *runs) take(id string) *state.Run {
	r.unbornMu.Lock()
	defer r.unbornMu.Unlock()
	run := r.unborn[id]
	delete(r.unborn, id)
	return run
}

// drop forgets a run that never reached the store.
func (r *runs) drop(id string) { r.take(id) }

// finish records a final outcome.
func (r *runs) finish(ctx context.Context, out *engine.Outcome) {
	if out.RunID == "" {
		return
	}
	var result json.RawMessage
	if out.Output != nil {
		result, _ = steps.EncodeJSON(out.Output)
	}
	msg := ""
	if out.Err != nil {
		msg = out.Err.Error()
	}
	if run := r.take(out.RunID); run != nil {
		// Finished before any step started (a failed condition, bad
		// arguments, everything skipped): recorded all the same.
		if err := r.store.Create(context.WithoutCancel(ctx), run); err != nil {
			r.g.log.ErrorContext(ctx, "recording the run", "run_id", out.RunID, "err", err)
			return
		}
	}
	if err := r.store.Finish(context.WithoutCancel(ctx), out.RunID, string(out.Status), result, msg); err != nil {
		if te := (*state.TransitionError)(nil); errors.As(err, &te) && te.Status == state.StatusCancelled {
			return // cancelled through the store: that was its final transition
		}
		if errors.Is(err, state.ErrFenced) {
			r.g.log.WarnContext(ctx, "the run was taken over by another replica; its outcome here is dropped", "run_id", out.RunID, "status", out.Status)
			return
		}
		r.g.log.ErrorContext(ctx, "recording the run's outcome", "run_id", out.RunID, "err", err)
		return
	}
	r.g.noteFinished(ctx, out.Workflow, out.RunID, string(out.Status))
}

// token seals a single-use resume token for a run's pending question,
// bound to the pause number the store gave it (q.Seq, set when the pause
// was committed; read back from the store only when unknown).
func (r *runs) token(ctx context.Context, runID, owner string, q *engine.Question) (string, error) {
	seq := q.Seq
	if seq == 0 {
		run, err := r.store.Get(ctx, runID)
		if err != nil {
			return "", err
		}
		seq = run.Seq
	}
	exp := q.Deadline
	if exp.IsZero() {
		exp = time.Now().Add(7 * 24 * time.Hour)
	}
	return r.sealer.Seal(elicitation.Claims{Run: runID, Step: q.Step, Owner: owner, Seq: seq, Expiry: exp})
}

// loaded is a run read back from the store, ready to continue.
type loaded struct {
	run  *state.Run
	plan *engine.Plan
	cp   *engine.Checkpoint
}

// load reads a run the caller owns, with its plan (from the definition it
// started with) and checkpoint.
func (r *runs) load(ctx context.Context, id, owner string) (*loaded, error) {
	run, err := r.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if run.Owner != owner {
		r.g.noteDenied(ctx, run, "not_owner")
		// Not yours is reported exactly like not there.
		return nil, &state.TransitionError{Op: "get", RunID: id, Err: state.ErrNotFound}
	}
	return r.prepare(run)
}

// prepare is a run read from the store with its plan (from the definition
// it started with) and checkpoint.
func (r *runs) prepare(run *state.Run) (*loaded, error) {
	id := run.ID
	p, err := r.planFor(run)
	if err != nil {
		return nil, err
	}
	l := &loaded{run: run, plan: p}
	if len(run.Checkpoint) > 0 {
		if l.cp, err = engine.DecodeCheckpoint(run.Checkpoint); err != nil {
			return nil, fmt.Errorf("run %s: %w", id, err)
		}
	} else {
		var params map[string]any
		if v, err := steps.DecodeJSON(run.Params); err == nil {
			params, _ = v.(map[string]any)
		}
		l.cp = &engine.Checkpoint{Version: engine.CheckpointVersion, RunID: id, Workflow: run.Workflow, Params: params, Steps: map[string]*engine.StepState{}}
	}
	return l, nil
}

// planFor compiles the definition a run started with (cached by hash).
func (r *runs) planFor(run *state.Run) (*engine.Plan, error) {
	if len(run.Definition) == 0 {
		if p := r.g.cat.Load().plans[run.Workflow]; p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("run %s: workflow %q is not loaded and the run has no stored definition", run.ID, run.Workflow)
	}
	key := run.DefinitionHash // the store's SHA-256 of the definition, hex
	if key == "" {
		sum := sha256.Sum256(run.Definition)
		key = hex.EncodeToString(sum[:])
	}
	r.plansMu.Lock()
	p := r.plans[key]
	r.plansMu.Unlock()
	if p != nil {
		return p, nil
	}
	name := run.DefinitionName
	wf, ds := dsl.LoadWorkflow(name, run.Definition)
	if len(ds) > 0 || wf == nil {
		return nil, fmt.Errorf("run %s: its stored definition no longer loads: %v", run.ID, ds)
	}
	p, ds = engine.Compile(wf, &engine.CompileOptions{Catalog: r.g.engineCatalog()})
	if len(ds) > 0 {
		return nil, fmt.Errorf("run %s: the workflow it started with no longer compiles against the backends:\n%s", run.ID, indent(ds.Error()))
	}
	r.plansMu.Lock()
	r.plans[key] = p
	r.plansMu.Unlock()
	return p, nil
}

// forgetPlans drops cached plans (the catalogue changed).
func (r *runs) forgetPlans() {
	r.plansMu.Lock()
	r.plans = map[string]*engine.Plan{}
	r.plansMu.Unlock()
}

// claim validates an answer against the pending question, then claims the
// run for it (waiting → running, one commit; a second answer is refused).
func (r *runs) claim(ctx context.Context, l *loaded, step string, seq uint64, who string, a engine.Answer) error {
	if err := engine.ValidateAnswer(l.plan, l.cp, a); err != nil {
		if engine.IsInvalidAnswer(err) {
			detail, _ := json.Marshal(map[string]any{"reason": err.Error()})
			_ = r.store.AppendHistory(ctx, l.run.ID, state.Event{Who: who, Kind: state.EventRejected, Step: step, Detail: detail})
			r.g.noteAnswer(ctx, l.run, step, a, err, time.Time{})
		}
		return err
	}
	ans, _ := json.Marshal(a)
	claimed, err := r.store.Claim(ctx, l.run.ID, step, seq, who, ans)
	if err != nil {
		return err
	}
	r.supersede(l.run.ID) // a stale execution of it here, if any, stops
	asked := l.run.Updated
	l.run = claimed
	r.g.noteAnswer(ctx, claimed, step, a, nil, asked)
	return nil
}

// pendingOf returns a waiting run's step and pause number.
func pendingOf(run *state.Run) (string, uint64, error) {
	if run.Status != state.StatusWaiting || run.Pending == nil {
		return "", 0, &state.TransitionError{Op: "answer", RunID: run.ID, Status: run.Status, Err: state.ErrNotWaiting}
	}
	return run.Pending.Step, run.Pending.Seq, nil
}

// isNotFound reports a run that does not exist (or is not the caller's).
func isNotFound(err error) bool { return errors.Is(err, state.ErrNotFound) }

// deadlineWorkers is how many runs whose deadline passed continue at once
// in this process. A due question is claimed only when a worker is free
// for it, so a claimed run always starts at once (on shutdown none is left
// claimed and not started), and slow on_cancel paths hold up further
// claims only when all of them are busy.
const deadlineWorkers = 32

// sweepDeadlines applies on_cancel to every question whose deadline has
// passed, including deadlines that passed while vmcp was down. One loop
// for all runs: no goroutine or timer per waiting run. Due questions are
// claimed up to 100 per commit (ClaimDue: once across every process
// sharing the store), as many as there are free workers; each claimed run
// continues on its own goroutine.
func (r *runs) sweepDeadlines(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	freed := make(chan struct{}, 1) // a worker finished
	var busy atomic.Int64
	timeout, _ := json.Marshal(engine.Answer{Action: engine.ActionCancel, Timeout: true})
	for {
		wait := time.Second
		var onFreed <-chan struct{}
		if busy.Load() >= deadlineWorkers {
			onFreed = freed // all busy: claim again when one finishes
		} else if at, ok, err := r.store.NextDeadline(ctx); err == nil && ok {
			wait = min(max(time.Until(at), 10*time.Millisecond), time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-onFreed:
			t.Stop()
		}
		for {
			want := min(100, int(deadlineWorkers-busy.Load()))
			if want <= 0 {
				break
			}
			claimed, err := r.store.ClaimDue(ctx, time.Now(), want, timeout)
			if err != nil {
				if ctx.Err() == nil {
					r.g.log.Error("claiming due questions", "err", err)
				}
				break
			}
			for _, run := range claimed {
				r.supersede(run.ID) // a stale execution of it here, if any, stops
				busy.Add(1)
				wg.Go(func() {
					defer func() {
						busy.Add(-1)
						select {
						case freed <- struct{}{}:
						default:
						}
					}()
					r.fireDeadline(ctx, run)
				})
			}
			if len(claimed) < want {
				break
			}
		}
	}
}

// fireDeadline continues a run whose question's deadline passed (already
// claimed with the time-out answer) by applying on_cancel. No caller is
// behind it (authz and outgoing credentials see none).
func (r *runs) fireDeadline(ctx context.Context, run *state.Run) {
	ctx = withoutCaller(ctx)
	step := ""
	if n := len(run.History); n > 0 {
		step = run.History[n-1].Step
	}
	r.g.log.Info("question deadline passed; applying on_cancel", "run_id", run.ID, "step", step)
	l, err := r.prepare(run)
	if err != nil {
		r.g.log.Error("deadline: loading run", "run_id", run.ID, "err", err)
		r.finish(ctx, &engine.Outcome{RunID: run.ID, Status: engine.StatusFailed, Err: &engine.RunError{Workflow: run.Workflow, Cause: err.Error()}})
		return
	}
	a := engine.Answer{Action: engine.ActionCancel, Timeout: true}
	asked := run.Updated
	for i := len(run.History) - 1; i >= 0; i-- {
		if run.History[i].Kind == state.EventPaused {
			asked = run.History[i].At
			break
		}
	}
	r.g.tel.Answered(ctx, run.Workflow, "expired", "deadline", time.Since(asked))
	out, err := r.g.eng.Resume(ctx, l.plan, l.cp, a, &engine.RunOptions{RunID: run.ID, Durable: true})
	if isLeftForTakeover(err) {
		r.g.log.Warn("deadline: this replica stopped executing the run; it is left for a takeover", "run_id", run.ID)
		return
	}
	if err != nil {
		r.g.log.Error("deadline: resuming run", "run_id", run.ID, "err", err)
		r.finish(ctx, &engine.Outcome{RunID: run.ID, Status: engine.StatusFailed, Err: &engine.RunError{Workflow: run.Workflow, Cause: err.Error()}})
		return
	}
	if out.Status != engine.StatusWaiting {
		r.finish(ctx, out)
	}
}

// pruneLoop deletes finished runs past retention, hourly.
func (r *runs) pruneLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := r.store.Prune(ctx, time.Time{}); err != nil && ctx.Err() == nil {
			r.g.log.Error("pruning finished runs", "err", err)
		} else if n > 0 {
			r.g.log.Info("pruned finished runs past retention", "runs", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
