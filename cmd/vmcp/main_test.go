package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// vmcp runs the command line in-process and returns its exit code, stdout
// and stderr.
func vmcp(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("glob %s: %v (%d matches)", pattern, err, len(m))
	}
	return m
}

// The shipped workflows and the ToolHive proposal's examples must validate
// against their catalogues: they are what users read first.
func TestValidateShipped(t *testing.T) {
	tests := []struct {
		name    string
		files   []string
		catalog string
		wantOut string
	}{
		{"demo workflows", glob(t, "../../workflows/*.yaml"), "../../testdata/catalog/demo.json", "ok: 4 workflows\n"},
		{"demo workflows offline", glob(t, "../../workflows/*.yaml"), "", "ok: 4 workflows\n"},
		{"proposal examples", glob(t, "../../testdata/proposal/*.yaml"), "../../testdata/proposal/catalog.json", "ok: 2 workflows\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"validate"}, tt.files...)
			if tt.catalog != "" {
				args = append(args, "--catalog", tt.catalog)
			}
			code, out, errs := vmcp(t, args...)
			if code != exitOK || out != tt.wantOut {
				t.Fatalf("vmcp %s: exit %d, stdout %q, want 0 and %q; stderr:\n%s", strings.Join(args, " "), code, out, tt.wantOut, errs)
			}
		})
	}
}

// validate reports every problem, each as file:line:col with the source
// line and a caret, and exits 1.
func TestValidateReportsEveryError(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	src := `name: bad_workflow
description: Two independent mistakes.
steps:
  - id: first
    tool: logs.serch
    arguments: {service: checkout, since: 1h}
  - id: second
    tool: chat.post
    arguments: {channel: "#ops", text: "{{ steps.nope.output.text }}"}
`
	if err := os.WriteFile(bad, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := vmcp(t, "validate", bad, "--catalog", "../../testdata/catalog/demo.json")
	if code != exitFailure || out != "" {
		t.Fatalf("exit %d, stdout %q; want 1 and nothing on stdout; stderr:\n%s", code, out, errs)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(bad) + `:5:\d+: .*logs\.serch`),
		regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(bad) + `:9:\d+: .*nope`),
		// Render indents the source line by 4; the caret sits under column 11.
		regexp.MustCompile(`(?m)^        tool: logs\.serch\n {14}\^$`),
	} {
		if !want.MatchString(errs) {
			t.Errorf("stderr does not match %s:\n%s", want, errs)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	wf := "../../workflows/investigate_incident.yaml"
	for _, args := range [][]string{
		{"no-such-command"},
		{"validate", "--no-such-flag", wf},
		{"validate", "--config", "vmcp.yaml", wf},
		{"graph"},
		{"graph", wf, wf},
		{"graph", wf, "--format", "svg"},
		{"version", "extra"},
		{"serve", "extra"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errs := vmcp(t, args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stdout %q; stderr:\n%s", code, exitUsage, out, errs)
			}
			if !strings.HasPrefix(errs, "vmcp: ") {
				t.Errorf("stderr does not start with \"vmcp: \":\n%s", errs)
			}
		})
	}
}

func TestMissingFileFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, args := range [][]string{
		{"validate", missing},
		{"graph", missing},
		{"validate", "../../workflows/investigate_incident.yaml", "--catalog", missing},
	} {
		code, out, errs := vmcp(t, args...)
		if code != exitFailure || out != "" || !strings.Contains(errs, "missing.yaml") {
			t.Errorf("vmcp %s: exit %d, stdout %q; want 1 and an error naming the file; stderr:\n%s", strings.Join(args, " "), code, out, errs)
		}
	}
}

// Every shipped workflow draws: Mermaid with all edge endpoints declared,
// DOT that Graphviz accepts.
func TestGraphShipped(t *testing.T) {
	for _, wf := range glob(t, "../../workflows/*.yaml") {
		t.Run(filepath.Base(wf), func(t *testing.T) {
			code, out, errs := vmcp(t, "graph", wf, "--catalog", "../../testdata/catalog/demo.json")
			if code != exitOK {
				t.Fatalf("graph: exit %d; stderr:\n%s", code, errs)
			}
			checkMermaid(t, out)

			code, out, errs = vmcp(t, "graph", wf, "--format", "dot")
			if code != exitOK {
				t.Fatalf("graph --format dot: exit %d; stderr:\n%s", code, errs)
			}
			runDot(t, out)
		})
	}
}

