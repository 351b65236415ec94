package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vmcp-dev/vmcp/steps"
)

func TestPanicInStepBecomesStepError(t *testing.T) {
	p := mustCompile(t, `name: boom
steps:
  - id: a
    tool: svc.a
  - id: b
    tool: svc.b
    depends_on: [a]
`, nil)
	f := newFakeCaller().on("svc.a", reply{Panic: "nil map write"})
	out, err := New(f, nil).Run(t.Context(), p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != StatusFailed || out.Err.Step != "a" || !strings.Contains(out.Err.Cause, "panic: nil map write") {
		t.Fatalf("got %s %v", out.Status, out.Err)
	}
	for _, c := range f.recorded() {
		if c.Tool == "svc.b" {
			t.Fatal("dependent ran after a failed step")
		}
	}
}

func TestClientCancellationCancelsBackendCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustCompile(t, `name: slow
steps:
  - id: a
    tool: svc.slow
  - id: b
    tool: svc.slow2
`, nil)
		var cancelled atomic.Int32
		caller := callerFunc(func(ctx context.Context, c *steps.Call) (*steps.Result, error) {
			<-ctx.Done()
			cancelled.Add(1)
			return nil, ctx.Err()
		})
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			time.Sleep(5 * time.Second)
			cancel()
		}()
		out, err := New(caller, nil).Run(ctx, p, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if out.Status != StatusCancelled {
			t.Fatalf("status %s, want cancelled (%v)", out.Status, out.Err)
		}
		if cancelled.Load() != 2 {
			t.Fatalf("%d backend calls saw cancellation, want 2", cancelled.Load())
		}
	})
}

func TestProcessWideCallLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inFlight, peak atomic.Int32
		caller := callerFunc(func(ctx context.Context, c *steps.Call) (*steps.Result, error) {
			n := inFlight.Add(1)
			for {
				old := peak.Load()
				if n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			time.Sleep(10 * time.Millisecond)
			inFlight.Add(-1)
			return &steps.Result{StructuredContent: json.RawMessage(`{}`)}, nil
		})
		var sb strings.Builder
		sb.WriteString("name: wide\nmax_parallel: 20\nsteps:\n")
		for i := 0; i < 20; i++ {
			fmt.Fprintf(&sb, "  - id: s%d\n    tool: svc.x\n", i)
		}
		p := mustCompile(t, sb.String(), nil)
		e := New(caller, &Options{MaxCalls: 3})
		done := make(chan struct{})
		for r := 0; r < 2; r++ {
			go func() {
				out, err := e.Run(context.Background(), p, nil, nil)
				if err != nil || out.Status != StatusCompleted {
					t.Errorf("run: %v %v", err, out.Err)
				}
				done <- struct{}{}
			}()
		}
		<-done
		<-done
		if peak.Load() != 3 {
			t.Fatalf("peak in-flight calls %d, want exactly the limit 3", peak.Load())
		}
	})
}

// Waiting for a human does not count against the workflow timeout.
func TestWorkflowTimeoutExcludesWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustCompile(t, `name: patient
timeout: 100ms
steps:
  - id: a
    tool: svc.a
  - id: ask
    type: elicitation
    depends_on: [a]
    message: ok?
    schema: {type: object, properties: {ok: {type: boolean}}}
  - id: b
    tool: svc.b
    depends_on: [ask]
`, nil)
		f := newFakeCaller().on("svc.a", reply{Delay: 60 * time.Millisecond}).on("svc.b", reply{Delay: 30 * time.Millisecond})
		e := New(f, nil)
		out, err := e.Run(t.Context(), p, nil, nil)
		if err != nil || out.Status != StatusWaiting {
			t.Fatalf("%v %v", err, out)
		}
		time.Sleep(time.Hour) // the human takes an hour
		out, err = e.Resume(t.Context(), p, out.Checkpoint, Answer{Action: ActionAccept, Content: map[string]any{"ok": true}}, nil)
		if err != nil || out.Status != StatusCompleted {
			t.Fatalf("after resume: %v %s %v", err, out.Status, out.Err)
		}
		// A second run whose remaining budget is too small times out.
		f.replies["svc.b"] = []reply{{Delay: 50 * time.Millisecond}}
		out, _ = e.Run(t.Context(), p, nil, nil)
		out, err = e.Resume(t.Context(), p, out.Checkpoint, Answer{Action: ActionAccept, Content: map[string]any{"ok": true}}, nil)
		if err != nil || out.Status != StatusFailed || !strings.Contains(out.Err.Error(), "timed out") {
			t.Fatalf("want timeout after resume, got %v %s %v", err, out.Status, out.Err)
		}
	})
}

