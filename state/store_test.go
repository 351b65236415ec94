package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.etcd.io/bbolt"
)

// clock is a test clock that moves one millisecond at every reading, so
// that runs created one after another have distinct creation times.
type clock struct{ n atomic.Int64 }

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func (c *clock) now() time.Time      { return epoch.Add(time.Duration(c.n.Add(1)) * time.Millisecond) }
func (c *clock) set(t time.Time)     { c.n.Store(int64(t.Sub(epoch) / time.Millisecond)) }
func (c *clock) peek() time.Time     { return epoch.Add(time.Duration(c.n.Load()) * time.Millisecond) }
func (c *clock) add(d time.Duration) { c.n.Add(int64(d / time.Millisecond)) }

func openTest(t testing.TB, path string, opts *Options) *Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "sub", "state.db")
	}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newTest(t testing.TB) (*Store, *clock) {
	t.Helper()
	c := new(clock)
	return openTest(t, "", &Options{Clock: c.now}), c
}

func mustCheck(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

var defSource = []byte("name: deploy\nsteps:\n  - id: confirm\n    elicit: {message: ok?}\n")

func newRun(owner, workflow string) *Run {
	return &Run{Workflow: workflow, Owner: owner, Definition: defSource, DefinitionName: "deploy.yaml",
		Params: json.RawMessage(`{"env":"prod"}`), Checkpoint: json.RawMessage(`{"version":1}`)}
}

func mustCreate(t testing.TB, s *Store, r *Run) *Run {
	t.Helper()
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func question(step string) Question {
	return Question{Step: step, Message: "Deploy " + step + "?", Schema: json.RawMessage(`{"type":"object"}`)}
}

func TestCreateAndGet(t *testing.T) {
	s, _ := newTest(t)
	r := mustCreate(t, s, newRun("alice", "deploy"))
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
	if got.Status != StatusRunning || got.FormatVersion != FormatVersion || got.DefinitionHash != hashHex(defSource) ||
		len(got.History) != 1 || got.History[0].Kind != EventCreated || got.History[0].Who != "alice" {
		t.Fatalf("created run: %+v", got)
	}
	mustCheck(t, s)
}

func TestCreateRefusals(t *testing.T) {
	s, _ := newTest(t)
	existing := mustCreate(t, s, newRun("alice", "deploy"))
	tests := []struct {
		name string
		edit func(r *Run)
		want error
	}{
		{"duplicate id", func(r *Run) { r.ID = existing.ID }, ErrExists},
		{"no workflow", func(r *Run) { r.Workflow = "" }, ErrInvalid},
		{"no owner", func(r *Run) { r.Owner = "" }, ErrInvalid},
		{"bad params", func(r *Run) { r.Params = json.RawMessage(`{`) }, ErrInvalid},
		{"bad checkpoint", func(r *Run) { r.Checkpoint = json.RawMessage(`nope`) }, ErrInvalid},
		{"waiting", func(r *Run) { r.Status = StatusWaiting }, ErrInvalid},
		{"with a question", func(r *Run) { r.Pending = &Question{Step: "a"} }, ErrInvalid},
		{"wrong hash", func(r *Run) { r.DefinitionHash = "00" }, ErrInvalid},
		{"hash without source", func(r *Run) { r.Definition = nil; r.DefinitionHash = hashHex(defSource) }, ErrInvalid},
		{"long id", func(r *Run) { r.ID = strings.Repeat("x", 201) }, ErrInvalid},
		{"id with a slash", func(r *Run) { r.ID = "r/1" }, ErrInvalid},
		{"id with NUL", func(r *Run) { r.ID = "r\x00" }, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRun("bob", "deploy")
			tt.edit(r)
			before := *r
			err := s.Create(t.Context(), r)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if diff := cmp.Diff(&before, r); diff != "" {
				t.Fatalf("a refused Create changed the run:\n%s", diff)
			}
		})
	}
	mustCheck(t, s)
	runs, _, err := s.List(t.Context(), Filter{})
	if err != nil || len(runs) != 1 {
		t.Fatalf("after refusals: %d runs, %v", len(runs), err)
	}
}

// op is one transition applied to a run in the table below.
type op func(ctx context.Context, s *Store, r *Run) error

func pause(step string) op {
	return func(ctx context.Context, s *Store, r *Run) error {
		_, err := s.Pause(ctx, r.ID, json.RawMessage(`{"version":1,"paused":"`+step+`"}`), question(step))
		return err
	}
}

func claim(step string, seq uint64) op {
	return func(ctx context.Context, s *Store, r *Run) error {
		_, err := s.Claim(ctx, r.ID, step, seq, "alice", json.RawMessage(`{"action":"accept"}`))
		return err
	}
}

func finish(status string) op {
	return func(ctx context.Context, s *Store, r *Run) error {
		return s.Finish(ctx, r.ID, status, json.RawMessage(`{"ok":true}`), "")
	}
}

func cancel(ctx context.Context, s *Store, r *Run) error { return s.Cancel(ctx, r.ID, "alice") }

func checkpoint(ctx context.Context, s *Store, r *Run) error {
	return s.Checkpoint(ctx, r.ID, json.RawMessage(`{"version":1,"steps":{}}`), []string{"a", "b"})
}

func resume(ctx context.Context, s *Store, r *Run) error {
	_, err := s.Resume(ctx, r.ID, "alice")
	return err
}

func recoverAll(ctx context.Context, s *Store, r *Run) error {
	_, err := s.Recover(ctx)
	return err
}

func appendEvent(ctx context.Context, s *Store, r *Run) error {
	return s.AppendHistory(ctx, r.ID, Event{Who: "alice", Kind: EventRejected, Step: "a", Detail: json.RawMessage(`{"why":"no"}`)})
}

func TestTransitions(t *testing.T) {
	tests := []struct {
		name   string
		before []op // applied first, must succeed
		do     op
		want   error // nil: success
		status string
	}{
		{"checkpoint running", nil, checkpoint, nil, StatusRunning},
		{"checkpoint waiting", []op{pause("a")}, checkpoint, ErrNotRunning, StatusWaiting},
		{"pause running", nil, pause("a"), nil, StatusWaiting},
		{"pause waiting", []op{pause("a")}, pause("b"), ErrNotRunning, StatusWaiting},
		{"pause interrupted", []op{recoverAll}, pause("decide"), nil, StatusWaiting},
		{"pause completed", []op{finish(StatusCompleted)}, pause("a"), ErrNotRunning, StatusCompleted},
		{"claim", []op{pause("a")}, claim("a", 1), nil, StatusRunning},
		{"claim twice", []op{pause("a"), claim("a", 1)}, claim("a", 1), ErrNotWaiting, StatusRunning},
		{"claim wrong step", []op{pause("a")}, claim("b", 1), ErrStaleAnswer, StatusWaiting},
		{"claim old seq", []op{pause("a"), claim("a", 1), pause("a")}, claim("a", 1), ErrStaleAnswer, StatusWaiting},
		{"claim new seq", []op{pause("a"), claim("a", 1), pause("a")}, claim("a", 2), nil, StatusRunning},
		{"claim running", nil, claim("a", 1), ErrNotWaiting, StatusRunning},
		{"claim cancelled", []op{pause("a"), cancel}, claim("a", 1), ErrNotWaiting, StatusCancelled},
		{"finish completed", nil, finish(StatusCompleted), nil, StatusCompleted},
		{"finish failed", nil, finish(StatusFailed), nil, StatusFailed},
		{"finish cancelled", nil, finish(StatusCancelled), nil, StatusCancelled},
		{"finish interrupted", []op{recoverAll}, finish(StatusFailed), nil, StatusFailed},
		{"finish waiting", []op{pause("a")}, finish(StatusCompleted), ErrNotRunning, StatusWaiting},
		{"finish twice", []op{finish(StatusCompleted)}, finish(StatusFailed), ErrNotRunning, StatusCompleted},
		{"finish as waiting", nil, finish(StatusWaiting), ErrInvalid, StatusRunning},
		{"cancel waiting", []op{pause("a")}, cancel, nil, StatusCancelled},
		{"cancel interrupted", []op{recoverAll}, cancel, nil, StatusCancelled},
		{"cancel running", nil, cancel, nil, StatusCancelled},
		{"cancel completed", []op{finish(StatusCompleted)}, cancel, ErrNotCancellable, StatusCompleted},
		{"resume interrupted", []op{recoverAll}, resume, nil, StatusRunning},
		{"resume waiting", []op{pause("a")}, resume, ErrNotInterrupted, StatusWaiting},
		{"recover waiting", []op{pause("a")}, recoverAll, nil, StatusWaiting},
		{"recover running", nil, recoverAll, nil, StatusInterrupted},
		{"append history finished", []op{finish(StatusFailed)}, appendEvent, nil, StatusFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTest(t)
			ctx := t.Context()
			r := mustCreate(t, s, newRun("alice", "deploy"))
			for i, o := range tt.before {
				if err := o(ctx, s, r); err != nil {
					t.Fatalf("setup %d: %v", i, err)
				}
			}
			before, err := s.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			err = tt.do(ctx, s, r)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			after, err := s.Get(ctx, r.ID)
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
			} else if len(after.History) < len(before.History) || !slices.EqualFunc(before.History, after.History[:len(before.History)], eventEqual) {
				t.Fatalf("history is not append-only:\nbefore %+v\nafter %+v", before.History, after.History)
			}
			mustCheck(t, s)
		})
	}
}

