package dsl

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Diagnostic is one problem found in a file, at a position.
type Diagnostic struct {
	Pos Pos    `json:"pos"`
	Msg string `json:"message"`
	// Text is the source line the position points into (for the caret).
	Text string `json:"-"`
	// End, when valid, is where the value (or key: value pair) that the
	// diagnostic rejects ends; the diagnostic is about everything from Pos
	// to End. The loader sets it so that a later stage can recognise its
	// own findings inside a rejected value as consequences of the same
	// mistake (see engine.MergeDiagnostics). Zero: just the position.
	End Pos `json:"-"`
}

func (d Diagnostic) String() string { return d.Pos.String() + ": " + d.Msg }

// Diagnostics is every problem found while loading or compiling. It
// implements error; the zero value is "no problems".
type Diagnostics []Diagnostic

// Error renders all diagnostics, one per line, sorted.
func (ds Diagnostics) Error() string {
	ds = slices.Clone(ds) // sort a copy: Sort compacts in place
	ds.Sort()
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(d.String())
	}
	return b.String()
}

// Err returns ds as an error, or nil when there is nothing to report.
func (ds Diagnostics) Err() error {
	if len(ds) == 0 {
		return nil
	}
	ds = slices.Clone(ds)
	ds.Sort()
	return ds
}

// Sort orders by position, then message, and drops exact duplicates.
func (ds *Diagnostics) Sort() {
	s := *ds
	sort.SliceStable(s, func(i, j int) bool {
		if s[i].Pos != s[j].Pos {
			return s[i].Pos.Before(s[j].Pos)
		}
		return s[i].Msg < s[j].Msg
	})
	out := s[:0]
	for i, d := range s {
		if i > 0 && d.Pos == s[i-1].Pos && d.Msg == s[i-1].Msg {
			continue
		}
		out = append(out, d)
	}
	*ds = out
}

// Add records a diagnostic at p, taking the source line from src (may be nil).
func (ds *Diagnostics) Add(src *Source, p Pos, format string, args ...any) {
	d := Diagnostic{Pos: p, Msg: fmt.Sprintf(format, args...)}
	if src != nil && src.Name == p.File {
		d.Text = src.Line(p.Line)
	}
	*ds = append(*ds, d)
}

// addNode records a diagnostic about the YAML nodes from..to (a value, or
// a key and its value): at from, with End where to ends.
func (ds *Diagnostics) addNode(src *Source, from, to *yaml.Node, format string, args ...any) {
	ds.Add(src, src.NodePos(from), format, args...)
	if from != nil && to != nil {
		(*ds)[len(*ds)-1].End = src.NodeEnd(to)
	}
}

// Append adds other diagnostics.
func (ds *Diagnostics) Append(more Diagnostics) { *ds = append(*ds, more...) }

// Render writes each diagnostic with its source line and a caret under the
// column, the way the CLI prints them.
func (ds Diagnostics) Render(w io.Writer) {
	ds = slices.Clone(ds)
	ds.Sort()
	for _, d := range ds {
		fmt.Fprintln(w, d.String())
		if d.Text == "" || d.Pos.Col < 1 {
			continue
		}
		text := strings.ReplaceAll(d.Text, "\t", " ")
		fmt.Fprintf(w, "    %s\n", text)
		// Columns count characters (as yaml.v3 does), so pad by runes.
		col := min(d.Pos.Col-1, utf8.RuneCountInString(text))
		fmt.Fprintf(w, "    %s^\n", strings.Repeat(" ", col))
	}
}

// AsDiagnostics extracts Diagnostics from err, wrapping any other error as
// one position-less diagnostic.
func AsDiagnostics(err error) Diagnostics {
	if err == nil {
		return nil
	}
	if ds, ok := err.(Diagnostics); ok {
		return ds
	}
	return Diagnostics{{Msg: err.Error()}}
}
