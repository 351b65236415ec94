// Package statetest is the contract suite of state drivers: Run applies
// every case to a driver, so the bbolt store and the PostgreSQL driver are
// held to the same transitions, errors and byte-exact documents. It also
// starts private PostgreSQL servers for tests (PostgresMain).
package statetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vmcp-dev/vmcp/state"
)

func randIntn(n int) int { return rand.IntN(n) }

// Opener opens the store under test: each call is a new process (or
// replica) on the same data. The suite closes what it opens.
type Opener func(t *testing.T) state.Driver

// Run runs every contract case; newStore returns an Opener on fresh,
// empty data for each case.
func Run(t *testing.T, newStore func(t *testing.T) Opener) {
	cases := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"CreateAndGet", testCreateAndGet},
		{"CreateRefusals", testCreateRefusals},
		{"CreateWaiting", testCreateWaiting},
		{"Transitions", testTransitions},
		{"ErrorsAreClear", testErrorsAreClear},
		{"PauseAndClaimRecordEverything", testPauseAndClaim},
		{"ConcurrentAnswersApplyOnce", testConcurrentAnswers},
		{"List", testList},
		{"Deadlines", testDeadlines},
		{"ClaimDueOnce", testClaimDue},
		{"RecoverAfterRestart", testRecover},
		{"Prune", testPrune},
		{"KeyShared", testKey},
		{"ByteExact", testByteExact},
		{"StepsRoundTrip", testStepsRoundTrip},
		{"ChangeHints", testChanges},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newStore(t)) })
	}
}

var defSource = []byte("name: deploy\nsteps:\n  - id: confirm\n    elicit: {message: ok?}\n")

