package engine

import (
	"go.yaml.in/yaml/v3"

	"github.com/vmcp-dev/vmcp/dsl"
)

// This file is what every caller that turns workflow files into plans
// does (the CLI, and the golden tests so that they show what users see):
// load, compile even when the loader found problems, and merge the two
// stages' diagnostics so that each mistake is reported once.

// LoadAndCompile loads a workflow file's bytes with l (nil: a fresh
// loader, see dsl.LoadWorkflow) and compiles it; see CompileLoaded. The
// workflow is nil when the file is not a YAML mapping.
func LoadAndCompile(name string, data []byte, l *dsl.Loader, opts *CompileOptions) (*dsl.Workflow, *Plan, dsl.Diagnostics) {
	var (
		wf *dsl.Workflow
		ds dsl.Diagnostics
	)
	if l == nil {
		wf, ds = dsl.LoadWorkflow(name, data)
	} else {
		wf, ds = l.LoadWorkflow(name, data)
	}
	p, ds := CompileLoaded(wf, ds, opts)
	return wf, p, ds
}

// CompileLoaded compiles a workflow as the loader returned it, with the
// loader's diagnostics. It compiles even when there are some, so that one
// run reports every problem (the compiler tolerates the zero values the
// loader leaves where the schema failed). It returns the plan, nil unless
// there is no diagnostic at all, and the diagnostics of both stages,
// merged by MergeDiagnostics and sorted.
func CompileLoaded(wf *dsl.Workflow, loadDiags dsl.Diagnostics, opts *CompileOptions) (*Plan, dsl.Diagnostics) {
	if wf == nil {
		ds := append(dsl.Diagnostics(nil), loadDiags...)
		ds.Sort()
		return nil, ds
	}
	p, compileDiags := Compile(wf, opts)
	ds := MergeDiagnostics(wf, loadDiags, compileDiags)
	if len(ds) > 0 {
		return nil, ds
	}
	return p, nil
}

// MergeDiagnostics returns the loader's diagnostics of wf's file and the
// compiler's that are not about the same mistake, sorted.
//
// The rule: the loader's diagnostics are all kept, and a compiler
// diagnostic is dropped when it is about the same part of the file as a
// loader diagnostic, or a part nested in it or around it. Each diagnostic
// is about a span of the file:
//
//   - a loader diagnostic about a value spans that value, or the key and
//     its value for a key that should not be there (dsl.Diagnostic.End);
//     one without an end (a missing key) is just its position;
//   - a compiler diagnostic at the start of a value spans that value, at a
//     key the key and its value, and elsewhere (inside a string, say) is
//     just its position.
//
// Two diagnostics are about the same mistake when one span contains the
// other. So the loader's word stands for a value it rejected and for
// anything the compiler found inside it (an enum field's type and "the
// form must be flat" about the same line), and the compiler does not
// restate, about a whole mapping, what the loader said about a part of it
// (an elicitation schema with the wrong type does not also "need
// properties"). The loader's messages are the ones kept because they are
// about the file as written (keys, types, spelling), the first thing to
// fix; what the compiler finds elsewhere in the file is kept.
func MergeDiagnostics(wf *dsl.Workflow, loadDiags, compileDiags dsl.Diagnostics) dsl.Diagnostics {
	out := append(dsl.Diagnostics(nil), loadDiags...)
	if len(compileDiags) > 0 {
		var spans []span
		for _, d := range loadDiags {
			sp := span{d.Pos, d.Pos}
			if d.End.IsValid() {
				sp.to = d.End
			}
			spans = append(spans, sp)
		}
		var sp *spanner
		if wf != nil && wf.Src != nil {
			sp = newSpanner(wf.Src, wf.Node)
		}
		for _, d := range compileDiags {
			s := span{d.Pos, d.Pos}
			if sp != nil {
				s = sp.at(d.Pos)
			}
			if !coveredBy(s, spans) {
				out = append(out, d)
			}
		}
	}
	out.Sort()
	return out
}

// span is a stretch of a file, both ends included.
type span struct{ from, to dsl.Pos }

func (s span) contains(t span) bool {
	return t.from.Within(s.from, s.to) && t.to.Within(s.from, s.to)
}

func coveredBy(s span, spans []span) bool {
	if !s.from.IsValid() {
		return false
	}
	for _, l := range spans {
		if l.from.IsValid() && (l.contains(s) || s.contains(l)) {
			return true
		}
	}
	return false
}

// spanner finds the span of the YAML node that starts at a position.
type spanner struct {
	src *dsl.Source
	// starts maps a position to the smallest node starting there (a key
	// stands for its key: value pair), with the span.
	starts map[dsl.Pos]span
}

func newSpanner(src *dsl.Source, root *yaml.Node) *spanner {
	s := &spanner{src: src, starts: map[dsl.Pos]span{}}
	s.walk(root, 0)
	return s
}

// walk records n and everything under it. Children are recorded after
// their parent, so a child starting where its parent does (the first key
// of a block mapping) wins: it is the smaller node.
func (s *spanner) walk(n *yaml.Node, depth int) {
	if n == nil || depth > 200 {
		return
	}
	s.starts[s.src.NodePos(n)] = span{s.src.NodePos(n), s.src.NodeEnd(n)}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			s.walk(v, depth+1)
			s.starts[s.src.NodePos(k)] = span{s.src.NodePos(k), s.src.NodeEnd(v)}
		}
		return
	}
	for _, c := range n.Content {
		s.walk(c, depth+1)
	}
}

// at returns the span of the node starting at p, or just p.
func (s *spanner) at(p dsl.Pos) span {
	if sp, ok := s.starts[p]; ok {
		return sp
	}
	return span{p, p}
}
