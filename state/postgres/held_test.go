package postgres_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

// dbClock reads PostgreSQL's clock_timestamp().
func dbClock(t *testing.T, s *postgres.Store) time.Time {
	t.Helper()
	var now time.Time
	if err := s.Pool().QueryRow(t.Context(), `SELECT clock_timestamp()`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now.UTC()
}

// checkHistory fails unless the run's events are in time order, none
// after the database's clock at end.
func checkHistory(t *testing.T, r *state.Run, end time.Time) {
	t.Helper()
	for i, ev := range r.History {
		if i > 0 && ev.At.Before(r.History[i-1].At) {
			t.Errorf("event %d (%s) at %s, before event %d (%s) at %s", i, ev.Kind, ev.At, i-1, r.History[i-1].Kind, r.History[i-1].At)
		}
		if ev.At.After(end) {
			t.Errorf("event %d (%s) at %s, after the database's clock %s", i, ev.Kind, ev.At, end)
		}
	}
}

// heldRun is a replica with the default step-row threshold (the tests'
// small checkpoints are stored whole) and a run it created and holds.
func heldRun(t *testing.T, opts ...func(*postgres.Options)) (*postgres.Store, *state.Run) {
	t.Helper()
	dsn, o := freshSchema(t)
	o.StepRowsAbove = 0
	for _, f := range opts {
		f(o)
	}
	s := replica(t, dsn, *o)
	r := statetest.NewRun("alice", "deploy")
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	return s, r
}

// checkKept fails unless the replica keeps run id's document exactly as
// stored, and the run kept beside it encodes to those bytes (want: whether
// a copy should be kept at all).
func checkKept(t *testing.T, s *postgres.Store, id string, want bool) {
	t.Helper()
	doc, re, ok := s.KeptDoc(id)
	if ok != want {
		t.Fatalf("run %s: document kept %v, want %v", id, ok, want)
	}
	if !ok {
		return
	}
	var stored []byte
	if err := s.Pool().QueryRow(t.Context(), `SELECT doc FROM vmcp_runs WHERE id = $1`, id).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if string(doc) != string(stored) {
		t.Errorf("kept document\n%s\nstored\n%s", doc, stored)
	}
	if string(re) != string(doc) {
		t.Errorf("the kept run encodes to\n%s\nnot its document\n%s", re, doc)
	}
}

// The transitions of a run this replica holds, with its checkpoint stored
// whole, take the one-round-trip path, and store exactly what the usual
// path stores: the run reads back the same, its history in database time.
func TestHeldTransitionsInOneRoundTrip(t *testing.T) {
	dsn, o := freshSchema(t)
	o.StepRowsAbove = 0 // the default threshold (8 KiB): these checkpoints are stored whole
	s := replica(t, dsn, *o)
	ctx := t.Context()
	first := statetest.NewRun("alice", "deploy")
	if err := s.Create(ctx, first); err != nil { // reads the database's clock
		t.Fatal(err)
	}
	before := s.FastCreates()
	r := statetest.NewRun("alice", "deploy")
	if err := s.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if s.FastCreates()-before != 1 {
		t.Error("a create with a recent reading of the database's clock took two round trips")
	}
	if err := s.Create(ctx, r); !errors.Is(err, state.ErrExists) {
		t.Errorf("the same run created twice: %v", err)
	}
	checkKept(t, s, r.ID, true)
	before = s.FastTransitions()
	cp := json.RawMessage(`{"version":1,"steps":{"a":{"status":"completed","output":"x"}}}`)
	if err := s.Checkpoint(ctx, r.ID, cp, []string{"b"}); err != nil {
		t.Fatal(err)
	}
	checkKept(t, s, r.ID, true)
	if err := s.AppendHistory(ctx, r.ID, state.Event{Kind: "note", Step: "b", Detail: json.RawMessage(`{"k":[1,2.50,"\u00e9"]}`)}); err != nil {
		t.Fatal(err)
	}
	checkKept(t, s, r.ID, true)
	seq, err := s.Pause(ctx, r.ID, cp, state.Question{Step: "approve", Message: "ok?"})
	if err != nil || seq != 1 {
		t.Fatalf("pause: %d, %v", seq, err)
	}
	if got := s.FastTransitions() - before; got != 3 {
		t.Errorf("%d of 3 transitions took one round trip", got)
	}
	checkKept(t, s, r.ID, false) // waiting: held by nobody
	got, err := s.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != state.StatusWaiting || got.Pending == nil || got.Pending.Step != "approve" || string(got.Checkpoint) != string(cp) || len(got.InFlight) != 0 {
		t.Fatalf("stored run: status %s, pending %+v, checkpoint %s, in flight %v", got.Status, got.Pending, got.Checkpoint, got.InFlight)
	}
	var kinds []string
	for _, ev := range got.History {
		kinds = append(kinds, ev.Kind)
	}
	if fmt.Sprint(kinds) != "[created note paused]" {
		t.Errorf("history %v", kinds)
	}
	checkHistory(t, got, dbClock(t, s))
	// A waiting run is held by nobody: the answer takes the usual path.
	before = s.FastTransitions()
	if _, err := s.Claim(ctx, r.ID, "approve", 1, "alice", json.RawMessage(`{"approve":true}`)); err != nil {
		t.Fatal(err)
	}
	checkKept(t, s, r.ID, true) // the answering replica holds it
	if err := s.Finish(ctx, r.ID, state.StatusCompleted, json.RawMessage(`{"ok":true}`), ""); err != nil {
		t.Fatal(err)
	}
	if got := s.FastTransitions() - before; got != 1 {
		t.Errorf("claim and finish: %d took one round trip, want 1 (the finish)", got)
	}
	checkKept(t, s, r.ID, false)
	if got, err := s.Get(ctx, r.ID); err != nil || got.Status != state.StatusCompleted || string(got.Result) != `{"ok":true}` {
		t.Fatalf("finished run: %+v, %v", got, err)
	}
}

// What another replica changed in a run this replica holds is never
// overwritten from this replica's copy: the one-round-trip write matches
// no row and the transition runs the usual way, on the stored run.
func TestHeldCopyNeverOverwritesAnotherReplica(t *testing.T) {
	dsn, o := freshSchema(t)
	o.StepRowsAbove = 0
	a, b := replica(t, dsn, *o), replica(t, dsn, *o)
	ctx := t.Context()

	// B appends an event (no fencing: any replica may), then A pauses.
	r := statetest.NewRun("alice", "deploy")
	if err := a.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := b.AppendHistory(ctx, r.ID, state.Event{Kind: "note", Who: "b"}); err != nil {
		t.Fatal(err)
	}
	before := a.FastTransitions()
	if _, err := a.Pause(ctx, r.ID, nil, state.Question{Step: "approve", Message: "ok?"}); err != nil {
		t.Fatal(err)
	}
	if n := a.FastTransitions() - before; n != 0 {
		t.Errorf("pause after another replica's write took one round trip (%d)", n)
	}
	got, err := a.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.History) != 3 || got.History[1].Who != "b" || got.History[2].Kind != state.EventPaused {
		t.Fatalf("history %+v: the other replica's event is lost", got.History)
	}

	// B cancels a run A holds; A's next writes are refused as on the
	// usual path, and the run stays cancelled.
	r = statetest.NewRun("alice", "deploy")
	if err := a.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := a.Checkpoint(ctx, r.ID, json.RawMessage(`{"n":1}`), nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Cancel(ctx, r.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Pause(ctx, r.ID, nil, state.Question{Step: "approve", Message: "ok?"}); !errors.Is(err, state.ErrNotRunning) {
		t.Fatalf("pause of a run cancelled by another replica: %v", err)
	}
	if err := a.Finish(ctx, r.ID, state.StatusCompleted, nil, ""); !errors.Is(err, state.ErrNotRunning) {
		t.Fatalf("finish of a run cancelled by another replica: %v", err)
	}
	if got, err := a.Get(ctx, r.ID); err != nil || got.Status != state.StatusCancelled || got.Finished.IsZero() {
		t.Fatalf("cancelled run after the holder's late writes: %+v, %v", got, err)
	}
}

// Concurrent transitions of one held run (parallel steps appending
// history) all apply: of two one-round-trip writes from the same copy,
// the second matches no row and runs the usual way.
func TestHeldConcurrentTransitionsLoseNothing(t *testing.T) {
	s, r := heldRun(t)
	ctx := t.Context()
	const workers, each = 4, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if err := s.AppendHistory(ctx, r.ID, state.Event{Kind: "note", Step: fmt.Sprintf("w%d-%d", w, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, err := s.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range got.History[1:] {
		if seen[ev.Step] {
			t.Errorf("event %s twice", ev.Step)
		}
		seen[ev.Step] = true
	}
	if len(seen) != workers*each {
		t.Errorf("%d of %d events stored", len(seen), workers*each)
	}
	checkHistory(t, got, dbClock(t, s))
	t.Logf("%d of %d appends took one round trip", s.FastTransitions(), workers*each)
}

// The one-round-trip path takes its time from the database's clock as
// last read; if that estimate is off (here: set 10 s ahead), the database
// refuses the write and the usual path runs with the database's own time.
func TestHeldClockIsCheckedByTheDatabase(t *testing.T) {
	// No heartbeat during the test: only the test's own reads the clock.
	s, r := heldRun(t, func(o *postgres.Options) { o.LeaseTTL, o.Heartbeat = time.Hour, 20*time.Minute })
	ctx := t.Context()
	s.SkewClock(10 * time.Second)
	before := s.FastTransitions()
	if _, err := s.Pause(ctx, r.ID, nil, state.Question{Step: "approve", Message: "ok?"}); err != nil {
		t.Fatal(err)
	}
	if n := s.FastTransitions() - before; n != 0 {
		t.Errorf("a pause timed 10 s in the database's future took one round trip")
	}
	got, err := s.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkHistory(t, got, dbClock(t, s))

	// A heartbeat reads the database's clock again: the next transition
	// of a held run takes one round trip.
	held := statetest.NewRun("alice", "deploy")
	if err := s.Create(ctx, held); err != nil {
		t.Fatal(err)
	}
	s.SkewClock(10 * time.Second)
	if err := s.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	before = s.FastTransitions()
	if err := s.Checkpoint(ctx, held.ID, json.RawMessage(`{"n":1}`), nil); err != nil {
		t.Fatal(err)
	}
	if s.FastTransitions()-before != 1 {
		t.Error("after a heartbeat, a held run's checkpoint took two round trips")
	}

	// The same for a create (the pause's locking read set the clock
	// right; skew it again).
	s.SkewClock(10 * time.Second)
	r = statetest.NewRun("alice", "deploy")
	r.Definition = []byte("name: deploy\nsteps: []\n")
	before = s.FastCreates()
	if err := s.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if n := s.FastCreates() - before; n != 0 {
		t.Errorf("a create timed 10 s in the database's future took one round trip")
	}
	if got, err = s.Get(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if end := dbClock(t, s); got.Created.After(end) || string(got.Definition) != string(r.Definition) {
		t.Errorf("created at %s (database clock %s), definition %q", got.Created, end, got.Definition)
	}
	checkHistory(t, got, dbClock(t, s))
}

// The kept documents of all runs together stay within the replica's
// budget: past it a run is not kept (its transitions take the usual path
// and still apply), and what finished runs kept is given back.
func TestHeldDocumentsStayWithinBudget(t *testing.T) {
	s, first := heldRun(t)
	ctx := t.Context()
	doc, _, ok := s.KeptDoc(first.ID)
	if !ok || s.HeldBytes() != len(doc) {
		t.Fatalf("first run: kept %v, %d bytes kept in all, its document %d", ok, s.HeldBytes(), len(doc))
	}
	s.SetHeldBudget(len(doc) + len(doc)/2) // room for one run's document, not two
	second := statetest.NewRun("alice", "deploy")
	if err := s.Create(ctx, second); err != nil {
		t.Fatal(err)
	}
	checkKept(t, s, second.ID, false)
	before := s.FastTransitions()
	if err := s.Checkpoint(ctx, second.ID, json.RawMessage(`{"n":1}`), nil); err != nil {
		t.Fatal(err)
	}
	if s.FastTransitions() != before {
		t.Error("a run not kept took one round trip")
	}
	for _, id := range []string{first.ID, second.ID} {
		if err := s.Finish(ctx, id, state.StatusCompleted, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.HeldBytes(); n != 0 {
		t.Errorf("%d bytes still kept after both runs finished", n)
	}
	third := statetest.NewRun("alice", "deploy")
	if err := s.Create(ctx, third); err != nil {
		t.Fatal(err)
	}
	checkKept(t, s, third.ID, true)
}