func TestAnswerLimitsAndActions(t *testing.T) {
	p := mustCompile(t, `name: q
steps:
  - id: ask
    type: elicitation
    message: note?
    schema: {type: object, properties: {note: {type: string}, n: {type: integer}}}
    on_cancel: continue
  - id: after
    tool: svc.after
    arguments: {action: "{{ steps.ask.action }}"}
`, nil)
	e := New(newFakeCaller(), nil)
	out, _ := e.Run(t.Context(), p, nil, nil)
	big := strings.Repeat("x", MaxElicitContent+1)
	for name, ans := range map[string]Answer{
		"too big":        {Action: ActionAccept, Content: map[string]any{"note": big}},
		"bad action":     {Action: "maybe"},
		"wrong type":     {Action: ActionAccept, Content: map[string]any{"n": "seven"}},
		"coerced is ok?": {Action: ActionAccept, Content: map[string]any{"n": "7x"}},
	} {
		if _, err := e.Resume(t.Context(), p, out.Checkpoint, ans, nil); !errors.Is(err, ErrInvalidAnswer) {
			t.Errorf("%s: got %v, want ErrInvalidAnswer", name, err)
		}
	}
	// "7" coerces to 7 for an integer property.
	res, err := e.Resume(t.Context(), p, out.Checkpoint, Answer{Action: ActionAccept, Content: map[string]any{"n": "7"}}, nil)
	if err != nil || res.Status != StatusCompleted {
		t.Fatalf("%v %v", err, res)
	}
	// cancel with on_cancel: continue runs the rest.
	res, err = e.Resume(t.Context(), p, out.Checkpoint, Answer{Action: ActionCancel}, nil)
	if err != nil || res.Status != StatusCompleted {
		t.Fatalf("cancel+continue: %v %v", err, res)
	}
	if _, err := e.Resume(t.Context(), p, &Checkpoint{}, Answer{Action: ActionAccept}, nil); !errors.Is(err, ErrNotWaiting) {
		t.Fatalf("resume without a question: %v", err)
	}
}

func TestForEachItemLimit(t *testing.T) {
	p := mustCompile(t, `name: many
steps:
  - id: each
    tool: svc.x
    for_each: "{{ params.items }}"
    arguments: {i: "{{ item }}"}
`, nil)
	items := make([]int, MaxForEachItems+1)
	args, _ := json.Marshal(map[string]any{"items": items})
	out, err := New(newFakeCaller(), nil).Run(t.Context(), p, args, nil)
	if err != nil || out.Status != StatusFailed || !strings.Contains(out.Err.Cause, "limit is 1000") {
		t.Fatalf("%v %v", err, out.Err)
	}
}

type callerFunc func(ctx context.Context, c *steps.Call) (*steps.Result, error)

func (f callerFunc) CallTool(ctx context.Context, c *steps.Call) (*steps.Result, error) {
	return f(ctx, c)
}

// recordingStore keeps every checkpoint it is handed, as JSON.
type recordingStore struct {
	saved [][]byte
}

func (s *recordingStore) SaveCheckpoint(_ context.Context, cp *Checkpoint) error {
	b, err := json.Marshal(cp)
	s.saved = append(s.saved, b)
	return err
}