func eventEqual(a, b Event) bool { return cmp.Equal(a, b) }

func TestTransitionErrorsAreClear(t *testing.T) {
	s, _ := newTest(t)
	ctx := t.Context()
	r := mustCreate(t, s, newRun("alice", "deploy"))
	if _, err := s.Pause(ctx, r.ID, nil, question("approve")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Claim(ctx, r.ID, "approve", 7, "bob", json.RawMessage(`{}`))
	var te *TransitionError
	if !errors.As(err, &te) || te.Status != StatusWaiting || te.RunID != r.ID {
		t.Fatalf("got %#v", err)
	}
	want := fmt.Sprintf(`claim run %s: answer is for a question the run no longer waits on (it is waiting): the answer is for step "approve" (pause 7); the run waits on step "approve" (pause 1)`, r.ID)
	if err.Error() != want {
		t.Fatalf("message\n%s\nwant\n%s", err, want)
	}
	_, err = s.Claim(ctx, "r_missing", "approve", 1, "bob", json.RawMessage(`{}`))
	if !errors.Is(err, ErrNotFound) || err.Error() != "claim run r_missing: run not found" {
		t.Fatalf("got %v", err)
	}
	done := mustCreate(t, s, newRun("alice", "deploy"))
	if err := s.Finish(ctx, done.ID, StatusCompleted, nil, ""); err != nil {
		t.Fatal(err)
	}
	err = s.Cancel(ctx, done.ID, "alice")
	if !errors.Is(err, ErrNotCancellable) || !strings.Contains(err.Error(), "(it is completed)") {
		t.Fatalf("got %v", err)
	}
}

func TestPauseAndClaimRecordEverything(t *testing.T) {
	s, c := newTest(t)
	ctx := t.Context()
	r := mustCreate(t, s, newRun("alice", "deploy"))
	deadline := epoch.Add(time.Hour)
	q := question("approve")
	q.Deadline = deadline
	cp := json.RawMessage(`{"version":1,  "steps":{"plan":{"status":"completed"}}}`)
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
	if due, _ := s.DueDeadlines(ctx, deadline, 0); len(due) != 1 {
		t.Fatalf("due at the deadline: %v", due)
	}
	answer := json.RawMessage(`{"action":"accept","content":{"note":"<ok> & go"}}`)
	at := c.peek().Add(time.Millisecond)
	claimed, err := s.Claim(ctx, r.ID, "approve", 1, "bob", answer)
	if err != nil {
		t.Fatal(err)
	}
	if claimed.Status != StatusRunning || claimed.Pending != nil || string(claimed.Checkpoint) != string(cp) ||
		string(claimed.Definition) != string(defSource) {
		t.Fatalf("claimed run: %+v", claimed)
	}
	last := claimed.History[len(claimed.History)-1]
	want := Event{At: at, Who: "bob", Kind: EventAnswered, Step: "approve", Detail: answer}
	if diff := cmp.Diff(want, last); diff != "" {
		t.Fatalf("answered event (-want +got):\n%s", diff)
	}
	if due, _ := s.DueDeadlines(ctx, deadline.Add(time.Hour), 0); len(due) != 0 {
		t.Fatalf("an answered question is still due: %v", due)
	}
	seq, err = s.Pause(ctx, r.ID, nil, question("again"))
	if err != nil || seq != 2 {
		t.Fatalf("second pause: seq %d, %v", seq, err)
	}
	if got, _ := s.Get(ctx, r.ID); string(got.Checkpoint) != string(cp) {
		t.Fatalf("a pause without a checkpoint replaced it: %s", got.Checkpoint)
	}
	mustCheck(t, s)
}

func TestConcurrentAnswersApplyOnce(t *testing.T) {
	s, _ := newTest(t)
	ctx := t.Context()
	const runs, answerers = 20, 8
	ids := make([]string, runs)
	for i := range ids {
		ids[i] = mustCreate(t, s, newRun("alice", "deploy")).ID
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
				case errors.Is(err, ErrNotWaiting):
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
		r, _ := s.Get(ctx, id)
		n := 0
		for _, ev := range r.History {
			if ev.Kind == EventAnswered {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("run %s has %d answers in its history", id, n)
		}
	}
	mustCheck(t, s)
}

func TestList(t *testing.T) {
	s, _ := newTest(t)
	ctx := t.Context()
	type made struct{ id, owner, workflow, status string }
	var all []made // in creation order
	for i := range 30 {
		owner := []string{"alice", "bob", "carol\x00iss"}[i%3]
		workflow := []string{"deploy", "rollback"}[i%2]
		r := mustCreate(t, s, newRun(owner, workflow))
		status := StatusRunning
		switch i % 5 {
		case 1, 2:
			if _, err := s.Pause(ctx, r.ID, nil, question("a")); err != nil {
				t.Fatal(err)
			}
			status = StatusWaiting
		case 3:
			if err := s.Finish(ctx, r.ID, StatusCompleted, nil, ""); err != nil {
				t.Fatal(err)
			}
			status = StatusCompleted
		}
		all = append(all, made{r.ID, owner, workflow, status})
	}
	expect := func(f Filter) []string {
		var ids []string
		for i := len(all) - 1; i >= 0; i-- {
			m := all[i]
			if (f.Owner == "" || f.Owner == m.owner) && (f.Status == "" || f.Status == m.status) && (f.Workflow == "" || f.Workflow == m.workflow) {
				ids = append(ids, m.id)
			}
		}
		return ids
	}
	filters := []Filter{
		{}, {Owner: "alice"}, {Owner: "carol\x00iss"}, {Status: StatusWaiting}, {Workflow: "rollback"},
		{Owner: "bob", Status: StatusWaiting}, {Owner: "alice", Workflow: "deploy"},
		{Status: StatusRunning, Workflow: "deploy"}, {Owner: "bob", Status: StatusCompleted, Workflow: "rollback"},
		{Owner: "nobody"}, {Status: StatusFailed},
	}
	for _, f := range filters {
		for _, limit := range []int{1, 2, 3, 7, 50} {
			t.Run(fmt.Sprintf("%q/%s/%s/limit%d", f.Owner, f.Status, f.Workflow, limit), func(t *testing.T) {
				f := f
				f.Limit = limit
				var got []string
				pages := 0
				for {
					page, next, err := s.List(ctx, f)
					if err != nil {
						t.Fatal(err)
					}
					pages++
					if len(page) > limit {
						t.Fatalf("page of %d, limit %d", len(page), limit)
					}
					for _, r := range page {
						got = append(got, r.ID)
					}
					if next == "" {
						break
					}
					f.Cursor = next
					if pages > 100 {
						t.Fatal("pagination does not end")
					}
				}
				if diff := cmp.Diff(expect(f), got); diff != "" {
					t.Fatalf("(-want +got):\n%s", diff)
				}
			})
		}
	}
	page, _, err := s.List(ctx, Filter{Owner: "bob", Status: StatusWaiting, Limit: 1})
	if err != nil || len(page) != 1 {
		t.Fatal(len(page), err)
	}
	if h := page[0]; h.PendingStep != "a" || h.PendingMessage != "Deploy a?" || h.Owner != "bob" {
		t.Fatalf("summary: %+v", h)
	}
	for _, bad := range []Filter{{Cursor: "!!"}, {Cursor: "AAAA"}, {Status: "sleeping"}} {
		if _, _, err := s.List(ctx, bad); err == nil {
			t.Fatalf("List(%+v) accepted", bad)
		}
	}
}

// TestIndexesFollowManyTransitions drives random transitions over many runs
// from several goroutines, then compares every index scan with a full scan
// of the documents (Check does the same, entry by entry).
func TestIndexesFollowManyTransitions(t *testing.T) {
	s, c := newTest(t)
	ctx := t.Context()
	const workers, steps = 8, 150
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var mine []string
			for range steps {
				if len(mine) == 0 || rng.IntN(4) == 0 {
					r := newRun([]string{"alice", "bob"}[rng.IntN(2)], []string{"deploy", "scale", "rollback"}[rng.IntN(3)])
					if err := s.Create(ctx, r); err != nil {
						t.Error(err)
						return
					}
					mine = append(mine, r.ID)
					continue
				}
				id := mine[rng.IntN(len(mine))]
				r, err := s.Get(ctx, id)
				if err != nil {
					t.Error(err)
					return
				}
				switch r.Status {
				case StatusRunning:
					switch rng.IntN(4) {
					case 0:
						err = s.Checkpoint(ctx, id, json.RawMessage(`{"n":1}`), []string{"x"})
					case 1:
						q := question(fmt.Sprint("s", rng.IntN(3)))
						if rng.IntN(2) == 0 {
							q.Deadline = c.peek().Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
						}
						_, err = s.Pause(ctx, id, nil, q)
					case 2:
						err = s.Finish(ctx, id, []string{StatusCompleted, StatusFailed}[rng.IntN(2)], nil, "")
					default:
						err = s.AppendHistory(ctx, id, Event{Kind: EventRetried, Step: "x"})
					}
				case StatusWaiting:
					if rng.IntN(3) == 0 {
						err = s.Cancel(ctx, id, "bob")
					} else {
						_, err = s.Claim(ctx, id, r.Pending.Step, r.Pending.Seq, "alice", json.RawMessage(`{"action":"accept"}`))
					}
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if _, err := s.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)

	docs := fullScan(t, s)
	for _, f := range []Filter{{}, {Owner: "alice"}, {Owner: "bob", Status: StatusWaiting}, {Status: StatusInterrupted},
		{Status: StatusCompleted}, {Workflow: "scale"}, {Owner: "alice", Workflow: "rollback"}} {
		var want []string
		for _, d := range docs {
			if (f.Owner == "" || f.Owner == d.Owner) && (f.Status == "" || f.Status == d.Status) && (f.Workflow == "" || f.Workflow == d.Workflow) {
				want = append(want, d.ID)
			}
		}
		got := listAll(t, s, f)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("List(%+v) differs from a full scan (-want +got):\n%s", f, diff)
		}
	}
	var wantDue []string
	for _, d := range docs {
		if d.Status == StatusWaiting && d.Pending != nil && !d.Pending.Deadline.IsZero() {
			wantDue = append(wantDue, d.ID)
		}
	}
	due, err := s.DueDeadlines(ctx, epoch.Add(24*time.Hour), 100000)
	if err != nil {
		t.Fatal(err)
	}
	var gotDue []string
	for _, d := range due {
		gotDue = append(gotDue, d.RunID)
	}
	slices.Sort(wantDue)
	slices.Sort(gotDue)
	if diff := cmp.Diff(wantDue, gotDue); diff != "" {
		t.Fatalf("deadline index differs from a full scan (-want +got):\n%s", diff)
	}
}

// fullScan reads every run document, newest first.
func fullScan(t testing.TB, s *Store) []*runDoc {
	t.Helper()
	var docs []*runDoc
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bRuns).ForEach(func(k, v []byte) error {
			if k[len(k)-1] != kindDoc {
				return nil
			}
			d, err := decodeDoc(v)
			docs = append(docs, d)
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(docs, func(a, b *runDoc) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return docs
}

func listAll(t testing.TB, s *Store, f Filter) []string {
	t.Helper()
	f.Limit = 17
	var ids []string
	for {
		page, next, err := s.List(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			ids = append(ids, r.ID)
		}
		if next == "" {
			return ids
		}
		f.Cursor = next
	}
}

func TestDueDeadlines(t *testing.T) {
	s, c := newTest(t)
	ctx := t.Context()
	offsets := []time.Duration{5 * time.Minute, time.Minute, 0, 3 * time.Minute, 10 * time.Minute}
	ids := make([]string, len(offsets))
	for i, off := range offsets {
		ids[i] = mustCreate(t, s, newRun("alice", "deploy")).ID
		q := question("approve")
		if off > 0 {
			q.Deadline = epoch.Add(time.Hour + off)
		}
		if _, err := s.Pause(ctx, ids[i], nil, q); err != nil {
			t.Fatal(err)
		}
	}
	next, ok, err := s.NextDeadline(ctx)
	if err != nil || !ok || !next.Equal(epoch.Add(time.Hour+time.Minute)) {
		t.Fatalf("next deadline %v %v %v", next, ok, err)
	}
	tests := []struct {
		now   time.Duration
		limit int
		want  []string
	}{
		{0, 0, nil},
		{time.Hour + time.Minute, 0, []string{ids[1]}},
		{time.Hour + 5*time.Minute, 0, []string{ids[1], ids[3], ids[0]}},
		{time.Hour + 5*time.Minute, 2, []string{ids[1], ids[3]}},
		{48 * time.Hour, 0, []string{ids[1], ids[3], ids[0], ids[4]}},
	}
	for _, tt := range tests {
		due, err := s.DueDeadlines(ctx, epoch.Add(tt.now), tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range due {
			got = append(got, d.RunID)
			if d.Step != "approve" || d.Seq != 1 {
				t.Fatalf("due %+v", d)
			}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Fatalf("at +%v limit %d (-want +got):\n%s", tt.now, tt.limit, diff)
		}
	}

	// Applying a deadline: refused before it, once after it.
	due, _ := s.DueDeadlines(ctx, epoch.Add(48*time.Hour), 1)
	timeout := json.RawMessage(`{"action":"cancel","timeout":true}`)
	if _, err := s.ClaimDeadline(ctx, due[0], timeout); !errors.Is(err, ErrNotDue) {
		t.Fatalf("before the deadline: %v", err)
	}
	c.set(epoch.Add(time.Hour + time.Minute))
	r, err := s.ClaimDeadline(ctx, due[0], timeout)
	if err != nil {
		t.Fatal(err)
	}
	if last := r.History[len(r.History)-1]; last.Kind != EventDeadline || last.Who != "vmcp" || string(last.Detail) != string(timeout) {
		t.Fatalf("deadline event %+v", last)
	}
	if _, err := s.ClaimDeadline(ctx, due[0], timeout); !errors.Is(err, ErrNotWaiting) {
		t.Fatalf("second application: %v", err)
	}
	if err := s.Cancel(ctx, ids[3], "alice"); err != nil {
		t.Fatal(err)
	}
	due, _ = s.DueDeadlines(ctx, epoch.Add(48*time.Hour), 0)
	if len(due) != 2 || due[0].RunID != ids[0] || due[1].RunID != ids[4] {
		t.Fatalf("after answering and cancelling: %+v", due)
	}
	mustCheck(t, s)
}

func TestRecover(t *testing.T) {
	s, _ := newTest(t)
	ctx := t.Context()
	ids := bulkLoad(t, s, 2500, func(i int) string { // more than one recovery commit
		if i%5 == 0 {
			return StatusWaiting
		}
		return StatusRunning
	})
	var running, waiting []string
	for i, id := range ids {
		if i%5 == 0 {
			waiting = append(waiting, id)
		} else {
			running = append(running, id)
		}
	}
	if err := s.Checkpoint(ctx, running[0], json.RawMessage(`{}`), []string{"deploy", "notify"}); err != nil {
		t.Fatal(err)
	}
	n, err := s.Recover(ctx)
	if err != nil || len(n) != len(running) {
		t.Fatalf("recovered %d of %d: %v", len(n), len(running), err)
	}
	r, _ := s.Get(ctx, running[0])
	last := r.History[len(r.History)-1]
	if r.Status != StatusInterrupted || last.Kind != EventInterrupted || string(last.Detail) != `{"in_flight":["deploy","notify"]}` ||
		!slices.Equal(r.InFlight, []string{"deploy", "notify"}) {
		t.Fatalf("interrupted run: %+v, event %+v", r, last)
	}
	for _, id := range waiting {
		if r, _ := s.Get(ctx, id); r.Status != StatusWaiting || len(r.History) != 2 {
			t.Fatalf("waiting run touched: %+v", r)
		}
	}
	if n, err := s.Recover(ctx); len(n) != 0 || err != nil {
		t.Fatalf("second recover: %d %v", len(n), err)
	}
	mustCheck(t, s)
}

func TestPrune(t *testing.T) {
	c := new(clock)
	s := openTest(t, "", &Options{Clock: c.now, Retention: 24 * time.Hour})
	ctx := t.Context()
	old := mustCreate(t, s, newRun("alice", "deploy"))
	oldFailed := mustCreate(t, s, newRun("alice", "deploy"))
	oldWaiting := mustCreate(t, s, newRun("alice", "deploy"))
	oldInterrupted := mustCreate(t, s, newRun("alice", "deploy"))
	_ = s.Finish(ctx, old.ID, StatusCompleted, nil, "")
	_ = s.Finish(ctx, oldFailed.ID, StatusFailed, nil, "boom")
	_, _ = s.Pause(ctx, oldWaiting.ID, nil, question("a"))
	_, _ = s.Recover(ctx)
	_ = oldInterrupted
	c.add(48 * time.Hour)
	fresh := mustCreate(t, s, newRun("alice", "deploy"))
	_ = s.Finish(ctx, fresh.ID, StatusCompleted, nil, "")
	keep := mustCreate(t, s, &Run{Workflow: "other", Owner: "bob", Definition: []byte("name: other\n")})

	n, err := s.Prune(ctx, time.Time{}) // now - retention
	if err != nil || n != 2 {
		t.Fatalf("pruned %d, %v; want 2", n, err)
	}
	for id, want := range map[string]bool{old.ID: false, oldFailed.ID: false, oldWaiting.ID: true, oldInterrupted.ID: true, fresh.ID: true, keep.ID: true} {
		_, err := s.Get(ctx, id)
		if (err == nil) != want {
			t.Fatalf("run %s present=%v, want %v", id, err == nil, want)
		}
	}
	mustCheck(t, s) // definition reference counts went down, not away
	n, err = s.Prune(ctx, c.peek().Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want 1", n, err)
	}
	mustCheck(t, s)
	noRetention, _ := newTest(t)
	if n, err := noRetention.Prune(ctx, time.Time{}); n != 0 || err != nil {
		t.Fatalf("no retention: %d %v", n, err)
	}
}

func TestPruneMany(t *testing.T) {
	s, _ := newTest(t)
	ctx := t.Context()
	bulkLoad(t, s, 2100, func(i int) string { return StatusCompleted }) // more than one prune commit
	n, err := s.Prune(ctx, epoch.Add(time.Hour))
	if err != nil || n != 2100 {
		t.Fatalf("pruned %d: %v", n, err)
	}
	mustCheck(t, s)
	_ = s.db.View(func(tx *bbolt.Tx) error {
		for _, b := range allBuckets {
			if n := tx.Bucket(b).Stats().KeyN; n != 0 && string(b) != string(bMeta) {
				t.Errorf("bucket %s keeps %d keys after pruning everything", b, n)
			}
		}
		return nil
	})
}

func TestKeyStableAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	k1, err := s.Key(t.Context())
	if err != nil || len(k1) != 32 {
		t.Fatalf("key %x %v", k1, err)
	}
	k1b, _ := s.Key(t.Context())
	k1b[0] ^= 0xff // callers get copies
	if k, _ := s.Key(t.Context()); string(k) != string(k1) {
		t.Fatal("key changed within a session")
	}
	_ = s.Close()
	s = openTest(t, path, nil)
	k2, err := s.Key(t.Context())
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("key changed across reopen: %x vs %x (%v)", k1, k2, err)
	}
	other, _ := newTest(t)
	if k3, _ := other.Key(t.Context()); string(k3) == string(k1) {
		t.Fatal("two files share a key")
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	c := new(clock)
	s, err := Open(path, &Options{Clock: c.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var want []*Run
	for i := range 40 {
		r := mustCreate(t, s, newRun([]string{"alice", "bob"}[i%2], "deploy"))
		switch i % 4 {
		case 1:
			q := question("approve")
			q.Deadline = epoch.Add(time.Duration(i) * time.Hour)
			_, err = s.Pause(ctx, r.ID, json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), q)
		case 2:
			err = s.Finish(ctx, r.ID, StatusFailed, json.RawMessage(`null`), "boom")
		case 3:
			err = s.Checkpoint(ctx, r.ID, json.RawMessage(`{"big":"`+strings.Repeat("x", 10000)+`"}`), []string{"a"})
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, got)
	}
	key, _ := s.Key(ctx)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, want[0].ID); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if err := s.Finish(ctx, want[0].ID, StatusCompleted, nil, ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Finish after Close: %v", err)
	}

	s = openTest(t, path, &Options{Clock: c.now})
	mustCheck(t, s)
	for _, w := range want {
		got, err := s.Get(ctx, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Fatalf("run %s after reopen (-want +got):\n%s", w.ID, diff)
		}
	}
	if k, _ := s.Key(ctx); string(k) != string(key) {
		t.Fatal("key changed")
	}
	if all := listAll(t, s, Filter{}); len(all) != len(want) {
		t.Fatalf("listed %d runs, want %d", len(all), len(want))
	}
	if due, _ := s.DueDeadlines(ctx, epoch.Add(100*time.Hour), 0); len(due) != 10 {
		t.Fatalf("%d deadlines after reopen, want 10", len(due))
	}
}

func TestNewerFormatRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bMeta).Put(kFormat, []byte("99")) })
	_ = s.Close()
	_, err = Open(path, nil)
	if !errors.Is(err, ErrNewerFormat) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "format version 99") {
		t.Fatalf("got %v", err)
	}
}

