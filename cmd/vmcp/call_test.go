package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/server"
)

// startGateway serves the embedded demo in process and returns its MCP
// URL. liveWait, if set, bounds how long a live question is waited for.
func startGateway(t *testing.T, liveWait time.Duration) string {
	t.Helper()
	cfg, ds := server.DemoConfig(nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	if liveWait > 0 {
		cfg.Elicitation.LiveWait = dsl.Duration{Value: liveWait, Set: true}
	}
	g, err := server.New(cfg, &server.Options{StatePath: filepath.Join(t.TempDir(), "state.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = g.Close()
	})
	return srv.URL + "/mcp"
}

// cli runs a vmcp command line in process with the given stdin.
func cli(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errb bytes.Buffer
	code = runWithStdin(args, stdin, &out, &errb)
	return code, out.String(), errb.String()
}

// mustCLI runs a command that must exit with want.
func mustCLI(t *testing.T, want int, stdin string, args ...string) (stdout, stderr string) {
	t.Helper()
	code, out, errs := cli(t, strings.NewReader(stdin), args...)
	if code != want {
		t.Fatalf("vmcp %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errs)
	}
	return out, errs
}

var runIDRe = regexp.MustCompile(`vmcp runs resume (r_[A-Za-z0-9_-]+)`)

// pausedRunID starts investigate_incident with a client that cannot
// answer questions and returns the id of the waiting run.
func pausedRunID(t *testing.T, url string) string {
	t.Helper()
	out, _ := mustCLI(t, exitOK, "", "call", "investigate_incident", "--url", url, "--no-elicit", "--args", `{"incident_id":"INC-1042"}`)
	m := runIDRe.FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, `waiting for an answer to step "confirm_page"`) {
		t.Fatalf("call --no-elicit: no paused run in:\n%s", out)
	}
	return m[1]
}

// report decodes the investigate_incident report printed on stdout.
func report(t *testing.T, out string) map[string]any {
	t.Helper()
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("stdout is not the report JSON: %v\n%s", err, out)
	}
	if r["service"] != "checkout" || !strings.HasPrefix(r["ticket"].(string), "T-") {
		t.Fatalf("report: %v", r)
	}
	return r
}

func TestClientTools(t *testing.T) {
	url := startGateway(t, 0)
	out, _ := mustCLI(t, exitOK, "", "tools", "--url", url)
	for _, want := range []string{
		"NAME", "HINTS", "DESCRIPTION",
		"investigate_incident", "incidents_get_incident", "vmcp_run_resume",
		"Gather logs, metrics and recent deploys for an incident",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("tools lacks %q:\n%s", want, out)
		}
	}

	if !regexp.MustCompile(`(?m)^incidents_get_incident +ro +Get one incident`).MatchString(out) {
		t.Errorf("tools: no read-only incidents_get_incident row:\n%s", out)
	}

	out, _ = mustCLI(t, exitOK, "", "tools", "--url", url, "--json")
	var list struct {
		Tools []struct {
			Name        string         `json:"name"`
			InputSchema map[string]any `json:"inputSchema"`
		} `json:"tools"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("tools --json: %v\n%s", err, out)
	}
	found := false
	for _, tl := range list.Tools {
		if tl.Name == "investigate_incident" {
			found = true
			// Printed as sent: keywords mcp-go's typed Tool would drop survive.
			if tl.InputSchema["additionalProperties"] != false {
				t.Errorf("investigate_incident inputSchema: %v", tl.InputSchema)
			}
		}
	}
	if !found {
		t.Errorf("tools --json lacks investigate_incident")
	}
}

func TestClientCallPlainTool(t *testing.T) {
	url := startGateway(t, 0)
	out, _ := mustCLI(t, exitOK, "", "call", "incidents_get_incident", "--url", url, "--args", `{"id":"INC-1042"}`)
	if !strings.Contains(out, `"title": "Checkout payments timing out"`) {
		t.Fatalf("call printed:\n%s", out)
	}

	// A tool error: the text on stderr, exit 1.
	out, errs := mustCLI(t, exitFailure, "", "call", "incidents_get_incident", "--url", url, "--args", `{"id":"INC-9999"}`)
	if out != "" || !strings.Contains(errs, `incident "INC-9999" not found`) {
		t.Fatalf("tool error: stdout %q, stderr %q", out, errs)
	}

	// --json: the whole result.
	out, _ = mustCLI(t, exitFailure, "", "call", "incidents_get_incident", "--url", url, "--args", `{"id":"INC-9999"}`, "--json")
	var res struct {
		IsError bool `json:"isError"`
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.IsError || len(res.Content) != 1 {
		t.Fatalf("call --json: %v\n%s", err, out)
	}

	// Arguments from stdin.
	out, _ = mustCLI(t, exitOK, `{"id": "INC-1039"}`, "call", "incidents_get_incident", "--url", url, "--args", "-")
	if !strings.Contains(out, `"id": "INC-1039"`) {
		t.Fatalf("--args -: %s", out)
	}

	// Usage and connection errors.
	_, errs = mustCLI(t, exitUsage, "", "call", "incidents_get_incident", "--url", url, "--args", `[1]`)
	if !strings.Contains(errs, "--args must be a JSON object, not an array") {
		t.Errorf("--args [1]: %s", errs)
	}
	_, errs = mustCLI(t, exitFailure, "", "call", "no_such_tool", "--url", url)
	if !strings.Contains(errs, "no_such_tool") {
		t.Errorf("unknown tool: %s", errs)
	}
	_, errs = mustCLI(t, exitFailure, "", "tools", "--url", "http://127.0.0.1:1/mcp")
	if !strings.Contains(errs, "cannot connect to http://127.0.0.1:1/mcp") {
		t.Errorf("no server: %s", errs)
	}
}

// The flagship composite asks whether to page; the terminal form answers.
func TestClientCallAnswersTheForm(t *testing.T) {
	url := startGateway(t, 0)
	out, errs := mustCLI(t, exitOK, "y\nnote from test\n", "call", "investigate_incident", "--url", url, "--args", `{"incident_id":"INC-1042"}`)
	if r := report(t, out); r["paged"] != true {
		t.Fatalf("report: %v", r)
	}
	for _, want := range []string{
		"? Checkout payments timing out (high): 412 errors in checkout",
		"Page the on-call engineer (page), required\n  yes/no [yes]: y\n",
		"Note for the page (note)\n  text, optional: note from test\n",
		"[1/8] step incident completed",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}

	// !decline: the workflow goes on without paging (on_decline: continue).
	out, _ = mustCLI(t, exitOK, "!decline\n", "call", "investigate_incident", "--url", url, "--args", `{"incident_id":"INC-1042"}`)
	if r := report(t, out); r["paged"] != false {
		t.Fatalf("declined: %v", r)
	}

	// !cancel: the run is cancelled (on_cancel: abort), a tool error.
	_, errs = mustCLI(t, exitFailure, "!cancel\n", "call", "investigate_incident", "--url", url, "--args", `{"incident_id":"INC-1042"}`)
	if !strings.Contains(strings.ToLower(errs), "cancel") {
		t.Errorf("cancelled: %s", errs)
	}

	// Arguments and answers both from stdin.
	out, _ = mustCLI(t, exitOK, `{"incident_id":"INC-1042"}`+"\nn\n\n", "call", "investigate_incident", "--url", url, "--args", "-")
	if r := report(t, out); r["paged"] != false {
		t.Fatalf("args from stdin: %v", r)
	}

	// --json: the whole result, structured content and run meta included.
	out, _ = mustCLI(t, exitOK, "y\n\n", "call", "investigate_incident", "--url", url, "--args", `{"incident_id":"INC-1042"}`, "--json")
	var res struct {
		StructuredContent map[string]any `json:"structuredContent"`
		Meta              map[string]any `json:"_meta"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.StructuredContent["paged"] != true || res.Meta["vmcp/run"] == nil {
		t.Fatalf("call --json: %v\n%s", err, out)
	}
}

// With no input to answer from, the run stays waiting and call says how
// to answer it.
func TestClientCallInputEnds(t *testing.T) {
	url := startGateway(t, 0)
	out, _ := mustCLI(t, exitOK, "", "call", "investigate_incident", "--url", url, "--args", `{"incident_id":"INC-1042"}`)
	m := runIDRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no resume hint:\n%s", out)
	}
	out, _ = mustCLI(t, exitOK, "", "runs", "show", m[1], "--url", url)
	if !strings.Contains(out, "status    waiting") {
		t.Fatalf("run after the input ended:\n%s", out)
	}
}