// The flagship's graph has the edges its references imply, drawn as
// inferred, and its one explicit edge drawn solid.
func TestGraphFlagshipEdges(t *testing.T) {
	code, out, errs := vmcp(t, "graph", "../../workflows/investigate_incident.yaml")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, errs)
	}
	for _, want := range []string{
		"s_incident -. ref .-> s_logs",
		"s_logs -. ref .-> s_confirm_page",
		"s_metrics -. ref .-> s_confirm_page",
		"s_confirm_page -. ref .-> s_page",
		"s_notify --> s_report",
		"s_page -. ref .-> s_report",
		"s_deploys -. ref .-> s_report",
		`s_confirm_page{{"`,
		`s_notify[["`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("graph lacks %q:\n%s", want, out)
		}
	}
}

func checkMermaid(t *testing.T, src string) {
	t.Helper()
	if !strings.HasPrefix(src, "flowchart TD\n") {
		t.Fatalf("mermaid does not start with \"flowchart TD\":\n%s", src)
	}
	node := regexp.MustCompile(`(?m)^  (s_\w+)[\[{]`)
	edge := regexp.MustCompile(`(?m)^  (s_\w+) (?:-->|-\. ref \.->) (s_\w+)$`)
	declared := map[string]bool{}
	for _, m := range node.FindAllStringSubmatch(src, -1) {
		declared[m[1]] = true
	}
	edges := edge.FindAllStringSubmatch(src, -1)
	if len(edges) == 0 {
		t.Errorf("mermaid has no edges:\n%s", src)
	}
	for _, m := range edges {
		for _, id := range m[1:] {
			if !declared[id] {
				t.Errorf("mermaid edge endpoint %s is not declared:\n%s", id, src)
			}
		}
	}
}

// runDot feeds DOT source to Graphviz. CI installs graphviz (.ci/run), so
// there a missing `dot` fails the test instead of skipping it.
func runDot(t *testing.T, src string) {
	t.Helper()
	dot, err := exec.LookPath("dot")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("graphviz `dot` is not installed; CI installs it")
		}
		t.Fatalf("graphviz `dot` is not installed: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), dot, "-Tsvg", "-o", os.DevNull)
	cmd.Stdin = strings.NewReader(src)
	if msg, err := cmd.CombinedOutput(); err != nil || len(msg) > 0 {
		t.Fatalf("dot -Tsvg: %v\n%s\nsource:\n%s", err, msg, src)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := vmcp(t, "version")
	if code != exitOK || !strings.HasPrefix(out, "vmcp dev ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: exit %d, %q; want \"vmcp dev … go1.…\"", code, out)
	}
}

// With no config and no ./vmcp.yaml, serve compiles the embedded demo and
// says plainly that the gateway is not built yet.
func TestServeEmbeddedDemo(t *testing.T) {
	t.Chdir(t.TempDir())
	tools, errs := serveStdioToolsList(t)
	for _, want := range []string{"investigate_incident", "deploy_with_confirmation", "incidents_get_incident", "logs_search", "vmcp_run_resume"} {
		if !strings.Contains(tools, `"name":"`+want+`"`) {
			t.Errorf("tools/list over stdio lacks %s:\n%s\nstderr:\n%s", want, tools, errs)
		}
	}
	if !strings.Contains(errs, "the embedded demo") {
		t.Errorf("serve does not say it serves the embedded demo:\n%s", errs)
	}
}