// TestLayout1Upgrade: a file of layout 1 (checkpoints in their own
// bucket) opens as layout 2; its checkpoints are read where they are,
// move beside their documents when next written, and are deleted with
// their runs, and Check accepts the file at every step.
func TestLayout1Upgrade(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "state.db")
	c := new(clock)
	s, err := Open(path, &Options{Clock: c.now})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 3)
	for i := range ids {
		r := newRun("alice", "deploy")
		r.Checkpoint = json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
		ids[i] = mustCreate(t, s, r).ID
	}
	// Rewrite the file as layout 1 wrote it.
	err = s.db.Update(func(tx *bbolt.Tx) error {
		for _, id := range ids {
			pos := lookup(tx, id)
			cp := clone(tx.Bucket(bRuns).Get(checkpointKey(pos)))
			if err := tx.Bucket(bRuns).Delete(checkpointKey(pos)); err != nil {
				return err
			}
			if err := tx.Bucket(bCheckpoints).Put(pos, cp); err != nil {
				return err
			}
		}
		return tx.Bucket(bMeta).Put(kFormat, []byte("1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	_ = s.Close()

	s = openTest(t, path, &Options{Clock: c.now})
	mustCheck(t, s)
	_ = s.db.View(func(tx *bbolt.Tx) error {
		if v := string(tx.Bucket(bMeta).Get(kFormat)); v != "2" {
			t.Errorf("format after open: %q, want 2", v)
		}
		return nil
	})
	for i, id := range ids {
		got, err := s.Get(ctx, id)
		if err != nil || string(got.Checkpoint) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("run %d before any write: checkpoint %s, %v", i, got.Checkpoint, err)
		}
	}
	// Run 0 pauses with a new checkpoint, run 1 without one (its stays
	// where it is), run 2 finishes and is pruned.
	if _, err := s.Pause(ctx, ids[0], json.RawMessage(`{"n":10}`), Question{Step: "approve"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(ctx, ids[1], nil, Question{Step: "approve"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, ids[2], StatusCompleted, nil, ""); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	for i, want := range []string{`{"n":10}`, `{"n":1}`} {
		got, err := s.Get(ctx, ids[i])
		if err != nil || string(got.Checkpoint) != want {
			t.Fatalf("run %d: checkpoint %s, %v; want %s", i, got.Checkpoint, err, want)
		}
	}
	c.add(48 * time.Hour)
	if n, err := s.Prune(ctx, c.peek().Add(-time.Hour)); err != nil || n != 1 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	mustCheck(t, s)
	_ = s.db.View(func(tx *bbolt.Tx) error {
		old := tx.Bucket(bCheckpoints)
		for i, id := range ids[:2] {
			pos := lookup(tx, id)
			inRuns, inOld := tx.Bucket(bRuns).Get(checkpointKey(pos)) != nil, old.Get(pos) != nil
			if want := i == 0; inRuns != want || inOld == want {
				t.Errorf("run %d: checkpoint beside the document %v, in the old bucket %v", i, inRuns, inOld)
			}
		}
		if n := old.Stats().KeyN; n != 1 {
			t.Errorf("%d checkpoints left in the old bucket, want 1 (run 1's)", n)
		}
		return nil
	})
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(garbage, nil); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Fatalf("garbage file: %v", err)
	}
	// Within one process a second Open also waits for the lock.
	path := filepath.Join(dir, "state.db")
	openTest(t, path, nil)
	start := time.Now()
	_, err := Open(path, &Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "state file "+path+" is in use by another vmcp process (open timed out after 100ms)") {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("locked open took %v", time.Since(start))
	}
}

func TestCheckFindsDamage(t *testing.T) {
	tests := []struct {
		name   string
		damage func(tx *bbolt.Tx, id string) error
		want   string
	}{
		{"missing index entry", func(tx *bbolt.Tx, id string) error {
			return tx.Bucket(bIxOwner).Delete(cat(lp(nil, "alice"), lookup(tx, id), ""))
		}, "ix_owner: entry"},
		{"stray index entry", func(tx *bbolt.Tx, id string) error {
			return tx.Bucket(bIxStatus).Put(cat(lp(nil, StatusFailed), lookup(tx, id), ""), nil)
		}, "matches no run"},
		{"undecodable document", func(tx *bbolt.Tx, id string) error {
			return tx.Bucket(bRuns).Put(docKey(lookup(tx, id)), []byte("{"))
		}, "does not decode"},
		{"stale summary", func(tx *bbolt.Tx, id string) error {
			return tx.Bucket(bRuns).Put(headKey(lookup(tx, id)), []byte(`{}`))
		}, "summary"},
		{"orphan checkpoint", func(tx *bbolt.Tx, id string) error {
			return tx.Bucket(bCheckpoints).Put(cat(ts(epoch), nil, "r_x"), []byte(`{}`))
		}, "has no run"},
		{"orphan checkpoint beside the documents", func(tx *bbolt.Tx, id string) error {
			return tx.Bucket(bRuns).Put(checkpointKey(cat(ts(epoch), nil, "r_x")), []byte(`{}`))
		}, "without a document"},
		{"checkpoint in both places", func(tx *bbolt.Tx, id string) error {
			pos := lookup(tx, id)
			if err := tx.Bucket(bRuns).Put(checkpointKey(pos), []byte(`{"a":1}`)); err != nil {
				return err
			}
			return tx.Bucket(bCheckpoints).Put(pos, []byte(`{"a":0}`))
		}, "also stored in the old place"},
		{"orphan id", func(tx *bbolt.Tx, id string) error { return tx.Bucket(bIDs).Put([]byte("r_y"), ts(epoch)) }, "id r_y has no run"},
		{"id points elsewhere", func(tx *bbolt.Tx, id string) error { return tx.Bucket(bIDs).Put([]byte(id), ts(epoch)) }, "id entry"},
		{"reference count", func(tx *bbolt.Tx, id string) error { return refDefinition(tx, hashHex(defSource), nil, 1) }, "reference count 2, used by 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTest(t)
			r := mustCreate(t, s, newRun("alice", "deploy"))
			mustCheck(t, s)
			if err := s.db.Update(func(tx *bbolt.Tx) error { return tt.damage(tx, r.ID) }); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check: %v; want a problem mentioning %q", err, tt.want)
			}
		})
	}
}

func TestContextCancelled(t *testing.T) {
	s, _ := newTest(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Create(ctx, newRun("alice", "deploy")); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if _, err := s.Get(ctx, "r_x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

// TestListIDsThatExtendEachOther: runs created at the same instant whose
// ids are prefixes of each other still list once each, in order, through
// every index and across pages.
func TestListIDsThatExtendEachOther(t *testing.T) {
	s, _ := newTest(t)
	at := epoch.Add(time.Hour)
	for _, id := range []string{"a", "abc", "b", "ab", "a-", "a_"} {
		r := newRun("alice", "deploy")
		r.ID, r.Created = id, at
		mustCreate(t, s, r)
	}
	want := []string{"b", "abc", "ab", "a_", "a-", "a"}
	for _, f := range []Filter{{}, {Owner: "alice"}, {Status: StatusRunning}, {Workflow: "deploy"}, {Owner: "alice", Status: StatusRunning}} {
		for _, limit := range []int{1, 2, 50} {
			f.Limit, f.Cursor = limit, ""
			var got []string
			for {
				page, next, err := s.List(t.Context(), f)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range page {
					got = append(got, r.ID)
				}
				if next == "" {
					break
				}
				f.Cursor = next
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("List(%+v) (-want +got):\n%s", f, diff)
			}
		}
	}
	mustCheck(t, s)
}

// TestPredecodedDocumentIsCheckedInTheCommit: a document decoded before a
// commit is used only if the run did not change in between.
func TestPredecodedDocumentIsCheckedInTheCommit(t *testing.T) {
	s, _ := newTest(t)
	ctx := t.Context()
	r := mustCreate(t, s, newRun("alice", "deploy"))
	pre := s.predecode(r.ID)
	if pre == nil || pre.d.Status != StatusRunning {
		t.Fatalf("predecoded %+v", pre)
	}
	if _, err := s.Pause(ctx, r.ID, nil, Question{Step: "confirm"}); err != nil {
		t.Fatal(err)
	}
	_ = s.db.View(func(tx *bbolt.Tx) error {
		d, err := pre.load(tx, r.ID)
		if err != nil || d.Status != StatusWaiting || d.Seq != 1 {
			t.Errorf("after a pause in between: %+v, %v; want the waiting run", d, err)
		}
		return nil
	})
	pre = s.predecode(r.ID)
	_ = s.db.View(func(tx *bbolt.Tx) error {
		if d, _ := pre.load(tx, r.ID); d == nil || d.Status != StatusWaiting {
			t.Errorf("unchanged: %+v", d)
		}
		if d, _ := pre.load(tx, r.ID); d == nil || d.Status != StatusWaiting { // used once, then decoded afresh
			t.Errorf("second load: %+v", d)
		}
		return nil
	})
	if s.predecode("r_missing") != nil {
		t.Error("predecoded a missing run")
	}
}

// The deadline sweep asks once a second whether a question is due; when
// none is (no deadline, or only later ones), ClaimDue commits nothing: a
// commit would sync the file twice for nothing. When one is due it
// commits as before.
func TestClaimDueCommitsOnlyWhenDue(t *testing.T) {
	s, _ := newTest(t)
	ctx := t.Context()
	txid := func() int {
		var id int
		if err := s.db.View(func(tx *bbolt.Tx) error { id = tx.ID(); return nil }); err != nil {
			t.Fatal(err)
		}
		return id
	}
	answer := json.RawMessage(`{"action":"cancel","timeout":true}`)
	claim := func(now time.Time) int {
		t.Helper()
		before := txid()
		runs, err := s.ClaimDue(ctx, now, 10, answer)
		if err != nil {
			t.Fatal(err)
		}
		if commits := txid() - before; (commits > 0) != (len(runs) > 0) {
			t.Fatalf("claimed %d runs in %d commits", len(runs), commits)
		}
		return len(runs)
	}
	if n := claim(time.Now()); n != 0 {
		t.Fatalf("claimed %d with no deadline at all", n)
	}
	r := mustCreate(t, s, newRun("alice", "deploy"))
	q := question("approve")
	q.Deadline = time.Now().Add(time.Hour)
	if _, err := s.Pause(ctx, r.ID, json.RawMessage(`{"version":1}`), q); err != nil {
		t.Fatal(err)
	}
	if n := claim(time.Now()); n != 0 {
		t.Fatalf("claimed %d before the deadline", n)
	}
	if n := claim(q.Deadline.Add(time.Second)); n != 1 {
		t.Fatalf("claimed %d after the deadline, want 1", n)
	}
}
