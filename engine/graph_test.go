package engine

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/vmcp-dev/vmcp/steps"
)

// graphPlan is a small hand-built plan with every shape and edge kind:
//
//	incident ─► logs ─┬─► confirm ─► end (conditional, explicit + ref)
//	         └► notify (for_each, ref only)
func graphPlan() *Plan {
	tool := func(ref string) *steps.ToolCall {
		b, n, _ := strings.Cut(ref, ".")
		return &steps.ToolCall{Backend: b, Tool: n, Ref: ref}
	}
	incident := &Step{ID: "incident", Index: 0, Kind: tool("incidents.get_incident")}
	logs := &Step{ID: "logs", Index: 1, Kind: tool("logs.search"),
		Deps: []Dep{{Step: 0, ID: "incident", Inferred: true}}}
	notify := &Step{ID: "notify", Index: 2, Kind: &steps.ForEach{Call: tool("chat.post"), As: "team"},
		Deps: []Dep{{Step: 0, ID: "incident", Inferred: true}}}
	confirm := &Step{ID: "confirm", Index: 3, Kind: &steps.Elicitation{},
		Deps: []Dep{{Step: 1, ID: "logs", Inferred: true}}}
	// "end" is a Mermaid keyword; a quote in a label must be escaped.
	end := &Step{ID: "end", Index: 4, Kind: tool(`tickets.create"x`), condition: &condition{},
		Deps: []Dep{
			{Step: 2, ID: "notify", Explicit: true},
			{Step: 3, ID: "confirm", Explicit: true, Inferred: true},
		}}
	return &Plan{Name: "graph_demo", Steps: []*Step{incident, logs, notify, confirm, end}}
}

func TestMermaid(t *testing.T) {
	p := graphPlan()
	got := p.Mermaid()
	if again := p.Mermaid(); again != got {
		t.Fatalf("Mermaid() is not stable:\n%s\nvs\n%s", got, again)
	}
	checkMermaid(t, got)

	for _, want := range []string{
		"  s_incident -. ref .-> s_logs\n", // inferred only: dashed, labelled
		"  s_notify --> s_end\n",           // explicit: solid
		"  s_confirm --> s_end\n",          // explicit and inferred: solid
		"  s_confirm{{\"confirm<br/>ask the user\"}}\n",
		"  s_notify[[\"notify<br/>chat.post × each\"]]\n",
		"#quot;",
		"  class s_end conditional\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Mermaid() lacks %q:\n%s", want, got)
		}
	}
}

// checkMermaid checks the flowchart's structure line by line: the header,
// node declarations, edges whose endpoints are all declared, and class
// lines. It is the subset of Mermaid the renderer emits; anything else is
// an error.
func checkMermaid(t *testing.T, src string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(src, "\n"), "\n")
	if len(lines) == 0 || lines[0] != "flowchart TD" {
		t.Fatalf("mermaid: does not start with \"flowchart TD\":\n%s", src)
	}
	var (
		node    = regexp.MustCompile(`^  (s_\w+)(\["[^"]*"\]|\[\["[^"]*"\]\]|\{\{"[^"]*"\}\})$`)
		edge    = regexp.MustCompile(`^  (s_\w+) (-->|-\. ref \.->) (s_\w+)$`)
		class   = regexp.MustCompile(`^  class (s_\w+(?:,s_\w+)*) conditional$`)
		comment = regexp.MustCompile(`^  %% `)
	)
	declared := map[string]bool{}
	for i, l := range lines[1:] {
		switch {
		case node.MatchString(l):
			id := node.FindStringSubmatch(l)[1]
			if declared[id] {
				t.Errorf("mermaid line %d: node %s declared twice", i+2, id)
			}
			declared[id] = true
		case edge.MatchString(l):
			m := edge.FindStringSubmatch(l)
			for _, id := range []string{m[1], m[3]} {
				if !declared[id] {
					t.Errorf("mermaid line %d: edge endpoint %s is not declared", i+2, id)
				}
			}
		case class.MatchString(l):
			for _, id := range strings.Split(class.FindStringSubmatch(l)[1], ",") {
				if !declared[id] {
					t.Errorf("mermaid line %d: class names undeclared node %s", i+2, id)
				}
			}
		case l == "  classDef conditional stroke-dasharray: 5 5", comment.MatchString(l):
		default:
			t.Errorf("mermaid line %d: unexpected %q", i+2, l)
		}
	}
}

func TestDOT(t *testing.T) {
	p := graphPlan()
	got := p.DOT()
	if again := p.DOT(); again != got {
		t.Fatalf("DOT() is not stable")
	}
	for _, want := range []string{
		"digraph \"graph_demo\" {\n",
		"  \"incident\" -> \"logs\" [style=dashed, label=\"ref\"];\n",
		"  \"notify\" -> \"end\";\n",
		"  \"confirm\" -> \"end\";\n",
		"shape=hexagon",
		"peripheries=2",
		`label="end\ntickets.create\"x"`,
		`style="rounded,dashed"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("DOT() lacks %q:\n%s", want, got)
		}
	}
	checkDOT(t, got)
}

// checkDOT runs Graphviz on the source when it is installed. CI installs
// it (.ci/run), so there a missing `dot` is a failure, not a skip.
func checkDOT(t *testing.T, src string) {
	t.Helper()
	dot, err := exec.LookPath("dot")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("graphviz `dot` is not installed; CI installs it")
		}
		t.Fatalf("graphviz `dot` is not installed (CI=%s): %v", os.Getenv("CI"), err)
	}
	cmd := exec.CommandContext(t.Context(), dot, "-Tsvg")
	cmd.Stdin = strings.NewReader(src)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dot -Tsvg: %v\n%s\nsource:\n%s", err, stderr.String(), src)
	}
	if stderr.Len() > 0 {
		t.Errorf("dot -Tsvg warned:\n%s\nsource:\n%s", stderr.String(), src)
	}
	if !bytes.Contains(stdout.Bytes(), []byte("<svg")) {
		t.Errorf("dot -Tsvg produced no SVG")
	}
}

func TestGraphEmptyPlan(t *testing.T) {
	p := &Plan{}
	if got, want := p.Mermaid(), "flowchart TD\n"; got != want {
		t.Errorf("Mermaid() = %q, want %q", got, want)
	}
	checkDOT(t, p.DOT())
}