// An answer typed after the server stopped waiting (its live wait ended)
// is not lost: it goes to the paused run through the API.
func TestClientCallLateAnswer(t *testing.T) {
	url := startGateway(t, 200*time.Millisecond)
	pr, pw := io.Pipe()
	go func() {
		time.Sleep(time.Second)
		_, _ = io.WriteString(pw, "y\nlate note\n")
		_ = pw.Close()
	}()
	code, out, errs := cli(t, pr, "call", "investigate_incident", "--url", url, "--args", `{"incident_id":"INC-1042"}`)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if r := report(t, out); r["paged"] != true {
		t.Fatalf("report: %v", r)
	}
	if !strings.Contains(errs, "the server stopped waiting for the answer; sending it to run r_") {
		t.Errorf("stderr:\n%s", errs)
	}
}

func TestClientRuns(t *testing.T) {
	url := startGateway(t, 0)
	first := pausedRunID(t, url)
	second := pausedRunID(t, url)
	third := pausedRunID(t, url)

	out, _ := mustCLI(t, exitOK, "", "runs", "list", "--url", url, "--status", "waiting")
	for _, id := range []string{first, second, third} {
		if !strings.Contains(out, id) {
			t.Errorf("runs list lacks %s:\n%s", id, out)
		}
	}
	if !strings.Contains(out, "confirm_page: Checkout payments timing out") {
		t.Errorf("runs list does not show the question:\n%s", out)
	}
	out, _ = mustCLI(t, exitOK, "", "runs", "list", "--url", url, "--status", "waiting", "--limit", "1", "--json")
	var list struct {
		Runs []runSummary `json:"runs"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Runs) != 1 || list.Runs[0].ID != third {
		t.Fatalf("runs list --json --limit 1 (want %s): %v\n%s", third, err, out)
	}
	out, _ = mustCLI(t, exitOK, "", "runs", "list", "--url", url, "--status", "completed")
	if out != "no runs\n" {
		t.Errorf("no completed runs yet: %q", out)
	}

	out, _ = mustCLI(t, exitOK, "", "runs", "show", first, "--url", url)
	for _, want := range []string{
		"Run " + first, "workflow  investigate_incident", "status    waiting",
		"Question (step confirm_page, deadline ", "Page the on-call engineer?",
		"page: yes/no [yes], required — Page the on-call engineer",
		`Schema: {"type":"object","properties":{"page":`, "incident  completed", "History:", "created by anonymous", "paused confirm_page",
		"vmcp runs resume " + first,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("runs show lacks %q:\n%s", want, out)
		}
	}

	// Answered with --content.
	out, _ = mustCLI(t, exitOK, "", "runs", "resume", first, "--url", url, "--action", "accept", "--content", `{"page":false}`)
	if r := report(t, out); r["paged"] != false {
		t.Fatalf("resume: %v", r)
	}
	out, _ = mustCLI(t, exitOK, "", "runs", "show", first, "--url", url, "--json")
	var d map[string]any
	if err := json.Unmarshal([]byte(out), &d); err != nil || d["status"] != "completed" {
		t.Fatalf("runs show --json after resume: %v\n%s", err, out)
	}
	// A second answer is refused.
	_, errs := mustCLI(t, exitFailure, "", "runs", "resume", first, "--url", url, "--content", `{"page":false}`)
	if !strings.Contains(errs, "not waiting") {
		t.Errorf("second answer: %s", errs)
	}
	// A bad answer is refused; the run keeps waiting.
	_, errs = mustCLI(t, exitFailure, "", "runs", "resume", second, "--url", url, "--content", `{"page":"maybe"}`)
	if !strings.Contains(errs, "invalid answer") {
		t.Errorf("bad answer: %s", errs)
	}

	// Answered with the form (the question comes from the API).
	out, errs = mustCLI(t, exitOK, "maybe\ny\nfrom the form\n", "runs", "resume", second, "--url", url)
	if r := report(t, out); r["paged"] != true {
		t.Fatalf("resume with the form: %v", r)
	}
	if !strings.Contains(errs, `! "maybe" is not yes or no`) {
		t.Errorf("form on stderr:\n%s", errs)
	}

	// Cancelled; twice is an error from the API.
	out, _ = mustCLI(t, exitOK, "", "runs", "cancel", third, "--url", url)
	if out != "run "+third+" cancelled\n" {
		t.Errorf("runs cancel: %q", out)
	}
	_, errs = mustCLI(t, exitFailure, "", "runs", "cancel", third, "--url", url)
	if !strings.Contains(errs, "vmcp: cancel run "+third+": run cannot be cancelled (it is cancelled)") {
		t.Errorf("second cancel: %s", errs)
	}
	_, errs = mustCLI(t, exitFailure, "", "runs", "resume", third, "--url", url)
	if !strings.Contains(errs, "is cancelled, not waiting for an answer") {
		t.Errorf("resume a cancelled run: %s", errs)
	}

	// Declined without a form.
	fourth := pausedRunID(t, url)
	out, _ = mustCLI(t, exitOK, "", "runs", "resume", fourth, "--url", url, "--action", "decline")
	if r := report(t, out); r["paged"] != false {
		t.Fatalf("declined: %v", r)
	}

	_, errs = mustCLI(t, exitFailure, "", "runs", "show", "r_nope", "--url", url)
	if !strings.Contains(errs, "vmcp: get run r_nope: run not found") {
		t.Errorf("unknown run: %s", errs)
	}
	mustCLI(t, exitUsage, "", "runs", "list", "--url", url, "--status", "paused")
	mustCLI(t, exitUsage, "", "runs", "resume", fourth, "--url", url, "--action", "maybe")
	mustCLI(t, exitUsage, "", "runs", "resume", fourth, "--url", url, "--action", "decline", "--content", `{}`)
	mustCLI(t, exitUsage, "", "runs", "frobnicate", "--url", url)
}

// $VMCP_URL stands in for --url.
func TestClientURLFromEnv(t *testing.T) {
	url := startGateway(t, 0)
	t.Setenv("VMCP_URL", url)
	out, _ := mustCLI(t, exitOK, "", "runs", "list")
	if out != "no runs\n" {
		t.Errorf("runs list: %q", out)
	}
	mustCLI(t, exitOK, "", "tools")
	t.Setenv("VMCP_URL", "ftp://example.com/mcp")
	mustCLI(t, exitUsage, "", "tools")
}
