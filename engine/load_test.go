package engine

import (
	"strings"
	"testing"

	"github.com/vmcp-dev/vmcp/dsl"
)

// TestMergeDiagnostics: a compiler diagnostic is dropped when its span and
// a loader diagnostic's are nested (either way), kept otherwise.
func TestMergeDiagnostics(t *testing.T) {
	src := `name: x
steps:
  - id: a
    tool: t.t
    arguments:
      q: "{{ x }}"
      n: 1
  - id: b
    tool: t.t
`
	wf, ds := dsl.LoadWorkflow("w.yaml", []byte(src))
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	at := func(line, col int) dsl.Pos { return dsl.Pos{File: "w.yaml", Line: line, Col: col} }
	d := func(p dsl.Pos, msg string) dsl.Diagnostic { return dsl.Diagnostic{Pos: p, Msg: msg} }
	load := dsl.Diagnostics{
		{Pos: at(6, 10), End: at(6, 18), Msg: "L1 the value of q"},
		{Pos: at(7, 7), End: at(7, 11), Msg: "L2 the key n and its value"},
		d(at(8, 5), "L3 step b misses a key"),
	}
	compile := dsl.Diagnostics{
		d(at(6, 14), "C1 inside the value of q: dropped"),
		d(at(7, 10), "C2 the value of n: dropped"),
		d(at(5, 5), "C3 the key arguments and its value, around q: dropped"),
		d(at(8, 5), "C4 at the position of L3: dropped"),
		d(at(8, 9), "C5 the id of step b: kept"),
		d(at(9, 11), "C6 the tool of step b: kept"),
		d(at(4, 5), "C7 the key tool of step a: kept"),
		{Msg: "C8 no position: kept"},
	}
	var got []string
	for _, d := range MergeDiagnostics(wf, load, compile) {
		got = append(got, d.Msg[:2])
	}
	if want := "C8 C7 L1 L2 L3 C5 C6"; strings.Join(got, " ") != want {
		t.Errorf("merged: %s, want %s", strings.Join(got, " "), want)
	}
}

// TestLoadAndCompile: the compiler runs despite load errors, and a clean
// file gives a plan.
func TestLoadAndCompile(t *testing.T) {
	l, err := dsl.NewLoader()
	if err != nil {
		t.Fatal(err)
	}
	_, p, ds := LoadAndCompile("w.yaml", []byte("name: x\ntimeout: soon\nsteps:\n  - {id: a, tool: t.t, condition: 'x ='}\n"), l, nil)
	if p != nil || len(ds) != 2 || !strings.Contains(ds[0].Msg, "not a duration") || !strings.Contains(ds[1].Msg, "condition") {
		t.Errorf("plan %v, diagnostics:\n%v", p, ds)
	}
	wf, p, ds := LoadAndCompile("w.yaml", []byte("name: x\nsteps: [{id: a, tool: t.t}]\n"), nil, nil)
	if wf == nil || p == nil || len(ds) != 0 {
		t.Errorf("clean file: workflow %v, plan %v, diagnostics %v", wf, p, ds)
	}
	if wf, p, ds := LoadAndCompile("w.yaml", []byte("- a\n"), l, nil); wf != nil || p != nil || len(ds) != 1 {
		t.Errorf("not a mapping: workflow %v, plan %v, diagnostics %v", wf, p, ds)
	}
}
