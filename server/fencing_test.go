package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/steps"
)

// notLive is a store whose replica lease lapsed (PostgreSQL's Live).
type notLive struct{ state.Driver }

func (notLive) Live() bool { return false }

// A replica that lost its lease makes no backend call for a run's step
// (self-fencing); plain tool calls, which belong to no run, still go out.
func TestNoStepCallsWithoutLease(t *testing.T) {
	g := &Gateway{runs: &runs{store: notLive{}, base: notLive{}}}
	c := caller{g: g} // no manager: a call that got through would panic
	_, err := c.CallTool(t.Context(), &steps.Call{Backend: "kit", Tool: "write", Step: "second", Attempt: 1})
	if !errors.Is(err, errNotLive) {
		t.Fatalf("step call on a fenced replica: %v, want errNotLive", err)
	}
	if !(&runs{store: nil}).live() || !(*runs)(nil).live() {
		t.Fatal("a store without leases must count as live")
	}
}

// leaseStore is a real (bbolt) store whose replica lease the test turns
// off and on, and that records the runs released to the takeover.
type leaseStore struct {
	state.Driver
	live     atomic.Bool
	mu       sync.Mutex
	released []string
	// lapses counts Lapses calls when lapsing (a lease lapse between any
	// two looks); holds is what Holds answers.
	lapsing atomic.Bool
	lapses  atomic.Uint64
	holds   atomic.Bool
	// epoch is the claim this replica holds on the run (as PostgreSQL's
	// held map); down makes Release fail (the database does not answer),
	// releaseTries counts its calls; releasedAt records the epochs given up.
	epoch        atomic.Int64
	down         atomic.Bool
	releaseTries atomic.Int32
	releasedAt   []int64
}

func (s *leaseStore) Live() bool { return s.live.Load() }

func (s *leaseStore) Lapses() uint64 {
	if s.lapsing.Load() {
		return s.lapses.Add(1)
	}
	return s.lapses.Load()
}

func (s *leaseStore) Holds(context.Context, string) (bool, error) { return s.holds.Load(), nil }

func (s *leaseStore) HeldEpoch(string) (int64, bool) { return s.epoch.Load(), true }

func (s *leaseStore) Release(_ context.Context, id string, epoch int64) error {
	s.releaseTries.Add(1)
	if s.down.Load() {
		return errors.New("database unreachable")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = append(s.released, id)
	s.releasedAt = append(s.releasedAt, epoch)
	return nil
}

func (s *leaseStore) releasedRuns() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.released)
}

// A step refused because this replica's lease lapsed does not fail its
// run: the execution stops, writes nothing more, the caller is told the run
// was left for a takeover, the run stays running in the store, and it is
// released (so that a sweep takes it over even if this replica heartbeats
// again). Once live again, the replica runs workflows as before.
func TestSelfFencedStepLeavesRunForTakeover(t *testing.T) {
	_, c, ls := startLeaseDemo(t)
	run := leftForTakeover(t, c, ls)
	if !slices.Equal(run.InFlight, []string{"incident"}) {
		t.Errorf("self-fenced run: in flight %v, want its first step", run.InFlight)
	}

	ls.live.Store(true)
	asksConfirmPage(t, c)
}

// An execution during which the lease lapsed (and came back) goes on
// only if the store says this replica still holds its run.
func TestLeaseLapseDuringExecution(t *testing.T) {
	_, c, ls := startLeaseDemo(t)
	ls.live.Store(true)
	ls.lapsing.Store(true)
	ls.holds.Store(true)
	asksConfirmPage(t, c) // still held: goes on
	ls.holds.Store(false)
	leftForTakeover(t, c, ls) // taken over meanwhile: dropped
}

// A run self-fenced here, then claimed here again (taken over, answered,
// resumed) before the release reached the database, keeps its new claim:
// the release gives up only the claim the dropped execution had.
func TestReleaseSparesALaterClaim(t *testing.T) {
	_, c, ls := startLeaseDemo(t)
	ls.epoch.Store(1)
	ls.down.Store(true) // the release cannot reach the database yet
	res := callJSON(t, c, "investigate_incident", `{"incident_id":"INC-1042"}`)
	if !res.IsError || !strings.Contains(text(res), "left for a takeover") {
		t.Fatalf("a run whose step was self-fenced: %s, want it left for a takeover", text(res))
	}
	waitFor(t, func() bool { return ls.releaseTries.Load() > 0 })
	ls.epoch.Store(2) // meanwhile the run was interrupted and claimed here again
	ls.down.Store(false)
	waitFor(t, func() bool { return len(ls.releasedRuns()) > 0 })
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !slices.Equal(ls.releasedAt, []int64{1}) {
		t.Fatalf("released claims at epochs %v, want only the self-fenced execution's (1)", ls.releasedAt)
	}
}

