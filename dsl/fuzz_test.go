package dsl

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzLoadWorkflow: the loader never panics, every diagnostic names the
// file and a line (or is one of the few file-level errors), diagnostics are
// sorted, and OffsetPos never points before a scalar.
func FuzzLoadWorkflow(f *testing.F) {
	// Small seeds, one feature each (under 100 bytes): the engine
	// minimizes every new input it finds, for up to a minute each, and a
	// large seed's mutants took the whole -fuzztime being minimized.
	for _, s := range []string{
		"",
		"name: t\ntimeout: 10m\nsteps: [{id: a, tool: p.g, arguments: {id: \"{{ params.id }}\"}}]\n",
		"parameters: {type: object, properties: {id: {type: string}}}\n",
		"steps:\n- id: a\n  retry: {max_attempts: 3, delay: 1s, on: [timeout]}\n",
		"steps:\n- id: q\n  type: elicitation\n  schema: {type: object}\n  on_decline: skip\n",
		"steps:\n- id: b\n  for_each: \"{{ x }}\"\n  as: t\n  depends_on: [a]\n",
		"steps:\n- id: c\n  arguments:\n    body: |\n      text {{ t }}\n\tx\n",
		"steps:\n- {id: d, tool: t, cache: 1, timeout: x}\n",
		"a: {b: 'it''s', c: [1\nd: 2\n",
		"# only a comment\n",
		"a:\n\t- b: @c\n",
		"name: x\nsteps: [{id: a, tool: b}]\n",
		"name: x\nsteps:\n  - id: a\n    type: elicitation\n    tool: t\n    on_decline: {action: nope}\n",
		"name: x\nsteps: [{id: a, tool: b, on_error: {action: retry, retry_count: 3, retry_delay: 1s}}]\n",
		"name: x\nsteps: &s [*s]\n",
		"a: &a [x, x]\nb: [*a, *a, *a]\n",
		"name: x\nsteps:\n  - <<: {id: a}\n    tool: t\n",
		"? [a]\n: b\n",
		"name: \"é\\u00e9\"\nsteps: |\n  text\n",
		"---\n---\n",
		"---", // found by fuzzing: a position past the last line
		"\r0", // found by fuzzing: "\r" is a line break too
		"name: x\ntimeout: 99999999999999h\nmax_parallel: .inf\nsteps: [{id: a, tool: b}]\n",
	} {
		if len(s) > maxFuzzInput {
			f.Fatalf("seed longer than %d bytes would not be run: %q", maxFuzzInput, s)
		}
		f.Add([]byte(s))
	}
	l := newTestLoader(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		// Larger inputs find nothing smaller ones do not, and minimizing
		// them (which the engine does to every new find) eats the run.
		if len(data) > maxFuzzInput {
			return
		}
		wf, ds := l.LoadWorkflow("fuzz.yaml", data)
		lines := len(NewSource("", data).lines)
		for i, d := range ds {
			if d.Pos.File != "fuzz.yaml" {
				t.Errorf("diagnostic without the file name: %q", d)
			}
			if d.Msg == "" {
				t.Errorf("empty message: %q", d)
			}
			if d.Pos.Line > lines {
				t.Errorf("line past the end of the file (%d lines): %q", lines, d)
			}
			if d.Pos.Line <= 0 && !isFileLevel(d) {
				t.Errorf("diagnostic without a line: %q", d)
			}
			if i > 0 && d.Pos.Before(ds[i-1].Pos) {
				t.Errorf("not sorted: %q before %q", ds[i-1], d)
			}
		}
		if wf != nil {
			if wf.Src == nil || wf.Node == nil {
				t.Errorf("workflow without source or node")
			}
			for _, st := range wf.Steps {
				if st == nil || st.Node == nil {
					t.Errorf("nil step or step node")
				}
			}
		}
		// OffsetPos on every scalar, at a few offsets.
		var doc yaml.Node
		if yaml.Unmarshal(data, &doc) != nil {
			return
		}
		src := NewSource("fuzz.yaml", data)
		budget := 200
		var walk func(n *yaml.Node, depth int)
		walk = func(n *yaml.Node, depth int) {
			if n == nil || depth > 50 || budget <= 0 {
				return
			}
			if n.Kind == yaml.ScalarNode {
				budget--
				start := src.NodePos(n)
				for _, off := range []int{0, 1, len(n.Value) / 3, len(n.Value) / 2, len(n.Value) - 1, len(n.Value)} {
					if p := src.OffsetPos(n, off); p.Before(start) || p.Col < 1 {
						t.Errorf("OffsetPos(%q, %d) = %v before the scalar at %v", n.Value, off, p, start)
						return
					}
				}
			}
			for _, c := range n.Content {
				walk(c, depth+1)
			}
		}
		walk(&doc, 0)
	})
}

// maxFuzzInput bounds the inputs FuzzLoadWorkflow looks at.
const maxFuzzInput = 256

// isFileLevel reports whether a diagnostic without a line is one of the
// errors that concern the file as a whole.
func isFileLevel(d Diagnostic) bool {
	return d.Pos.Col == 0 && (strings.HasPrefix(d.Msg, "the file is empty") ||
		strings.HasPrefix(d.Msg, "the file has no ") ||
		strings.HasPrefix(d.Msg, "YAML syntax error: exceeded max depth"))
}
