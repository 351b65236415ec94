package dsl

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Pos is a position in a source file: 1-based line and column. Columns
// count characters (runes), as yaml.v3 reports them.
type Pos struct {
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
	Col  int    `json:"col,omitempty"`
}

// IsValid reports whether the position names a line.
func (p Pos) IsValid() bool { return p.Line > 0 }

func (p Pos) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Col == 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	default:
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
	}
}

// Before orders positions by file, line and column.
func (p Pos) Before(q Pos) bool {
	if p.File != q.File {
		return p.File < q.File
	}
	if p.Line != q.Line {
		return p.Line < q.Line
	}
	return p.Col < q.Col
}

// Source is one loaded file: its name (as given by the user) and bytes.
// It maps YAML nodes, and offsets inside scalars, to positions.
type Source struct {
	Name  string
	Data  []byte
	lines [][]byte
}

// NewSource wraps a file's bytes.
func NewSource(name string, data []byte) *Source {
	return &Source{Name: name, Data: data, lines: bytes.Split(data, []byte("\n"))}
}

// Line returns the text of a 1-based line, or "" when out of range.
func (s *Source) Line(n int) string {
	if s == nil || n < 1 || n > len(s.lines) {
		return ""
	}
	return strings.TrimRight(string(s.lines[n-1]), "\r")
}

// NodePos returns the position of a YAML node.
func (s *Source) NodePos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{File: s.Name}
	}
	return Pos{File: s.Name, Line: n.Line, Col: n.Column}
}

// OffsetPos maps a byte offset inside a scalar's decoded value to a position
// in the source. It is exact for plain and quoted scalars (also across
// lines, with escapes) and for literal and folded block scalars, and falls
// back to a close approximation when the source does not line up with the
// value (an explicit indentation indicator, unusual folding); it never points
// before the scalar. Columns count characters, as yaml.v3 does.
func (s *Source) OffsetPos(n *yaml.Node, offset int) Pos {
	p := s.NodePos(n)
	if n == nil {
		return p
	}
	if offset < 0 {
		offset = 0
	}
	if offset > len(n.Value) {
		offset = len(n.Value)
	}
	if line, col, ok := s.scanScalar(n, offset); ok {
		return Pos{File: s.Name, Line: line, Col: col}
	}
	before := n.Value[:offset]
	nl := strings.Count(before, "\n")
	inLine := utf8.RuneCountInString(before[strings.LastIndexByte(before, '\n')+1:])
	switch {
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		// Content starts on the line after the indicator, indented.
		first := n.Line + 1
		return Pos{File: s.Name, Line: first + nl, Col: s.blockIndent(first) + inLine + 1}
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0:
		if nl > 0 {
			return Pos{File: s.Name, Line: n.Line + nl, Col: s.indent(n.Line+nl) + inLine + 1}
		}
		return Pos{File: s.Name, Line: n.Line, Col: n.Column + 1 + inLine}
	default:
		if nl > 0 {
			return Pos{File: s.Name, Line: n.Line + nl, Col: s.indent(n.Line+nl) + inLine + 1}
		}
		return Pos{File: s.Name, Line: n.Line, Col: n.Column + inLine}
	}
}

// indent returns the number of leading spaces of a 1-based line.
func (s *Source) indent(line int) int {
	l := s.Line(line)
	return len(l) - len(strings.TrimLeft(l, " "))
}
