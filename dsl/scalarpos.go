package dsl

import (
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// scanScalar maps offset (a byte offset into n.Value) to a line and column
// by walking the scalar's source text next to its decoded value. Every
// source character that should appear verbatim in the value is checked
// against it; on any mismatch it gives up (ok false) and the caller falls
// back to an approximation.
func (s *Source) scanScalar(n *yaml.Node, offset int) (line, col int, ok bool) {
	if n.Kind != yaml.ScalarNode || n.Line < 1 || n.Line > len(s.lines) || n.Column < 1 {
		return 0, 0, false
	}
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return s.scanBlock(n, offset)
	}
	return s.scanFlow(n, offset)
}

// runeLine returns a 1-based line as runes ("\r" trimmed).
func (s *Source) runeLine(n int) []rune { return []rune(s.Line(n)) }

func isBlankRunes(rs []rune) bool {
	for _, r := range rs {
		if r != ' ' && r != '\t' {
			return false
		}
	}
	return true
}

// hasRune reports whether v starts with r, and its encoded size.
func hasRune(v string, r rune) (int, bool) {
	got, size := utf8.DecodeRuneInString(v)
	if size == 0 || got != r {
		return 0, false
	}
	return size, true
}

// scanFlow handles plain, single-quoted and double-quoted scalars, which
// may span lines: a line break folds to a space, or to one "\n" per blank
// line; leading and trailing blanks around a break are dropped.
func (s *Source) scanFlow(n *yaml.Node, offset int) (int, int, bool) {
	val := n.Value
	line := n.Line
	rs := s.runeLine(line)
	ci := n.Column - 1
	// Skip node properties (&anchor, !tag) that precede the scalar.
	for ci < len(rs) && (rs[ci] == '&' || rs[ci] == '!') {
		for ci < len(rs) && rs[ci] != ' ' && rs[ci] != '\t' {
			ci++
		}
		for ci < len(rs) && (rs[ci] == ' ' || rs[ci] == '\t') {
			ci++
		}
	}
	var quote rune
	switch {
	case n.Style&yaml.DoubleQuotedStyle != 0:
		quote = '"'
	case n.Style&yaml.SingleQuotedStyle != 0:
		quote = '\''
	}
	if quote != 0 {
		if ci >= len(rs) || rs[ci] != quote {
			return 0, 0, false
		}
		ci++
	}
	vpos := 0
	for steps := 0; steps < len(s.lines)+1; steps++ {
		escapedBreak := false
		for ci < len(rs) {
			r := rs[ci]
			if vpos == offset {
				return line, ci + 1, true
			}
			switch {
			case quote != 0 && r == quote:
				if quote == '\'' && ci+1 < len(rs) && rs[ci+1] == '\'' {
					size, ok := hasRune(val[vpos:], '\'')
					if !ok {
						return 0, 0, false
					}
					vpos += size
					ci += 2
					continue
				}
				return 0, 0, false // closed before reaching offset
			case quote == '"' && r == '\\':
				if ci+1 >= len(rs) {
					escapedBreak = true
					ci = len(rs)
					continue
				}
				width := 2
				switch rs[ci+1] {
				case 'x':
					width = 4
				case 'u':
					width = 6
				case 'U':
					width = 10
				}
				_, size := utf8.DecodeRuneInString(val[vpos:])
				if size == 0 {
					return 0, 0, false
				}
				vpos += size
				ci += width
				continue
			case r == ' ' || r == '\t':
				if isBlankRunes(rs[ci:]) {
					ci = len(rs) // trailing blanks before a break are dropped
					continue
				}
			}
			size, ok := hasRune(val[vpos:], r)
			if !ok {
				return 0, 0, false
			}
			vpos += size
			ci++
		}
		if vpos == offset {
			return line, min(ci, len(rs)) + 1, true
		}
		// Fold the line break.
		line++
		blanks := 0
		for line <= len(s.lines) && isBlankRunes(s.runeLine(line)) {
			blanks++
			line++
		}
		if line > len(s.lines) {
			return 0, 0, false
		}
		if !escapedBreak {
			sep, count := byte(' '), 1
			if blanks > 0 {
				sep, count = '\n', blanks
			}
			for range count {
				if vpos >= len(val) || val[vpos] != sep {
					return 0, 0, false
				}
				vpos++
				if vpos == offset {
					// The offset is a folded break: point at the next line.
					break
				}
			}
		}
		rs = s.runeLine(line)
		ci = 0
		for ci < len(rs) && (rs[ci] == ' ' || rs[ci] == '\t') {
			ci++
		}
	}
	return 0, 0, false
}

// scanBlock handles literal (|) and folded (>) block scalars. Content starts
// on the line after the indicator, at the indentation of its first non-blank
// line.
func (s *Source) scanBlock(n *yaml.Node, offset int) (int, int, bool) {
	header := s.runeLine(n.Line)
	if n.Column-1 < len(header) {
		for _, r := range header[n.Column-1:] {
			if r >= '1' && r <= '9' {
				return 0, 0, false // explicit indentation indicator
			}
			if r == ' ' || r == '#' {
				break
			}
		}
	}
	first := n.Line + 1
	indent := s.blockIndent(first)
	folded := n.Style&yaml.FoldedStyle != 0
	val := n.Value
	vpos := 0
	lastLine, lastCol := first, indent+1
	for line := first; line <= len(s.lines); line++ {
		rs := s.runeLine(line)
		if isBlankRunes(rs) && len(rs) <= indent {
			if vpos == offset {
				return line, 1, true
			}
			if vpos < len(val) && val[vpos] == '\n' {
				vpos++
			}
			continue
		}
		lead := 0
		for lead < len(rs) && rs[lead] == ' ' {
			lead++
		}
		if lead < indent {
			break // the block ended
		}
		for ci := indent; ci < len(rs); ci++ {
			if vpos == offset {
				return line, ci + 1, true
			}
			size, ok := hasRune(val[vpos:], rs[ci])
			if !ok {
				return 0, 0, false
			}
			vpos += size
		}
		lastLine, lastCol = line, len(rs)+1
		if vpos == offset {
			return line, len(rs) + 1, true
		}
		if vpos < len(val) && (val[vpos] == '\n' || (folded && val[vpos] == ' ')) {
			vpos++
		}
	}
	if vpos >= offset {
		return lastLine, lastCol, true
	}
	return 0, 0, false
}

// blockIndent returns the indentation of the first non-blank line at or
// after line: the content indentation of a block scalar starting there.
func (s *Source) blockIndent(line int) int {
	for l := line; l <= len(s.lines); l++ {
		if strings.TrimLeft(s.Line(l), " ") != "" {
			return s.indent(l)
		}
	}
	return s.indent(line)
}