// serveStdioToolsList runs `vmcp serve --stdio` in the current directory,
// lists the tools over MCP on its stdin/stdout, then closes stdin (which
// ends serve). It returns the tools/list response line and stderr.
func serveStdioToolsList(t *testing.T) (string, string) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	var errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- runWithStdin([]string{"serve", "--stdio"}, inR, outW, &errb)
		_ = outW.Close()
	}()
	send := func(s string) {
		if _, err := io.WriteString(inW, s+"\n"); err != nil {
			t.Errorf("writing to serve: %v", err)
		}
	}
	lines := bufio.NewScanner(outR)
	lines.Buffer(make([]byte, 1<<20), 16<<20)
	next := func() string {
		if !lines.Scan() {
			t.Fatalf("serve closed stdout early; stderr:\n%s", errb.String())
		}
		return lines.Text()
	}
	send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}`)
	if first := next(); !strings.Contains(first, `"id":1`) {
		t.Fatalf("initialize: %s", first)
	}
	send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	send(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	var tools string
	for tools == "" {
		if l := next(); strings.Contains(l, `"id":2`) {
			tools = l
		}
	}
	_ = inW.Close()
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	if code := <-done; code != exitOK {
		t.Fatalf("serve --stdio exited %d; stderr:\n%s", code, errb.String())
	}
	return tools, errb.String()
}

// The README's tour shows a real diagnostic; keep it true. The test makes
// the same two edits as the README's sed command and compares the output.
func TestReadmeTourDiagnostic(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const cmdLine = "$ go run ./cmd/vmcp validate /tmp/broken.yaml --catalog testdata/catalog/demo.json\n"
	_, after, ok := strings.Cut(string(readme), cmdLine)
	if !ok {
		t.Fatalf("README.md no longer has the line %q", cmdLine)
	}
	want, _, _ := strings.Cut(after, "```")

	src, err := os.ReadFile("../../workflows/investigate_incident.yaml")
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.NewReplacer(
		"tool: logs.search", "tool: logs.serch",
		"steps.deploys.output.deploys", "steps.deploy.output.deploys",
	).Replace(string(src))
	dir := t.TempDir()
	file := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(file, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs := vmcp(t, "validate", file, "--catalog", "../../testdata/catalog/demo.json")
	got := strings.ReplaceAll(errs, dir, "/tmp")
	if code != exitFailure || got != want {
		t.Errorf("exit %d; README.md shows:\n%s\nvalidate prints:\n%s", code, want, got)
	}
}

// writeFiles writes name → content under dir, creating directories.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// validate --config compiles the workflow files the config names and its
// inline composite_tools; serve picks up ./vmcp.yaml; a workflow name
// defined twice is an error at the second definition.
func TestConfig(t *testing.T) {
	flagship := readFile(t, "../../workflows/investigate_incident.yaml")
	const config = `name: test
backends:
  - {name: incidents, builtin: incidents}
  - {name: logs, builtin: logs}
  - {name: metrics, builtin: metrics}
  - {name: deploys, builtin: deploys}
  - {name: chat, builtin: chat}
  - {name: tickets, builtin: tickets}
workflows: [wf/*.yaml]
composite_tools:
  - name: inline_one
    steps:
      - {id: a, tool: incidents.get_incident, arguments: {id: "{{ params.id }}"}}
`
	t.Run("ok", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"vmcp.yaml": config, "wf/investigate_incident.yaml": flagship})
		code, out, errs := vmcp(t, "validate", "--config", filepath.Join(dir, "vmcp.yaml"), "--catalog", "../../testdata/catalog/demo.json")
		if code != exitOK || out != "ok: 2 workflows\n" {
			t.Fatalf("validate --config: exit %d, stdout %q; stderr:\n%s", code, out, errs)
		}
		// Online: against the live (builtin) backends.
		code, out, errs = vmcp(t, "validate", "--config", filepath.Join(dir, "vmcp.yaml"))
		if code != exitOK || out != "ok: 2 workflows\n" {
			t.Fatalf("validate --config (online): exit %d, stdout %q; stderr:\n%s", code, out, errs)
		}

		t.Chdir(dir)
		tools, errs := serveStdioToolsList(t)
		if !strings.Contains(tools, `"name":"inline_one"`) || !strings.Contains(tools, `"name":"investigate_incident"`) || !strings.Contains(errs, "vmcp.yaml") {
			t.Fatalf("serve with ./vmcp.yaml: tools %s\nstderr:\n%s", tools, errs)
		}
	})
	t.Run("duplicate name", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"vmcp.yaml": config, "wf/a.yaml": flagship, "wf/b.yaml": flagship})
		code, _, errs := vmcp(t, "validate", "--config", filepath.Join(dir, "vmcp.yaml"))
		if code != exitFailure || !strings.Contains(errs, filepath.Join(dir, "wf/b.yaml")+":") ||
			strings.Count(errs, `"investigate_incident"`) != 1 || !strings.HasSuffix(errs, "\n1 error\n") {
			t.Fatalf("exit %d; want exactly one error, about wf/b.yaml:\n%s", code, errs)
		}
	})
	t.Run("duplicate name on the command line", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"a.yaml": flagship, "b.yaml": flagship})
		a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
		line := strings.Count(flagship[:strings.Index(flagship, "\nname: ")+1], "\n") + 1
		want := fmt.Sprintf(`%s:%d:7: workflow "investigate_incident" is already defined at %s:%d:7`, b, line, a, line)
		code, _, errs := vmcp(t, "validate", a, b)
		if code != exitFailure || !strings.Contains(errs, want) || !strings.HasSuffix(errs, "\n1 error\n") {
			t.Fatalf("exit %d; want exactly one error %q:\n%s", code, want, errs)
		}
	})
}