func asksConfirmPage(t *testing.T, c *client.Client) {
	t.Helper()
	// The run gets to its question (this client cannot answer it).
	req := mcp.CallToolRequest{}
	req.Params.Name = "investigate_incident"
	req.Params.Arguments = json.RawMessage(`{"incident_id":"INC-1042"}`)
	if _, err := c.CallTool(t.Context(), req); err == nil || !strings.Contains(err.Error(), `"confirm_page"`) {
		t.Fatalf("a run on a live replica: %v, want it to ask confirm_page", err)
	}
}

// leftForTakeover starts investigate_incident, expects it to be left for
// a takeover without any write after its creation, and released.
func leftForTakeover(t *testing.T, c *client.Client, ls *leaseStore) *state.Run {
	t.Helper()
	res := callJSON(t, c, "investigate_incident", `{"incident_id":"INC-1042"}`)
	if !res.IsError || !strings.Contains(text(res), "left for a takeover") {
		t.Fatalf("a run whose step was self-fenced: %s (isError %v), want an error saying it was left for a takeover", text(res), res.IsError)
	}
	list, _, err := ls.List(t.Context(), state.Filter{Status: state.StatusRunning, Limit: 10})
	if err != nil || len(list) != 1 {
		t.Fatalf("running runs in the store: %v %v, want 1", list, err)
	}
	run, err := ls.Get(t.Context(), list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range run.History {
		if e.Kind != state.EventCreated {
			t.Errorf("self-fenced run has a later write in its history: %+v", e)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(ls.releasedRuns(), run.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("run %s was never released to the takeover (released %v)", run.ID, ls.releasedRuns())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return run
}

func startLeaseDemo(t *testing.T) (*Gateway, *client.Client, *leaseStore) {
	t.Helper()
	ls := &leaseStore{}
	g, srv := startDemoOn(t, func(d state.Driver) state.Driver { ls.Driver = d; return ls })
	return g, newClient(t, srv.URL+"/mcp"), ls
}

// An execution of a run still going on here when the run is claimed here
// again (its replica's lease lapsed during a long backend call, another
// replica took the run over and paused it, and its answer came to this
// replica) is stale: the claim drops it, so it makes no more calls and
// writes nothing under the new claim (the store's fencing is per replica,
// not per execution). An execution that already paused is not stale.
func TestClaimDropsAStaleExecution(t *testing.T) {
	g, c, ls := startLeaseDemo(t)
	ls.live.Store(true)
	asksConfirmPage(t, c)
	list, _, err := ls.List(t.Context(), state.Filter{Status: state.StatusWaiting, Limit: 10})
	if err != nil || len(list) != 1 {
		t.Fatalf("waiting runs: %v %v, want 1", list, err)
	}
	run, err := ls.Get(t.Context(), list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	ro := &engine.RunOptions{RunID: run.ID, Durable: true}
	staleCtx, staleEnd := g.runs.begin(t.Context(), ro, run.Workflow)
	pausedCtx, pausedEnd := g.runs.begin(t.Context(), ro, run.Workflow)
	executionOf(pausedCtx).settled.Store(true)

	ctx := context.WithValue(t.Context(), principalKey{}, run.Owner)
	if _, _, err := g.ResumeRun(ctx, run.ID, engine.Answer{Action: engine.ActionDecline}); err != nil {
		t.Fatalf("answering the run: %v", err)
	}
	select {
	case <-staleCtx.Done():
	default:
		t.Fatal("the stale execution goes on after the run was claimed again here")
	}
	if _, err := staleEnd(nil, nil); !isLeftForTakeover(err) {
		t.Fatalf("the stale execution ends with %v, want it left (dropped)", err)
	}
	if pausedCtx.Err() != nil {
		t.Fatal("the claim dropped an execution that had paused")
	}
	if _, err := pausedEnd(&engine.Outcome{RunID: run.ID, Status: engine.StatusWaiting}, nil); err != nil {
		t.Fatalf("the paused execution ends with %v", err)
	}
}

// deafStore loses every change hint (a NOTIFY that never arrived; the
// poll wakes only live waiters).
type deafStore struct{ state.Driver }

func (deafStore) Changes(context.Context) <-chan state.Change { return make(chan state.Change) }

// deafDemoRunning starts the demo on a store that loses every change hint
// and returns a run of investigate_incident running (answered).
func deafDemoRunning(t *testing.T) (*Gateway, *client.Client, *state.Run) {
	t.Helper()
	g, srv := startDemoOn(t, func(d state.Driver) state.Driver { return deafStore{d} })
	c := newClient(t, srv.URL+"/mcp")
	asksConfirmPage(t, c)
	ctx := t.Context()
	list, _, err := g.runs.store.List(ctx, state.Filter{Status: state.StatusWaiting, Limit: 10})
	if err != nil || len(list) != 1 {
		t.Fatalf("waiting runs: %v %v, want 1", list, err)
	}
	run, err := g.runs.store.Get(ctx, list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.runs.store.Claim(ctx, run.ID, run.Pending.Step, run.Pending.Seq, run.Owner, json.RawMessage(`{"action":"accept"}`)); err != nil {
		t.Fatal(err)
	}
	return g, c, run
}

// A run cancelled through the store while it executes here, whose hint
// never reached this process, learns it from its next write, which the
// store refuses: its context is cancelled as the hint would have, and it
// ends cancelled (not failed on "could not persist the run's progress").
func TestRefusedWriteStopsACancelledRun(t *testing.T) {
	g, _, run := deafDemoRunning(t)
	ctx := t.Context()
	xctx, end := g.runs.begin(ctx, &engine.RunOptions{RunID: run.ID, Durable: true}, run.Workflow)
	if err := g.runs.store.Cancel(ctx, run.ID, run.Owner); err != nil {
		t.Fatal(err)
	}
	cp := &engine.Checkpoint{Version: engine.CheckpointVersion, RunID: run.ID, Workflow: run.Workflow, InFlight: []string{"page"}}
	if err := (checkpointer{g}).SaveCheckpoint(xctx, cp); err == nil {
		t.Fatal("a checkpoint of a cancelled run was accepted")
	}
	if !errors.Is(context.Cause(xctx), errCancelledElsewhere) {
		t.Fatalf("after its write was refused, the cancelled run's execution goes on (cause %v)", context.Cause(xctx))
	}
	out, err := end(&engine.Outcome{RunID: run.ID, Workflow: run.Workflow, Status: engine.StatusFailed}, nil)
	if err != nil || out.Status != engine.StatusCancelled {
		t.Fatalf("the execution ends %+v, %v; want cancelled", out, err)
	}
}

// A cancel that commits just before the run's pause: the pause is refused,
// so the engine returns an error, not an outcome; the execution still ends
// cancelled (a tool result saying so, not a protocol error).
func TestCancelRacingAPauseEndsCancelled(t *testing.T) {
	g, _, run := deafDemoRunning(t)
	ctx := t.Context()
	xctx, end := g.runs.begin(ctx, &engine.RunOptions{RunID: run.ID, Durable: true}, run.Workflow)
	if err := g.runs.store.Cancel(ctx, run.ID, run.Owner); err != nil {
		t.Fatal(err)
	}
	cp := &engine.Checkpoint{Version: engine.CheckpointVersion, RunID: run.ID, Workflow: run.Workflow,
		Pending: &engine.Question{Step: "confirm_page", Message: "page?"}}
	err := (checkpointer{g}).SaveCheckpoint(xctx, cp)
	if err == nil {
		t.Fatal("the pause of a cancelled run was accepted")
	}
	out, err := end(nil, fmt.Errorf("saving the paused run: %w", err))
	if err != nil || out == nil || out.Status != engine.StatusCancelled || out.RunID != run.ID || !strings.Contains(out.Err.Error(), run.Workflow) {
		t.Fatalf("the execution ends %+v, %v; want the run cancelled", out, err)
	}
}
