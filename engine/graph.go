package engine

import (
	"fmt"
	"strings"

	"github.com/vmcp-dev/vmcp/steps"
)

// Drawing a plan. Both renderers read only the plan's public shape (steps in
// plan order, their kinds and their incoming edges) plus whether a step has
// a condition, so the output is stable: the same plan always draws the same
// text, byte for byte.
//
// Conventions shared by both formats:
//   - a tool step is a box labelled with its id and tool reference; a
//     for_each step is a doubled box ("× each"); an elicitation step is a
//     hexagon;
//   - a step with a condition has a dashed border;
//   - an edge from depends_on is solid, an edge that exists only because a
//     step references another step's result is dashed and labelled "ref".

// Mermaid renders the plan as a Mermaid flowchart (top to bottom).
func (p *Plan) Mermaid() string {
	var b strings.Builder
	b.WriteString("flowchart TD\n")
	if p.Name != "" {
		fmt.Fprintf(&b, "  %%%% workflow %s\n", mermaidComment(p.Name))
	}
	var conditional []string
	for _, s := range p.Steps {
		id := mermaidID(s)
		label := mermaidText(stepLabel(s))
		switch s.Kind.(type) {
		case *steps.Elicitation:
			fmt.Fprintf(&b, "  %s{{\"%s\"}}\n", id, label)
		case *steps.ForEach:
			fmt.Fprintf(&b, "  %s[[\"%s\"]]\n", id, label)
		default:
			fmt.Fprintf(&b, "  %s[\"%s\"]\n", id, label)
		}
		if s.condition != nil {
			conditional = append(conditional, id)
		}
	}
	for _, s := range p.Steps {
		for _, d := range s.Deps {
			from := p.depStep(d)
			if from == nil {
				continue
			}
			if d.Explicit {
				fmt.Fprintf(&b, "  %s --> %s\n", mermaidID(from), mermaidID(s))
			} else {
				fmt.Fprintf(&b, "  %s -. ref .-> %s\n", mermaidID(from), mermaidID(s))
			}
		}
	}
	if len(conditional) > 0 {
		b.WriteString("  classDef conditional stroke-dasharray: 5 5\n")
		fmt.Fprintf(&b, "  class %s conditional\n", strings.Join(conditional, ","))
	}
	return b.String()
}

// DOT renders the plan as a Graphviz digraph (`dot -Tsvg`).
func (p *Plan) DOT() string {
	var b strings.Builder
	name := p.Name
	if name == "" {
		name = "workflow"
	}
	fmt.Fprintf(&b, "digraph %s {\n", dotQuote(name))
	b.WriteString("  rankdir=TB;\n")
	b.WriteString("  node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=11];\n")
	b.WriteString("  edge [fontname=\"Helvetica\", fontsize=9];\n")
	for _, s := range p.Steps {
		var attrs []string
		attrs = append(attrs, "label="+dotQuote(stepLabel(s)))
		style := []string{"rounded"}
		switch s.Kind.(type) {
		case *steps.Elicitation:
			attrs = append(attrs, "shape=hexagon", "fillcolor=\"#fff3c4\"")
			style = []string{"filled"}
		case *steps.ForEach:
			attrs = append(attrs, "peripheries=2")
		}
		if s.condition != nil {
			style = append(style, "dashed")
		}
		attrs = append(attrs, "style="+dotQuote(strings.Join(style, ",")))
		fmt.Fprintf(&b, "  %s [%s];\n", dotQuote(s.ID), strings.Join(attrs, ", "))
	}
	for _, s := range p.Steps {
		for _, d := range s.Deps {
			from := p.depStep(d)
			if from == nil {
				continue
			}
			if d.Explicit {
				fmt.Fprintf(&b, "  %s -> %s;\n", dotQuote(from.ID), dotQuote(s.ID))
			} else {
				fmt.Fprintf(&b, "  %s -> %s [style=dashed, label=\"ref\"];\n", dotQuote(from.ID), dotQuote(s.ID))
			}
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// depStep finds the step an edge comes from: by index when it is in range
// and agrees with the id, else by id (a hand-built plan may set only one).
func (p *Plan) depStep(d Dep) *Step {
	if d.Step >= 0 && d.Step < len(p.Steps) && (d.ID == "" || p.Steps[d.Step].ID == d.ID) {
		return p.Steps[d.Step]
	}
	for _, s := range p.Steps {
		if s.ID == d.ID {
			return s
		}
	}
	return nil
}

// stepLabel is a node's text: the step id, then what it does.
func stepLabel(s *Step) string {
	switch k := s.Kind.(type) {
	case *steps.ToolCall:
		if ref := toolRef(k); ref != "" {
			return s.ID + "\n" + ref
		}
	case *steps.ForEach:
		if ref := toolRef(k.Call); ref != "" {
			return s.ID + "\n" + ref + " × each"
		}
		return s.ID + "\nfor each"
	case *steps.Elicitation:
		return s.ID + "\nask the user"
	}
	if s.Kind != nil {
		return s.ID + "\n" + s.Kind.Name()
	}
	return s.ID
}

func toolRef(c *steps.ToolCall) string {
	switch {
	case c == nil:
		return ""
	case c.Ref != "":
		return c.Ref
	case c.Backend != "" || c.Tool != "":
		return c.Backend + "." + c.Tool
	}
	return ""
}

// mermaidID is a node id that cannot collide with Mermaid keywords (a step
// called "end" would otherwise close the chart). Step ids are
// [A-Za-z0-9_]; anything else is replaced so hand-built plans stay valid.
func mermaidID(s *Step) string {
	var b strings.Builder
	b.WriteString("s_")
	for _, r := range s.ID {
		if r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "_%x_", r)
		}
	}
	return b.String()
}

// mermaidText escapes a label for a double-quoted Mermaid string.
func mermaidText(s string) string {
	return strings.NewReplacer(
		"\"", "#quot;",
		"\n", "<br/>",
		"<", "#lt;",
		">", "#gt;",
	).Replace(s)
}

func mermaidComment(s string) string {
	return strings.ReplaceAll(s, "\n", " ")
}

// dotQuote quotes a Graphviz ID; "\n" becomes a centred line break.
func dotQuote(s string) string {
	return "\"" + strings.NewReplacer(
		"\\", "\\\\",
		"\"", "\\\"",
		"\n", "\\n",
	).Replace(s) + "\""
}