func openClosed(t *testing.T, open Opener) state.Driver {
	t.Helper()
	s := open(t)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// NewRun is a run for the tests.
func NewRun(owner, workflow string) *state.Run {
	return &state.Run{Workflow: workflow, Owner: owner, Definition: defSource, DefinitionName: "deploy.yaml",
		Params: json.RawMessage(`{"env":"prod"}`), Checkpoint: json.RawMessage(`{"version":1}`)}
}

func mustCreate(t *testing.T, s state.Driver, r *state.Run) *state.Run {
	t.Helper()
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func question(step string) state.Question {
	return state.Question{Step: step, Message: "Deploy " + step + "?", Schema: json.RawMessage(`{"type":"object"}`)}
}

func testCreateAndGet(t *testing.T, open Opener) {
	s := openClosed(t, open)
	r := mustCreate(t, s, NewRun("alice", "deploy"))
	if !strings.HasPrefix(r.ID, "r_") || len(r.ID) != 24 {
		t.Fatalf("id %q: want r_ and 22 characters", r.ID)
	}
	got, err := s.Get(t.Context(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, got); diff != "" {
		t.Fatalf("Get differs from what was created (-want +got):\n%s", diff)
	}
	if got.Status != state.StatusRunning || got.FormatVersion != state.FormatVersion || got.DefinitionHash != state.DefinitionHash(defSource) ||
		len(got.History) != 1 || got.History[0].Kind != state.EventCreated || got.History[0].Who != "alice" {
		t.Fatalf("created run: %+v", got)
	}
	if _, err := s.Get(t.Context(), "r_missing"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("get of a missing run: %v", err)
	}
}

func testCreateRefusals(t *testing.T, open Opener) {
	s := openClosed(t, open)
	existing := mustCreate(t, s, NewRun("alice", "deploy"))
	tests := []struct {
		name string
		edit func(r *state.Run)
		want error
	}{
		{"duplicate id", func(r *state.Run) { r.ID = existing.ID }, state.ErrExists},
		{"no workflow", func(r *state.Run) { r.Workflow = "" }, state.ErrInvalid},
		{"no owner", func(r *state.Run) { r.Owner = "" }, state.ErrInvalid},
		{"bad params", func(r *state.Run) { r.Params = json.RawMessage(`{`) }, state.ErrInvalid},
		{"waiting without a question", func(r *state.Run) { r.Status = state.StatusWaiting }, state.ErrInvalid},
		{"running with a question", func(r *state.Run) { q := question("a"); r.Pending = &q }, state.ErrInvalid},
		{"waiting with steps in flight", func(r *state.Run) {
			q := question("a")
			r.Status, r.Pending, r.InFlight = state.StatusWaiting, &q, []string{"b"}
		}, state.ErrInvalid},
		{"waiting with a bad schema", func(r *state.Run) {
			q := question("a")
			q.Schema = json.RawMessage(`{`)
			r.Status, r.Pending = state.StatusWaiting, &q
		}, state.ErrInvalid},
		{"wrong hash", func(r *state.Run) { r.DefinitionHash = "00" }, state.ErrInvalid},
		{"id with NUL", func(r *state.Run) { r.ID = "r\x00" }, state.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRun("bob", "deploy")
			tt.edit(r)
			before := *r
			if err := s.Create(t.Context(), r); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if diff := cmp.Diff(&before, r); diff != "" {
				t.Fatalf("a refused Create changed the run:\n%s", diff)
			}
		})
	}
	runs, _, err := s.List(t.Context(), state.Filter{})
	if err != nil || len(runs) != 1 {
		t.Fatalf("after refusals: %d runs, %v", len(runs), err)
	}
}

// A run whose first durable moment is its question is created waiting, in
// one commit: the same run as Create followed by Pause (pause 1, history
// created + paused, deadline indexed), answerable like any other.
func testCreateWaiting(t *testing.T, open Opener) {
	s := openClosed(t, open)
	ctx := t.Context()
	past := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	q := question("confirm")
	q.Deadline = past
	r := NewRun("alice", "deploy")
	r.Status, r.Pending = state.StatusWaiting, &q
	mustCreate(t, s, r)
	got, err := s.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, got); diff != "" {
		t.Fatalf("Get differs from what was created (-want +got):\n%s", diff)
	}
	if got.Status != state.StatusWaiting || got.Seq != 1 || got.Pending == nil || got.Pending.Seq != 1 || got.Pending.Step != "confirm" ||
		len(got.History) != 2 || got.History[0].Kind != state.EventCreated || got.History[1].Kind != state.EventPaused ||
		string(got.Checkpoint) != `{"version":1}` {
		t.Fatalf("created waiting: %+v", got)
	}
	// The same as Create then Pause, but for ids and times.
	two := mustCreate(t, s, NewRun("alice", "deploy"))
	if _, err := s.Pause(ctx, two.ID, json.RawMessage(`{"version":1}`), q); err != nil {
		t.Fatal(err)
	}
	paused, err := s.Get(ctx, two.ID)
	if err != nil {
		t.Fatal(err)
	}
	norm := func(x *state.Run) *state.Run {
		c := *x
		c.ID, c.Created, c.Updated, c.History = "", time.Time{}, time.Time{}, nil
		for _, ev := range x.History {
			ev.At = time.Time{}
			c.History = append(c.History, ev)
		}
		return &c
	}
	if diff := cmp.Diff(norm(paused), norm(got)); diff != "" {
		t.Fatalf("created waiting differs from created + paused (-paused +created):\n%s", diff)
	}
	due, err := s.DueDeadlines(ctx, time.Now(), 0)
	if err != nil || len(due) != 2 {
		t.Fatalf("due questions: %+v, %v (want both runs)", due, err)
	}
	waiting, _, err := s.List(ctx, state.Filter{Status: state.StatusWaiting})
	if err != nil || len(waiting) != 2 {
		t.Fatalf("waiting runs listed: %d, %v", len(waiting), err)
	}
	run, err := s.Claim(ctx, r.ID, "confirm", 1, "alice", json.RawMessage(`{"action":"accept"}`))
	if err != nil || run.Status != state.StatusRunning {
		t.Fatalf("answering a run created waiting: %v %+v", err, run)
	}
	if err := s.Finish(ctx, r.ID, state.StatusCompleted, json.RawMessage(`{}`), ""); err != nil {
		t.Fatal(err)
	}
}

// op is one transition; s may be replaced (interrupt reopens the store).
type op func(t *testing.T, h *holder, r *state.Run) error

type holder struct {
	s    state.Driver
	open Opener
}

func pause(step string) op {
	return func(t *testing.T, h *holder, r *state.Run) error {
		_, err := h.s.Pause(t.Context(), r.ID, json.RawMessage(`{"at":"`+step+`"}`), question(step))
		return err
	}
}

func claim(step string, seq uint64) op {
	return func(t *testing.T, h *holder, r *state.Run) error {
		_, err := h.s.Claim(t.Context(), r.ID, step, seq, "bob", json.RawMessage(`{"action":"accept"}`))
		return err
	}
}

func finish(status string) op {
	return func(t *testing.T, h *holder, r *state.Run) error {
		return h.s.Finish(t.Context(), r.ID, status, json.RawMessage(`{"ok":true}`), "")
	}
}

func cancel(t *testing.T, h *holder, r *state.Run) error {
	return h.s.Cancel(t.Context(), r.ID, "alice")
}

func checkpoint(t *testing.T, h *holder, r *state.Run) error {
	return h.s.Checkpoint(t.Context(), r.ID, json.RawMessage(`{"version":1,"n":2}`), []string{"deploy"})
}

func resume(t *testing.T, h *holder, r *state.Run) error {
	_, err := h.s.Resume(t.Context(), r.ID, "alice")
	return err
}

func appendEvent(t *testing.T, h *holder, r *state.Run) error {
	return h.s.AppendHistory(t.Context(), r.ID, state.Event{Who: "carol", Kind: state.EventRejected, Detail: json.RawMessage(`{"why":"no"}`)})
}

// interrupt stops the process (closes the store), starts another and
// recovers: a run that was running is interrupted.
func interrupt(t *testing.T, h *holder, r *state.Run) error {
	if err := h.s.Close(); err != nil {
		return err
	}
	h.s = openClosed(t, h.open)
	_, err := h.s.Recover(t.Context())
	return err
}

func recoverOnly(t *testing.T, h *holder, r *state.Run) error {
	_, err := h.s.Recover(t.Context())
	return err
}

func testTransitions(t *testing.T, open Opener) {
	tests := []struct {
		name   string
		before []op
		do     op
		want   error
		status string
	}{
		{"checkpoint running", nil, checkpoint, nil, state.StatusRunning},
		{"checkpoint waiting", []op{pause("a")}, checkpoint, state.ErrNotRunning, state.StatusWaiting},
		{"pause running", nil, pause("a"), nil, state.StatusWaiting},
		{"pause waiting", []op{pause("a")}, pause("b"), state.ErrNotRunning, state.StatusWaiting},
		{"pause interrupted", []op{interrupt}, pause("decide"), nil, state.StatusWaiting},
		{"pause completed", []op{finish(state.StatusCompleted)}, pause("a"), state.ErrNotRunning, state.StatusCompleted},
		{"claim", []op{pause("a")}, claim("a", 1), nil, state.StatusRunning},
		{"claim twice", []op{pause("a"), claim("a", 1)}, claim("a", 1), state.ErrNotWaiting, state.StatusRunning},
		{"claim wrong step", []op{pause("a")}, claim("b", 1), state.ErrStaleAnswer, state.StatusWaiting},
		{"claim old seq", []op{pause("a"), claim("a", 1), pause("a")}, claim("a", 1), state.ErrStaleAnswer, state.StatusWaiting},
		{"claim new seq", []op{pause("a"), claim("a", 1), pause("a")}, claim("a", 2), nil, state.StatusRunning},
		{"claim after restart", []op{pause("a"), interrupt}, claim("a", 1), nil, state.StatusRunning},
		{"checkpoint after claim", []op{pause("a"), claim("a", 1)}, checkpoint, nil, state.StatusRunning},
		{"claim running", nil, claim("a", 1), state.ErrNotWaiting, state.StatusRunning},
		{"claim cancelled", []op{pause("a"), cancel}, claim("a", 1), state.ErrNotWaiting, state.StatusCancelled},
		{"finish completed", nil, finish(state.StatusCompleted), nil, state.StatusCompleted},
		{"finish failed", nil, finish(state.StatusFailed), nil, state.StatusFailed},
		{"finish interrupted", []op{interrupt}, finish(state.StatusFailed), nil, state.StatusFailed},
		{"finish waiting", []op{pause("a")}, finish(state.StatusCompleted), state.ErrNotRunning, state.StatusWaiting},
		{"finish twice", []op{finish(state.StatusCompleted)}, finish(state.StatusFailed), state.ErrNotRunning, state.StatusCompleted},
		{"finish as waiting", nil, finish(state.StatusWaiting), state.ErrInvalid, state.StatusRunning},
		{"cancel waiting", []op{pause("a")}, cancel, nil, state.StatusCancelled},
		{"cancel interrupted", []op{interrupt}, cancel, nil, state.StatusCancelled},
		{"cancel running", nil, cancel, nil, state.StatusCancelled},
		{"checkpoint after cancel", []op{cancel}, checkpoint, state.ErrNotRunning, state.StatusCancelled},
		{"finish after cancel", []op{cancel}, finish(state.StatusCancelled), state.ErrNotRunning, state.StatusCancelled},
		{"pause after cancel", []op{cancel}, pause("a"), state.ErrNotRunning, state.StatusCancelled},
		{"cancel completed", []op{finish(state.StatusCompleted)}, cancel, state.ErrNotCancellable, state.StatusCompleted},
		{"resume interrupted", []op{interrupt}, resume, nil, state.StatusRunning},
		{"checkpoint after resume", []op{interrupt, resume}, checkpoint, nil, state.StatusRunning},
		{"resume waiting", []op{pause("a")}, resume, state.ErrNotInterrupted, state.StatusWaiting},
		{"recover waiting", []op{pause("a"), interrupt}, recoverOnly, nil, state.StatusWaiting},
		{"append history finished", []op{finish(state.StatusFailed)}, appendEvent, nil, state.StatusFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &holder{s: openClosed(t, open), open: open}
			ctx := t.Context()
			r := mustCreate(t, h.s, NewRun("alice", "deploy"))
			for i, o := range tt.before {
				if err := o(t, h, r); err != nil {
					t.Fatalf("setup %d: %v", i, err)
				}
			}
			before, err := h.s.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			err = tt.do(t, h, r)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			after, err := h.s.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if after.Status != tt.status {
				t.Fatalf("status %s, want %s", after.Status, tt.status)
			}
			if tt.want != nil {
				if diff := cmp.Diff(before, after); diff != "" {
					t.Fatalf("a refused transition changed the run:\n%s", diff)
				}
			} else if len(after.History) < len(before.History) || !slices.EqualFunc(before.History, after.History[:len(before.History)],
				func(a, b state.Event) bool { return cmp.Equal(a, b) }) {
				t.Fatalf("history is not append-only:\nbefore %+v\nafter %+v", before.History, after.History)
			}
			for i := 1; i < len(after.History); i++ {
				if after.History[i].At.Before(after.History[i-1].At) {
					t.Fatalf("history out of time order at %d: %+v", i, after.History)
				}
			}
		})
	}
}

