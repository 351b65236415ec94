package engine

import "testing"

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
