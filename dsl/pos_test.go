package dsl

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// firstScalarValue parses src and returns the value node of its first key.
func firstScalarValue(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	n := resolve(&doc)
	if n.Kind == yaml.MappingNode {
		n = resolve(n.Content[1])
	}
	for n.Kind == yaml.SequenceNode {
		n = resolve(n.Content[1])
	}
	if n.Kind != yaml.ScalarNode {
		t.Fatalf("not a scalar: %v", n.Kind)
	}
	return n
}

// TestOffsetPos maps the offset of the marker "X" in each scalar's value to
// a position and checks that the source has "X" there (columns count
// characters).
func TestOffsetPos(t *testing.T) {
	tests := []struct{ name, src string }{
		{"plain", "k: hello X world\n"},
		{"plain after unicode", "k: héllo wörld X\n"},
		{"plain on several lines", "k: first line\n  second X line\n"},
		{"plain with a blank line", "k: first\n\n  second X\n"},
		{"single quoted", "k: 'it''s X'\n"},
		{"double quoted", "k: \"simple X\"\n"},
		{"double quoted with escapes", "k: \"tab\\there \\u00e9 \\\" X\"\n"},
		{"double quoted on several lines", "k: \"first line\n  second X line\"\n"},
		{"double quoted with a blank line", "k: \"a\n\n  b X\"\n"},
		{"double quoted escaped line break", "k: \"abc\\\n  def X\"\n"},
		{"literal block", "k: |\n  line one\n  line X two\n"},
		{"literal block after a blank line", "k: |\n\n  after blank X\n"},
		{"literal block, more indented line", "k: |\n  a\n    indented X\n"},
		{"literal block, strip", "k: |-\n  one\n  X\n"},
		{"literal block in a list", "- a\n- |\n  line\n  is X\n"},
		{"folded block", "k: >\n  folded one\n  folded X two\n"},
		{"folded block with a blank line", "k: >\n  a\n\n  b X\n"},
		{"folded block, more indented", "k: >\n  a\n    b\n  c X\n"},
		{"anchored", "k: &anchor value X\n"},
		{"tagged", "k: !!str value X\n"},
		{"flow sequence item", "- a\n- [a, \"b X\", c]\n"},
		{"CRLF literal", "k: |\r\n  a\r\n  b X\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := firstScalarValue(t, tt.src)
			off := strings.Index(n.Value, "X")
			if off < 0 {
				t.Fatalf("no marker in value %q", n.Value)
			}
			src := NewSource("f.yaml", []byte(tt.src))
			got := src.OffsetPos(n, off)
			i := bytes.IndexByte([]byte(tt.src), 'X')
			want := offsetToPos(src, i)
			if got != want {
				t.Errorf("OffsetPos(%q, %d) = %v, want %v", n.Value, off, got, want)
			}
		})
	}
}

// TestOffsetPosBounds: out-of-range offsets clamp, and no offset points
// before the scalar.
func TestOffsetPosBounds(t *testing.T) {
	srcs := []string{
		"k: plain value\n",
		"k: \"quoted\\nvalue\"\n",
		"k: |\n  block\n  value\n",
		"k: >\n  folded\n\n  value\n",
		"k: |2\n   explicit indentation\n",
	}
	for _, s := range srcs {
		n := firstScalarValue(t, s)
		src := NewSource("f.yaml", []byte(s))
		start := src.NodePos(n)
		for off := -2; off <= len(n.Value)+2; off++ {
			p := src.OffsetPos(n, off)
			if p.Before(start) || p.Line > strings.Count(s, "\n")+1 || p.Col < 1 {
				t.Errorf("%q offset %d: %v (scalar at %v)", s, off, p, start)
			}
		}
	}
	if p := NewSource("f", nil).OffsetPos(nil, 3); p != (Pos{File: "f"}) {
		t.Errorf("nil node: %v", p)
	}
}

// TestColumnsCountRunes documents that yaml.v3 columns count characters,
// which Pos, OffsetPos and Render rely on.
func TestColumnsCountRunes(t *testing.T) {
	n := firstScalarValue(t, "k: [é, x]\n")
	_ = n
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("- [é, x]\n"), &doc); err != nil {
		t.Fatal(err)
	}
	x := doc.Content[0].Content[0].Content[1]
	if x.Column != 7 || utf8.RuneCountInString("- [é, ") != 6 {
		t.Errorf("column of x = %d, want 7 (characters, not bytes)", x.Column)
	}
}