// The proposal writes `parameters` as a bare map of properties; the tool's
// advertised inputSchema must still be a proper object schema.
func TestProposalInputSchema(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{"deploy_and_notify.yaml", `{"properties":{"pr_number":{"type":"integer"}},"type":"object"}`},
		{"investigate_incident.yaml", `{"properties":{"incident_id":{"type":"string"},"time_range":{"default":"1h","type":"string"}},"type":"object"}`},
	}
	catalog, err := loadCatalog("../../testdata/proposal/catalog.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			l := newLoader(catalog)
			l.file(filepath.Join("../../testdata/proposal", tt.file))
			if len(l.diags) > 0 || len(l.plans) != 1 {
				t.Fatalf("%v", l.diags)
			}
			var got any
			if err := json.Unmarshal(l.plans[0].plan.InputSchema, &got); err != nil {
				t.Fatal(err)
			}
			canon, _ := json.Marshal(got)
			if string(canon) != tt.want {
				t.Errorf("InputSchema = %s, want %s", canon, tt.want)
			}
		})
	}
}

// The proposal's create_report has no depends_on; its references alone
// make it wait for the four fetches.
func TestGraphProposalReferencesAreEdges(t *testing.T) {
	code, out, errs := vmcp(t, "graph", "../../testdata/proposal/investigate_incident.yaml")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, errs)
	}
	checkMermaid(t, out)
	for _, from := range []string{"fetch_app_logs", "fetch_error_metrics", "fetch_trace_data", "fetch_infra_status"} {
		if want := "  s_" + from + " -. ref .-> s_create_report\n"; !strings.Contains(out, want) {
			t.Errorf("graph lacks %q:\n%s", want, out)
		}
	}
}

// Complete workflows in the language reference (```yaml blocks that start
// with the schema modeline) validate against the demo catalogue.
func TestDocsExamplesValidate(t *testing.T) {
	doc := readFile(t, "../../docs/workflow-language.md")
	dir := t.TempDir()
	n := 0
	for _, block := range strings.Split(doc, "```yaml\n")[1:] {
		src, _, _ := strings.Cut(block, "```")
		if !strings.HasPrefix(src, "# yaml-language-server:") {
			continue
		}
		n++
		file := filepath.Join(dir, fmt.Sprintf("example%d.yaml", n))
		writeFiles(t, dir, map[string]string{filepath.Base(file): src})
		code, _, errs := vmcp(t, "validate", file, "--catalog", "../../testdata/catalog/demo.json")
		if code != exitOK {
			t.Errorf("example %d of docs/workflow-language.md: exit %d\n%s", n, code, errs)
		}
	}
	if n == 0 {
		t.Fatal("docs/workflow-language.md has no complete example")
	}
}