// A durable run checkpoints the transitions of steps that are unsafe to
// repeat, with the steps in flight, before their calls go out; an
// interrupted run continues from its last checkpoint: read-only in-flight
// steps run again, others only when told to.
func TestDurableCheckpointsAndContinue(t *testing.T) {
	cat := NewStaticCatalog([]*Tool{
		{Backend: "svc", Name: "read", Annotations: &ToolAnnotations{ReadOnlyHint: ptr(true)}},
		{Backend: "svc", Name: "write"},
	})
	p := mustCompile(t, `name: durable
steps:
  - id: r
    tool: svc.read
  - id: w
    tool: svc.write
  - id: after
    tool: svc.read
    depends_on: [r, w]
`, cat)
	store := &recordingStore{}
	f := newFakeCaller()
	e := New(f, &Options{Store: store})
	out, err := e.Run(t.Context(), p, nil, &RunOptions{RunID: "r1", Durable: true})
	if err != nil || out.Status != StatusCompleted {
		t.Fatal(err, out)
	}
	// Only the unsafe step is written one by one: before r and w start
	// (w must be on record as in flight) and when w finishes. The
	// read-only steps would simply run again after a crash.
	if len(store.saved) != 2 {
		t.Fatalf("%d checkpoints, want 2", len(store.saved))
	}
	first, err := DecodeCheckpoint(store.saved[0])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(first.InFlight, ",") != "r,w" || len(first.Steps) != 0 {
		t.Fatalf("first checkpoint: in flight %v, steps %v", first.InFlight, first.Steps)
	}
	if got := Unsafe(p, first); strings.Join(got, ",") != "w" {
		t.Fatalf("unsafe %v, want [w]", got)
	}
	// Crash after the first checkpoint: continue without re-running w.
	calls := len(f.recorded())
	out, err = e.Continue(t.Context(), p, first, false, nil)
	if err != nil || out.Status != StatusFailed || out.Err.Step != "w" {
		t.Fatalf("continue without rerun: %v %+v", err, out.Err)
	}
	if len(f.recorded()) != calls {
		t.Fatal("a call was made although the unsafe step fails first")
	}
	// With rerun, both in-flight steps run again and the run completes.
	out, err = e.Continue(t.Context(), p, first, true, nil)
	if err != nil || out.Status != StatusCompleted {
		t.Fatalf("continue with rerun: %v %+v", err, out)
	}
	if n := len(f.recorded()) - calls; n != 3 {
		t.Fatalf("%d calls on continue, want 3 (r, w, after)", n)
	}
}

func ptr[T any](v T) *T { return &v }

// A chain of unsafe steps costs one commit per step: each step's result is
// written in the same commit as the in-flight record of the step it
// releases, and the last result on its own before the run ends.
func TestDurableChainCoalescesCommits(t *testing.T) {
	cat := NewStaticCatalog([]*Tool{{Backend: "svc", Name: "write"}})
	p := mustCompile(t, `name: chain
steps:
  - id: a
    tool: svc.write
  - id: b
    tool: svc.write
    depends_on: [a]
  - id: c
    tool: svc.write
    depends_on: [b]
`, cat)
	store := &recordingStore{}
	e := New(newFakeCaller(), &Options{Store: store})
	out, err := e.Run(t.Context(), p, nil, &RunOptions{RunID: "r1", Durable: true})
	if err != nil || out.Status != StatusCompleted {
		t.Fatal(err, out)
	}
	want := []struct {
		inFlight string
		done     int
	}{{"a", 0}, {"b", 1}, {"c", 2}, {"", 3}}
	if len(store.saved) != len(want) {
		t.Fatalf("%d checkpoints, want %d", len(store.saved), len(want))
	}
	for i, w := range want {
		cp, err := DecodeCheckpoint(store.saved[i])
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(cp.InFlight, ","); got != w.inFlight || len(cp.Steps) != w.done {
			t.Errorf("checkpoint %d: in flight %q with %d steps done, want %q with %d", i, got, len(cp.Steps), w.inFlight, w.done)
		}
	}
}

// An unrecorded durable run is checkpointed before its first step starts,
// even a read-only one, so that the store can create it then; a run whose
// first act is a question is checkpointed once, at the pause.
func TestUnrecordedRunCheckpointsBeforeFirstLaunch(t *testing.T) {
	cat := NewStaticCatalog([]*Tool{{Backend: "svc", Name: "read", Annotations: &ToolAnnotations{ReadOnlyHint: ptr(true)}}})
	p := mustCompile(t, `name: reads
steps:
  - id: a
    tool: svc.read
  - id: b
    tool: svc.read
    depends_on: [a]
`, cat)
	store := &recordingStore{}
	e := New(newFakeCaller(), &Options{Store: store})
	out, err := e.Run(t.Context(), p, nil, &RunOptions{RunID: "r1", Durable: true, Unrecorded: true})
	if err != nil || out.Status != StatusCompleted {
		t.Fatal(err, out)
	}
	if len(store.saved) != 1 {
		t.Fatalf("%d checkpoints, want 1 (before a starts)", len(store.saved))
	}
	if cp, _ := DecodeCheckpoint(store.saved[0]); strings.Join(cp.InFlight, ",") != "a" || len(cp.Steps) != 0 {
		t.Fatalf("first checkpoint: in flight %v, %d steps done", cp.InFlight, len(cp.Steps))
	}

	q := mustCompile(t, `name: ask-first
steps:
  - id: ok
    type: elicitation
    message: Go?
    schema: {type: object, properties: {go: {type: boolean}}}
  - id: a
    tool: svc.read
    depends_on: [ok]
`, cat)
	store = &recordingStore{}
	e = New(newFakeCaller(), &Options{Store: store})
	out, err = e.Run(t.Context(), q, nil, &RunOptions{RunID: "r2", Durable: true, Unrecorded: true})
	if err != nil || out.Status != StatusWaiting {
		t.Fatal(err, out)
	}
	if len(store.saved) != 1 {
		t.Fatalf("%d checkpoints, want 1 (the pause)", len(store.saved))
	}
	if cp, _ := DecodeCheckpoint(store.saved[0]); cp.Pending == nil || cp.Pending.Step != "ok" {
		t.Fatalf("the checkpoint is not the pause: %s", store.saved[0])
	}
}

