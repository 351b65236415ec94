package server

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/telemetry"
)

// This file observes the state store: each transition's commit time
// (vmcp_state_commit_seconds), runs interrupted and taken over (audit
// run.interrupted and run.taken_over, vmcp_state_takeovers_total), and the
// time from an answer's claim to the resumed run's next backend call
// (vmcp_resume_seconds).

// driverName is the configured state driver (bbolt or postgres): a
// bounded label value.
func (g *Gateway) driverName() string {
	if g.cfg != nil && g.cfg.State.Driver.Value != "" {
		return g.cfg.State.Driver.Value
	}
	return dsl.DriverBbolt
}

// observeStore wraps st so that each transition is timed; st itself when
// metrics are off.
func (g *Gateway) observeStore(st state.Driver) state.Driver {
	if g.tel == nil || g.tel.Meter() == nil {
		return st
	}
	return &observedStore{Driver: st, tel: g.tel, driver: g.driverName()}
}

// observedStore times every transition of the driver it wraps. Reads
// (Get, List, deadlines) pass through untimed. It embeds only
// state.Driver: the driver's optional capabilities are asserted on
// runs.base, never on this wrapper.
type observedStore struct {
	state.Driver
	tel    *telemetry.T
	driver string
}

func (o *observedStore) done(ctx context.Context, op string, start time.Time, err error) {
	outcome := "ok"
	var te *state.TransitionError
	switch {
	case err == nil:
	case errors.Is(err, state.ErrFenced):
		outcome = "fenced"
	case errors.As(err, &te):
		outcome = "refused"
	default:
		outcome = "error"
	}
	o.tel.StateCommitted(ctx, o.driver, op, outcome, time.Since(start))
}

func (o *observedStore) Create(ctx context.Context, r *state.Run) error {
	start := time.Now()
	err := o.Driver.Create(ctx, r)
	o.done(ctx, "create", start, err)
	return err
}

func (o *observedStore) Checkpoint(ctx context.Context, id string, cp json.RawMessage, inFlight []string) error {
	start := time.Now()
	err := o.Driver.Checkpoint(ctx, id, cp, inFlight)
	o.done(ctx, "checkpoint", start, err)
	return err
}

func (o *observedStore) Pause(ctx context.Context, id string, cp json.RawMessage, q state.Question) (uint64, error) {
	start := time.Now()
	seq, err := o.Driver.Pause(ctx, id, cp, q)
	o.done(ctx, "pause", start, err)
	return seq, err
}

func (o *observedStore) Claim(ctx context.Context, id, step string, seq uint64, who string, answer json.RawMessage) (*state.Run, error) {
	start := time.Now()
	r, err := o.Driver.Claim(ctx, id, step, seq, who, answer)
	o.done(ctx, "claim", start, err)
	return r, err
}

func (o *observedStore) ClaimDeadline(ctx context.Context, due state.DueQuestion, answer json.RawMessage) (*state.Run, error) {
	start := time.Now()
	r, err := o.Driver.ClaimDeadline(ctx, due, answer)
	o.done(ctx, "claim_deadline", start, err)
	return r, err
}

func (o *observedStore) ClaimDue(ctx context.Context, now time.Time, max int, answer json.RawMessage) ([]*state.Run, error) {
	start := time.Now()
	rs, err := o.Driver.ClaimDue(ctx, now, max, answer)
	if err != nil || len(rs) > 0 { // an empty poll is not a commit
		o.done(ctx, "claim_due", start, err)
	}
	return rs, err
}

func (o *observedStore) Resume(ctx context.Context, id, who string) (*state.Run, error) {
	start := time.Now()
	r, err := o.Driver.Resume(ctx, id, who)
	o.done(ctx, "resume", start, err)
	return r, err
}

func (o *observedStore) Finish(ctx context.Context, id, status string, result json.RawMessage, errMsg string) error {
	start := time.Now()
	err := o.Driver.Finish(ctx, id, status, result, errMsg)
	o.done(ctx, "finish", start, err)
	return err
}

func (o *observedStore) Cancel(ctx context.Context, id, who string) error {
	start := time.Now()
	err := o.Driver.Cancel(ctx, id, who)
	o.done(ctx, "cancel", start, err)
	return err
}

func (o *observedStore) AppendHistory(ctx context.Context, id string, ev state.Event) error {
	start := time.Now()
	err := o.Driver.AppendHistory(ctx, id, ev)
	o.done(ctx, "append_history", start, err)
	return err
}

func (o *observedStore) Recover(ctx context.Context) ([]state.Interrupted, error) {
	start := time.Now()
	rs, err := o.Driver.Recover(ctx)
	o.done(ctx, "recover", start, err)
	return rs, err
}

func (o *observedStore) Prune(ctx context.Context, before time.Time) (int, error) {
	start := time.Now()
	n, err := o.Driver.Prune(ctx, before)
	o.done(ctx, "prune", start, err)
	return n, err
}

// noteInterrupted audits the runs a Recover interrupted, after its
// commit: run.interrupted for each and, for a run another replica held,
// run.taken_over first. me is this replica's id ("" with bbolt).
func (g *Gateway) noteInterrupted(ctx context.Context, me string, rs []state.Interrupted) {
	if g.tel == nil {
		return
	}
	for _, r := range rs {
		if r.Holder != "" && r.Holder != me {
			g.auditTakeover(ctx, r.Workflow, r.ID, r.Holder, me)
		}
		g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditRunInterrupted, Outcome: "failure",
			Principal: &telemetry.Principal{Sub: "vmcp", Auth: "none"},
			Target:    &telemetry.Target{Workflow: r.Workflow, Run: r.ID},
			Detail:    map[string]any{"owner": r.Owner, "in_flight": r.InFlight}})
	}
}

// auditTakeover counts and audits a run this replica (me) took over from
// fromReplica (whose lease expired), after the commit that interrupted it.
func (g *Gateway) auditTakeover(ctx context.Context, workflow, runID, fromReplica, me string) {
	if g.tel == nil {
		return
	}
	g.tel.TakenOver(ctx, g.driverName(), 1)
	g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditRunTakenOver,
		Principal: &telemetry.Principal{Sub: "vmcp", Auth: "none"},
		Target:    &telemetry.Target{Workflow: workflow, Run: runID},
		Detail:    map[string]any{"from_replica": fromReplica, "replica": me}})
}

// replicaID is this process's replica id with PostgreSQL ("" with bbolt).
func (g *Gateway) replicaID() string {
	if g.runs == nil {
		return ""
	}
	return storeReplica(g.runs.base)
}

func storeReplica(st state.Driver) string {
	if pg, ok := st.(interface{ ReplicaID() string }); ok {
		return pg.ReplicaID()
	}
	return ""
}

// resumeClock marks a resumed segment: its first backend call records
// vmcp_resume_seconds once.
type resumeClock struct {
	start time.Time
	done  atomic.Bool
}

type resumeClockKey struct{}

func withResumeClock(ctx context.Context) context.Context {
	return context.WithValue(ctx, resumeClockKey{}, &resumeClock{start: time.Now()})
}

// observeResume records the first backend call of a resumed segment.
func (g *Gateway) observeResume(ctx context.Context) {
	c, ok := ctx.Value(resumeClockKey{}).(*resumeClock)
	if !ok || !c.done.CompareAndSwap(false, true) {
		return
	}
	g.tel.Resumed(ctx, g.driverName(), time.Since(c.start))
}

// noteSwept audits the runs PostgreSQL's background sweep took over.
func (g *Gateway) noteSwept(ctx context.Context, rs []state.Interrupted) {
	g.noteInterrupted(ctx, g.replicaID(), rs)
}
