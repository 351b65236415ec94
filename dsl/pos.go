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
	return &Source{Name: name, Data: data, lines: splitLines(data)}
}

// splitLines splits data at line breaks as yaml.v3 counts them: "\r\n",
// "\r", "\n", NEL (U+0085), LS (U+2028) and PS (U+2029).
func splitLines(data []byte) [][]byte {
	var lines [][]byte
	start := 0
	for i := 0; i < len(data); {
		if n := lineBreakLen(data[i:]); n > 0 {
			lines = append(lines, data[start:i])
			i += n
			start = i
			continue
		}
		i++
	}
	return append(lines, data[start:])
}

// lineBreakLen returns the length of the line break at the start of b, or 0.
func lineBreakLen(b []byte) int {
	switch {
	case len(b) == 0:
		return 0
	case b[0] == '\n':
		return 1
	case b[0] == '\r':
		if len(b) > 1 && b[1] == '\n' {
			return 2
		}
		return 1
	case bytes.HasPrefix(b, []byte("\u0085")):
		return 2
	case bytes.HasPrefix(b, []byte("\u2028")), bytes.HasPrefix(b, []byte("\u2029")):
		return 3
	}
	return 0
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

// NodeEnd returns where a node ends: just after the last character of a
// scalar or alias, or the end of the last entry of a mapping or list (an
// empty one ends where it starts). Positions in between belong to the node.
func (s *Source) NodeEnd(n *yaml.Node) Pos {
	for depth := 0; n != nil && depth < 1000; depth++ {
		switch n.Kind {
		case yaml.DocumentNode, yaml.MappingNode, yaml.SequenceNode:
			if len(n.Content) == 0 {
				return s.NodePos(n)
			}
			n = n.Content[len(n.Content)-1]
		case yaml.AliasNode:
			p := s.NodePos(n)
			p.Col += 1 + utf8.RuneCountInString(n.Value)
			return p
		default:
			return s.OffsetPos(n, len(n.Value))
		}
	}
	return s.NodePos(n)
}

// Within reports whether p lies in the span from..to (both included).
func (p Pos) Within(from, to Pos) bool {
	return p.File == from.File && !p.Before(from) && !to.Before(p)
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