func testErrorsAreClear(t *testing.T, open Opener) {
	s := openClosed(t, open)
	ctx := t.Context()
	r := mustCreate(t, s, NewRun("alice", "deploy"))
	if _, err := s.Pause(ctx, r.ID, nil, question("approve")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Claim(ctx, r.ID, "approve", 7, "bob", json.RawMessage(`{}`))
	var te *state.TransitionError
	if !errors.As(err, &te) || te.Status != state.StatusWaiting || te.RunID != r.ID {
		t.Fatalf("got %#v", err)
	}
	want := fmt.Sprintf(`claim run %s: answer is for a question the run no longer waits on (it is waiting): the answer is for step "approve" (pause 7); the run waits on step "approve" (pause 1)`, r.ID)
	if err.Error() != want {
		t.Fatalf("message\n%s\nwant\n%s", err, want)
	}
	if _, err := s.Claim(ctx, r.ID, "approve", 1, "bob", json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Claim(ctx, r.ID, "approve", 1, "carol", json.RawMessage(`{}`))
	if !errors.Is(err, state.ErrNotWaiting) || err.Error() != fmt.Sprintf("claim run %s: run is not waiting for an answer (it is running)", r.ID) {
		t.Fatalf("second answer: %v", err)
	}
	_, err = s.Claim(ctx, "r_missing", "approve", 1, "bob", json.RawMessage(`{}`))
	if !errors.Is(err, state.ErrNotFound) || err.Error() != "claim run r_missing: run not found" {
		t.Fatalf("got %v", err)
	}
	done := mustCreate(t, s, NewRun("alice", "deploy"))
	if err := s.Finish(ctx, done.ID, state.StatusCompleted, nil, ""); err != nil {
		t.Fatal(err)
	}
	err = s.Cancel(ctx, done.ID, "alice")
	if !errors.Is(err, state.ErrNotCancellable) || !strings.Contains(err.Error(), "(it is completed)") {
		t.Fatalf("got %v", err)
	}
}

func testPauseAndClaim(t *testing.T, open Opener) {
	s := openClosed(t, open)
	ctx := t.Context()
	r := mustCreate(t, s, NewRun("alice", "deploy"))
	deadline := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	q := question("approve")
	q.Deadline = deadline
	cp := json.RawMessage(`{"version":1,  "steps":{"plan":{"status":"completed","n":1.50}}}`)
	seq, err := s.Pause(ctx, r.ID, cp, q)
	if err != nil || seq != 1 {
		t.Fatalf("seq %d, %v", seq, err)
	}
	got, _ := s.Get(ctx, r.ID)
	q.Seq = 1
	if diff := cmp.Diff(&q, got.Pending); diff != "" {
		t.Fatalf("pending (-want +got):\n%s", diff)
	}
	if string(got.Checkpoint) != string(cp) {
		t.Fatalf("checkpoint not byte-exact: %s", got.Checkpoint)
	}
	answer := json.RawMessage(`{"action":"accept","content":{"note":"<ok> & go","n":1.50}}`)
	claimed, err := s.Claim(ctx, r.ID, "approve", 1, "bob", answer)
	if err != nil {
		t.Fatal(err)
	}
	if claimed.Status != state.StatusRunning || claimed.Pending != nil || string(claimed.Checkpoint) != string(cp) ||
		string(claimed.Definition) != string(defSource) {
		t.Fatalf("claimed run: %+v", claimed)
	}
	last := claimed.History[len(claimed.History)-1]
	if last.Who != "bob" || last.Kind != state.EventAnswered || last.Step != "approve" || string(last.Detail) != string(answer) {
		t.Fatalf("answered event: %+v", last)
	}
	seq, err = s.Pause(ctx, r.ID, nil, question("again"))
	if err != nil || seq != 2 {
		t.Fatalf("second pause: seq %d, %v", seq, err)
	}
	if got, _ := s.Get(ctx, r.ID); string(got.Checkpoint) != string(cp) {
		t.Fatalf("a pause without a checkpoint replaced it: %s", got.Checkpoint)
	}
}

func testConcurrentAnswers(t *testing.T, open Opener) {
	s := openClosed(t, open)
	ctx := t.Context()
	const runs, answerers = 10, 6
	ids := make([]string, runs)
	for i := range ids {
		ids[i] = mustCreate(t, s, NewRun("alice", "deploy")).ID
		if _, err := s.Pause(ctx, ids[i], nil, question("approve")); err != nil {
			t.Fatal(err)
		}
	}
	var wins, losses atomic.Int64
	var wg sync.WaitGroup
	for _, id := range ids {
		for a := range answerers {
			wg.Go(func() {
				_, err := s.Claim(ctx, id, "approve", 1, fmt.Sprint("answerer", a), json.RawMessage(`{}`))
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, state.ErrNotWaiting):
					losses.Add(1)
				default:
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if wins.Load() != runs || losses.Load() != runs*(answerers-1) {
		t.Fatalf("%d answers applied, %d refused; want %d and %d", wins.Load(), losses.Load(), runs, runs*(answerers-1))
	}
	for _, id := range ids {
		if n := CountEvents(t, s, id, state.EventAnswered); n != 1 {
			t.Fatalf("run %s has %d answers in its history", id, n)
		}
	}
}

// CountEvents counts a run's history events of one kind.
func CountEvents(t testing.TB, s state.Driver, id, kind string) int {
	t.Helper()
	r, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range r.History {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func testList(t *testing.T, open Opener) {
	s := openClosed(t, open)
	ctx := t.Context()
	type made struct{ id, owner, workflow, status string }
	var all []made
	for i := range 24 {
		owner := []string{"alice", "bob", "carol\x00iss"}[i%3]
		workflow := []string{"deploy", "rollback"}[i%2]
		r := NewRun(owner, workflow)
		r.Created = time.Date(2026, 3, 1, 12, 0, i, 0, time.UTC)
		mustCreate(t, s, r)
		status := state.StatusRunning
		switch i % 4 {
		case 1:
			if _, err := s.Pause(ctx, r.ID, nil, question("a")); err != nil {
				t.Fatal(err)
			}
			status = state.StatusWaiting
		case 2:
			if err := s.Finish(ctx, r.ID, state.StatusCompleted, nil, ""); err != nil {
				t.Fatal(err)
			}
			status = state.StatusCompleted
		}
		all = append(all, made{r.ID, owner, workflow, status})
	}
	filters := []state.Filter{{}, {Owner: "alice"}, {Owner: "carol\x00iss", Status: state.StatusWaiting}, {Status: state.StatusCompleted},
		{Workflow: "rollback"}, {Workflow: "deploy", Owner: "bob"}, {Owner: "nobody"}}
	for _, f := range filters {
		var want []string
		for i := len(all) - 1; i >= 0; i-- {
			m := all[i]
			if (f.Owner == "" || f.Owner == m.owner) && (f.Status == "" || f.Status == m.status) && (f.Workflow == "" || f.Workflow == m.workflow) {
				want = append(want, m.id)
			}
		}
		for _, limit := range []int{1, 5, 100} {
			f := f
			f.Limit = limit
			var got []string
			for pages := 0; ; pages++ {
				if pages > 30 {
					t.Fatalf("%+v: too many pages", f)
				}
				runs, next, err := s.List(ctx, f)
				if err != nil {
					t.Fatalf("%+v: %v", f, err)
				}
				if len(runs) > limit {
					t.Fatalf("%+v: %d runs in a page", f, len(runs))
				}
				for _, r := range runs {
					got = append(got, r.ID)
				}
				if next == "" {
					break
				}
				f.Cursor = next
			}
			if !slices.Equal(got, want) {
				t.Fatalf("List(%+v) = %v, want %v", f, got, want)
			}
		}
	}
	if _, _, err := s.List(ctx, state.Filter{Status: "sleeping"}); !errors.Is(err, state.ErrInvalid) {
		t.Fatalf("unknown status: %v", err)
	}
	if _, _, err := s.List(ctx, state.Filter{Cursor: "!!"}); !errors.Is(err, state.ErrBadCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
	w, _, err := s.List(ctx, state.Filter{Status: state.StatusWaiting, Limit: 1})
	if err != nil || len(w) != 1 || w[0].PendingStep != "a" || w[0].PendingMessage != "Deploy a?" {
		t.Fatalf("waiting summary: %+v, %v", w, err)
	}
}

func testDeadlines(t *testing.T, open Opener) {
	s := openClosed(t, open)
	ctx := t.Context()
	now := time.Now().UTC()
	past, future := now.Add(-time.Minute).Truncate(time.Microsecond), now.Add(time.Hour).Truncate(time.Microsecond)
	due := mustCreate(t, s, NewRun("alice", "deploy"))
	later := mustCreate(t, s, NewRun("alice", "deploy"))
	none := mustCreate(t, s, NewRun("alice", "deploy"))
	for _, x := range []struct {
		r  *state.Run
		at time.Time
	}{{due, past}, {later, future}, {none, time.Time{}}} {
		q := question("approve")
		q.Deadline = x.at
		if _, err := s.Pause(ctx, x.r.ID, nil, q); err != nil {
			t.Fatal(err)
		}
	}
	at, ok, err := s.NextDeadline(ctx)
	if err != nil || !ok || !at.Equal(past) {
		t.Fatalf("next deadline %v %v %v, want %v", at, ok, err, past)
	}
	list, err := s.DueDeadlines(ctx, time.Now(), 0)
	if err != nil || len(list) != 1 || list[0].RunID != due.ID || list[0].Step != "approve" || list[0].Seq != 1 || !list[0].Deadline.Equal(past) {
		t.Fatalf("due: %+v, %v", list, err)
	}
	if _, err := s.ClaimDeadline(ctx, state.DueQuestion{RunID: later.ID, Step: "approve", Seq: 1}, json.RawMessage(`{"action":"cancel"}`)); !errors.Is(err, state.ErrNotDue) {
		t.Fatalf("claim of a question not due: %v", err)
	}
	// Concurrent deadline claims: exactly one applies.
	var wins atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			if _, err := s.ClaimDeadline(ctx, list[0], json.RawMessage(`{"action":"cancel","timeout":true}`)); err == nil {
				wins.Add(1)
			} else if !errors.Is(err, state.ErrNotWaiting) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || CountEvents(t, s, due.ID, state.EventDeadline) != 1 {
		t.Fatalf("%d deadline claims applied", wins.Load())
	}
	if list, _ := s.DueDeadlines(ctx, time.Now(), 0); len(list) != 0 {
		t.Fatalf("still due after the claim: %+v", list)
	}
	if err := s.Cancel(ctx, later.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.NextDeadline(ctx); ok {
		t.Fatal("a cancelled run's deadline is still pending")
	}
}

func testRecover(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	running := mustCreate(t, s, NewRun("alice", "deploy"))
	if err := s.Checkpoint(ctx, running.ID, json.RawMessage(`{"version":1}`), []string{"call_api"}); err != nil {
		t.Fatal(err)
	}
	waiting := mustCreate(t, s, NewRun("alice", "deploy"))
	if _, err := s.Pause(ctx, waiting.ID, nil, question("a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openClosed(t, open)
	n, err := s2.Recover(ctx)
	if err != nil || len(n) != 1 {
		t.Fatalf("recovered %d, %v; want 1", len(n), err)
	}
	if got := n[0]; got.ID != running.ID || got.Workflow != "deploy" || got.Owner != "alice" || !slices.Equal(got.InFlight, []string{"call_api"}) {
		t.Fatalf("Recover reported %+v; want run %s (deploy, alice, in flight call_api)", got, running.ID)
	}
	r, _ := s2.Get(ctx, running.ID)
	last := r.History[len(r.History)-1]
	if r.Status != state.StatusInterrupted || last.Kind != state.EventInterrupted || string(last.Detail) != `{"in_flight":["call_api"]}` {
		t.Fatalf("interrupted run: %s %+v", r.Status, last)
	}
	if w, _ := s2.Get(ctx, waiting.ID); w.Status != state.StatusWaiting {
		t.Fatalf("waiting run became %s", w.Status)
	}
	if n, err := s2.Recover(ctx); err != nil || len(n) != 0 {
		t.Fatalf("second recover: %d, %v", len(n), err)
	}
	if _, err := s2.Claim(ctx, waiting.ID, "a", 1, "bob", json.RawMessage(`{}`)); err != nil {
		t.Fatalf("answer after the restart: %v", err)
	}
}

func testPrune(t *testing.T, open Opener) {
	s := openClosed(t, open)
	ctx := t.Context()
	done := mustCreate(t, s, NewRun("alice", "deploy"))
	if err := s.Finish(ctx, done.ID, state.StatusCompleted, nil, ""); err != nil {
		t.Fatal(err)
	}
	waiting := mustCreate(t, s, NewRun("alice", "deploy"))
	if _, err := s.Pause(ctx, waiting.ID, nil, question("a")); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prune(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("prune before the finish: %d, %v", n, err)
	}
	if n, err := s.Prune(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("prune: %d, %v", n, err)
	}
	if _, err := s.Get(ctx, done.ID); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("pruned run: %v", err)
	}
	if r, err := s.Get(ctx, waiting.ID); err != nil || string(r.Definition) != string(defSource) {
		t.Fatalf("waiting run after prune: %v", err)
	}
}

func testKey(t *testing.T, open Opener) {
	s := open(t)
	k1, err := s.Key(t.Context())
	if err != nil || len(k1) != 32 {
		t.Fatalf("key %d bytes, %v", len(k1), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openClosed(t, open)
	k2, err := s2.Key(t.Context())
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("key changed across processes: %v", err)
	}
}

func testByteExact(t *testing.T, open Opener) {
	s := openClosed(t, open)
	ctx := t.Context()
	r := NewRun("iss\x00sub", "deploy")
	r.Params = json.RawMessage(`{"b":1,"a":[1.0,1e3,"\u00e9<>&"]}`) // whitespace aside, byte for byte
	mustCreate(t, s, r)
	result := json.RawMessage(`{"z":0.10,"a":{"nested":true}}`)
	if err := s.Finish(ctx, r.ID, state.StatusCompleted, result, ""); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Params) != string(r.Params) || string(got.Result) != string(result) || got.Owner != r.Owner {
		t.Fatalf("not byte-exact: params %s result %s owner %q", got.Params, got.Result, got.Owner)
	}
	l, _, err := s.List(ctx, state.Filter{Owner: "iss\x00sub"})
	if err != nil || len(l) != 1 {
		t.Fatalf("list by an owner with NUL: %v %v", l, err)
	}
}

func testClaimDue(t *testing.T, open Opener) {
	s := openClosed(t, open)
	ctx := t.Context()
	const due, later = 30, 5
	ids := map[string]bool{}
	for i := range due + later {
		r := mustCreate(t, s, NewRun("alice", "deploy"))
		q := question("approve")
		q.Deadline = time.Now().Add(-time.Minute + time.Duration(i)*time.Millisecond)
		if i >= due {
			q.Deadline = time.Now().Add(time.Hour)
		} else {
			ids[r.ID] = true
		}
		if _, err := s.Pause(ctx, r.ID, json.RawMessage(`{"version":1,"i":`+fmt.Sprint(i)+`}`), q); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	claimed := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				runs, err := s.ClaimDue(ctx, time.Now(), 7, json.RawMessage(`{"action":"cancel","timeout":true}`))
				if err != nil {
					t.Error(err)
					return
				}
				if len(runs) == 0 {
					return
				}
				mu.Lock()
				for _, r := range runs {
					claimed[r.ID]++
					if r.Status != state.StatusRunning || r.Pending != nil || string(r.Definition) != string(defSource) || len(r.Checkpoint) == 0 {
						t.Errorf("claimed run %s: %+v", r.ID, r)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claimed) != due {
		t.Fatalf("%d runs claimed, want %d", len(claimed), due)
	}
	for id, n := range claimed {
		if n != 1 || !ids[id] {
			t.Fatalf("run %s claimed %d times (due: %v)", id, n, ids[id])
		}
		if c := CountEvents(t, s, id, state.EventDeadline); c != 1 {
			t.Fatalf("run %s: %d deadline events", id, c)
		}
		if err := s.Checkpoint(ctx, id, json.RawMessage(`{"after":true}`), nil); err != nil {
			t.Fatalf("checkpoint after the claim: %v", err)
		}
	}
	w, _, err := s.List(ctx, state.Filter{Status: state.StatusWaiting})
	if err != nil || len(w) != later {
		t.Fatalf("%d still waiting, %v; want %d", len(w), err, later)
	}
}

// testChanges: every transition a waiter cares about sends a hint with the
// run's id and new status to a subscriber of the same process (a driver
// may send more: duplicates, Change{}).
func testChanges(t *testing.T, open Opener) {
	s := openClosed(t, open)
	ctx, cancel := context.WithCancel(t.Context())
	hints := s.Changes(ctx)
	expect := func(id, status string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case c, ok := <-hints:
				if !ok {
					t.Fatalf("hint channel closed waiting for %s %s", id, status)
				}
				if c.RunID == id && c.Status == status {
					return
				}
			case <-timeout:
				t.Fatalf("no hint %s %s within 10s", id, status)
			}
		}
	}
	r := mustCreate(t, s, NewRun("alice", "deploy"))
	if _, err := s.Pause(ctx, r.ID, nil, question("a")); err != nil {
		t.Fatal(err)
	}
	expect(r.ID, state.StatusWaiting)
	if _, err := s.Claim(ctx, r.ID, "a", 1, "bob", json.RawMessage(`{"action":"accept"}`)); err != nil {
		t.Fatal(err)
	}
	expect(r.ID, state.StatusRunning)
	if err := s.Finish(ctx, r.ID, state.StatusCompleted, json.RawMessage(`{"ok":true}`), ""); err != nil {
		t.Fatal(err)
	}
	expect(r.ID, state.StatusCompleted)
	r2 := mustCreate(t, s, NewRun("alice", "deploy"))
	if err := s.Cancel(ctx, r2.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	expect(r2.ID, state.StatusCancelled)
	// A refused transition sends nothing (nor does creating a running
	// run); a second subscriber sees the next hint too.
	other := s.Changes(ctx)
	r4 := mustCreate(t, s, NewRun("alice", "deploy"))
	if _, err := s.Claim(ctx, r4.ID, "a", 1, "bob", json.RawMessage(`{}`)); !errors.Is(err, state.ErrNotWaiting) {
		t.Fatalf("claim of a running run: %v", err)
	}
	r3 := mustCreate(t, s, NewRun("alice", "deploy"))
	if _, err := s.Pause(ctx, r3.ID, nil, question("b")); err != nil {
		t.Fatal(err)
	}
	for c := range other {
		if c.RunID == r4.ID {
			t.Fatalf("a refused claim sent a hint: %+v", c)
		}
		if c.RunID == r3.ID {
			break
		}
	}
	cancel()
	for range hints { // closed once ctx ends
	}
}

// StepState is a step's state as the engine writes it into a
// checkpoint's steps object, with odd but valid JSON that must come back
// byte for byte (SPEC: raw backend JSON in step outputs).
func StepState(i, size int) string {
	return fmt.Sprintf(`{"status":"completed","output":{"z":1.0,"a":1e2,"n":-0.50,"s":"\u00e9\u2028<&>","i":%d,"pad":"%s"},"attempts":1}`,
		i, strings.Repeat("x", size))
}

// Checkpoint is an engine checkpoint (encoding/json's form: compact, the
// steps map sorted by id) with the given steps (id → state JSON).
func Checkpoint(steps map[string]string, extra string) json.RawMessage {
	ids := slices.Sorted(maps.Keys(steps))
	var b strings.Builder
	b.WriteString(`{"version":1,"run_id":"r","workflow":"deploy","params":{"env":"prod"},"steps":{`)
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(id)
		b.Write(k)
		b.WriteByte(':')
		b.WriteString(steps[id])
	}
	b.WriteString(`},"elapsed":1500000` + extra + `}`)
	return json.RawMessage(b.String())
}

// testStepsRoundTrip: checkpoints with many steps come back from every
// transition that returns them byte for byte (the PostgreSQL driver
// stores each step as a row and reassembles them), across adding,
// changing and removing steps, a checkpoint not in encoding/json's form,
// a restart, a takeover and a deadline claim.
func testStepsRoundTrip(t *testing.T, open Opener) {
	h := &holder{s: openClosed(t, open), open: open}
	ctx := t.Context()
	steps := map[string]string{}
	for i := range 6 {
		steps[fmt.Sprintf("step_%d", i)] = StepState(i, 300)
	}
	steps["ünï<code>"] = `{"status":"completed","output":"\ud83d\ude00 1.0","content":[{"type":"text","text":"1e2"}]}`
	steps["each"] = `{"status":"completed","items":[{"status":"completed","output":1.10},{"status":"failed","error":"x"}]}`
	r := NewRun("alice", "deploy")
	r.Checkpoint = Checkpoint(steps, "")
	mustCreate(t, h.s, r)
	want := r.Checkpoint
	check := func(what string, got json.RawMessage) {
		t.Helper()
		if string(got) != string(want) {
			t.Fatalf("%s: checkpoint not byte-exact:\n got %s\nwant %s", what, got, want)
		}
		var cp struct {
			Steps map[string]json.RawMessage `json:"steps"`
		}
		if err := json.Unmarshal(got, &cp); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for id, raw := range cp.Steps {
			if string(raw) != steps[id] {
				t.Fatalf("%s: step %s: %s, want %s", what, id, raw, steps[id])
			}
		}
		if len(cp.Steps) != len(steps) {
			t.Fatalf("%s: %d steps, want %d", what, len(cp.Steps), len(steps))
		}
	}
	get := func(what string) {
		t.Helper()
		got, err := h.s.Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		check(what, got.Checkpoint)
	}
	get("created")
	// One more step; then one step changed and one removed.
	steps["step_6"] = `{"status":"completed","output":{"b":2,"a":1}}`
	want = Checkpoint(steps, "")
	if err := h.s.Checkpoint(ctx, r.ID, want, []string{"step_7"}); err != nil {
		t.Fatal(err)
	}
	get("a step added")
	steps["step_2"] = `{"status":"failed","error":"changed"}`
	delete(steps, "step_3")
	want = Checkpoint(steps, `,"in_flight":["step_7"]`)
	if err := h.s.Checkpoint(ctx, r.ID, want, []string{"step_7"}); err != nil {
		t.Fatal(err)
	}
	get("a step changed, one removed")
	// Pause and the answer's claim.
	steps["step_7"] = StepState(7, 10)
	want = Checkpoint(steps, `,"pending":{"step":"approve"}`)
	seq, err := h.s.Pause(ctx, r.ID, want, question("approve"))
	if err != nil {
		t.Fatal(err)
	}
	get("paused")
	run, err := h.s.Claim(ctx, r.ID, "approve", seq, "bob", json.RawMessage(`{"action":"accept"}`))
	if err != nil {
		t.Fatal(err)
	}
	check("claimed", run.Checkpoint)
	// A checkpoint that is not in encoding/json's form is kept as it is.
	odd := json.RawMessage(`{"version":1, "steps":{"b":{"x":1},"a":{}},"steps_note":"\u0041"}`)
	if err := h.s.Checkpoint(ctx, r.ID, odd, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.s.Get(ctx, r.ID); string(got.Checkpoint) != string(odd) {
		t.Fatalf("odd checkpoint: %s", got.Checkpoint)
	}
	steps["approve"] = `{"status":"completed","action":"accept","content":{}}`
	want = Checkpoint(steps, "")
	if err := h.s.Checkpoint(ctx, r.ID, want, []string{"step_8"}); err != nil {
		t.Fatal(err)
	}
	get("back from the odd one")
	// A restart (another process or replica) resumes it.
	if err := interrupt(t, h, r); err != nil {
		t.Fatal(err)
	}
	get("interrupted")
	if run, err = h.s.Resume(ctx, r.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	check("resumed", run.Checkpoint)
	steps["step_8"] = StepState(8, 50)
	want = Checkpoint(steps, "")
	if err := h.s.Checkpoint(ctx, r.ID, want, nil); err != nil {
		t.Fatal(err)
	}
	get("checkpoint after the resume")
	// A deadline claim returns it too.
	q := question("late")
	q.Deadline = time.Now().Add(-time.Second)
	steps["step_9"] = StepState(9, 20)
	want = Checkpoint(steps, "")
	if _, err := h.s.Pause(ctx, r.ID, want, q); err != nil {
		t.Fatal(err)
	}
	due, err := h.s.ClaimDue(ctx, time.Now(), 10, json.RawMessage(`{"action":"cancel","timeout":true}`))
	if err != nil || len(due) != 1 {
		t.Fatalf("claim due: %d runs, %v", len(due), err)
	}
	check("claimed by its deadline", due[0].Checkpoint)
	if err := h.s.Finish(ctx, r.ID, state.StatusFailed, nil, "timed out"); err != nil {
		t.Fatal(err)
	}
	get("finished")
}