// A step unsafe to repeat never runs without its record: when another step
// of the same round fails before the record is written, nothing starts.
func TestNoUnsafeCallAfterFailureInTheSameRound(t *testing.T) {
	cat := NewStaticCatalog([]*Tool{{Backend: "svc", Name: "write"}, {Backend: "svc", Name: "read", Annotations: &ToolAnnotations{ReadOnlyHint: ptr(true)}}})
	p := mustCompile(t, `name: race
parameters: {type: object, properties: {x: {type: object}}}
steps:
  - id: a
    tool: svc.write
  - id: b
    tool: svc.read
    condition: "params.x.missing == 1"
`, cat)
	for range 50 {
		store := &recordingStore{}
		f := newFakeCaller()
		e := New(f, &Options{Store: store})
		out, err := e.Run(t.Context(), p, json.RawMessage(`{"x":{}}`), &RunOptions{RunID: "r1", Durable: true, Unrecorded: true})
		if err != nil || out.Status != StatusFailed {
			t.Fatalf("run: %v %+v", err, out)
		}
		if n := len(f.recorded()); n != 0 {
			t.Fatalf("%d backend calls although the run failed before recording them", n)
		}
	}
}

// When an unsafe step succeeds and the run then fails (b is read-only, so
// its launch commits nothing and a's result is still waiting to share a
// commit), the unsafe step's result is still saved. (b depends on a: run
// side by side, b could fail first and cancel a, which is right but not
// what this tests.)
func TestUnsafeResultSavedWhenTheRunFails(t *testing.T) {
	cat := NewStaticCatalog([]*Tool{{Backend: "svc", Name: "write"}, {Backend: "svc", Name: "flaky", Annotations: &ToolAnnotations{ReadOnlyHint: ptr(true)}}})
	p := mustCompile(t, `name: mixed
steps:
  - id: a
    tool: svc.write
  - id: b
    tool: svc.flaky
    depends_on: [a] # else b may fail first and cancel a: a must finish
`, cat)
	store := &recordingStore{}
	f := newFakeCaller().on("svc.flaky", reply{Transport: "connection reset"})
	e := New(f, &Options{Store: store})
	out, err := e.Run(t.Context(), p, nil, &RunOptions{RunID: "r1", Durable: true})
	if err != nil || out.Status != StatusFailed {
		t.Fatalf("run: %v %+v", err, out)
	}
	last, err := DecodeCheckpoint(store.saved[len(store.saved)-1])
	if err != nil {
		t.Fatal(err)
	}
	if s := last.Steps["a"]; s == nil || s.Status != StepCompleted {
		t.Fatalf("the last checkpoint does not hold a's result: %s", store.saved[len(store.saved)-1])
	}
}

// A run that pauses right after an unsafe step writes that step's result
// with its pause: two commits (in flight, paused), not three.
func TestResultSharesThePauseCommit(t *testing.T) {
	cat := NewStaticCatalog([]*Tool{{Backend: "svc", Name: "write"}})
	p := mustCompile(t, `name: write-then-ask
steps:
  - id: w
    tool: svc.write
  - id: ok
    type: elicitation
    message: Go on?
    schema: {type: object, properties: {go: {type: boolean}}}
    depends_on: [w]
`, cat)
	store := &recordingStore{}
	e := New(newFakeCaller(), &Options{Store: store})
	out, err := e.Run(t.Context(), p, nil, &RunOptions{RunID: "r1", Durable: true})
	if err != nil || out.Status != StatusWaiting {
		t.Fatal(err, out)
	}
	if len(store.saved) != 2 {
		t.Fatalf("%d checkpoints, want 2 (w in flight; the pause with w's result)", len(store.saved))
	}
	last, _ := DecodeCheckpoint(store.saved[1])
	if last.Pending == nil || last.Steps["w"] == nil || last.Steps["w"].Status != StepCompleted {
		t.Fatalf("the pause checkpoint lacks w's result: %s", store.saved[1])
	}
}
