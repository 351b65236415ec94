package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestNeedContentOnlyWhenRead: a step's content list is decoded only when
// an expression reads steps.<id>.content or the whole step; reading a
// field of its output does not count (expr's walk is post-order, and the
// inner chains of steps.a.output.n used to be recorded as whole-step
// reads too, so every content list was decoded).
func TestNeedContentOnlyWhenRead(t *testing.T) {
	p := mustCompile(t, `name: nc
steps:
  - id: a
    tool: svc.a
  - id: b
    tool: svc.b
    arguments: {n: "{{ steps.a.output.n }}", m: "{{ steps.a.output.list[0].name }}"}
  - id: c
    tool: svc.c
    arguments: {t: "{{ steps.b.content[0].text }}"}
  - id: d
    tool: svc.d
    arguments: {s: "{{ steps.c }}"}
  - id: e
    tool: svc.e
    condition: steps.d.output.ok == true
  - id: f
    tool: svc.f
    arguments: {s: "{{ steps.e.status }}"}
`, nil)
	want := map[string]bool{"a": false, "b": true, "c": true, "d": false, "e": false, "f": false}
	for id, w := range want {
		if got := p.Step(id).needContent; got != w {
			t.Errorf("step %s: needContent = %v, want %v", id, got, w)
		}
	}
}

// TestChainRunsInline: a step that is the only one in flight runs on the
// run's own goroutine (no worker hand-off); independent steps still get
// workers and overlap.
func TestChainRunsInline(t *testing.T) {
	e := New(newStaticCaller(0), nil)
	out, err := e.Run(context.Background(), mustCompile(t, chainWorkflow(5), nil), nil, nil)
	if err != nil || out.Status != StatusCompleted {
		t.Fatal(err, out)
	}
	if n := e.work.spawned.Load(); n != 0 {
		t.Errorf("a chain of 5 steps started %d workers, want 0", n)
	}
	var sb strings.Builder
	sb.WriteString("name: fan\nmax_parallel: 4\nsteps:\n")
	for i := range 4 {
		fmt.Fprintf(&sb, "  - id: s%d\n    tool: svc.step\n", i)
	}
	out, err = e.Run(context.Background(), mustCompile(t, sb.String(), nil), nil, nil)
	if err != nil || out.Status != StatusCompleted {
		t.Fatal(err, out)
	}
	if n := e.work.spawned.Load(); n == 0 {
		t.Error("a fan-out of 4 started no workers")
	}
}
