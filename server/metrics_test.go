package server

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/vmcp-dev/vmcp/backends"
	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/statetest"
	"github.com/vmcp-dev/vmcp/telemetry"
)

var updateMetrics = flag.Bool("update-metrics", false, "rewrite testdata/metrics.golden")

// syncBuffer is an audit sink safe for concurrent writes and reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(b.buf.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			panic(fmt.Sprintf("audit line is not JSON: %s", l))
		}
		out = append(out, m)
	}
	return out
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fullTelemetry is Prometheus, tracing (for exemplars) and audit.
func fullTelemetry(t *testing.T) (*telemetry.T, *syncBuffer) {
	t.Helper()
	audit := &syncBuffer{}
	tel, err := telemetry.New(t.Context(), telemetry.Config{Metrics: telemetry.MetricsConfig{Prometheus: true}},
		&telemetry.Options{SpanProcessor: tracetest.NewSpanRecorder(), AuditWriter: audit, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(t.Context()) })
	return tel, audit
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// scripted is the session of the golden and audit tests: two principals,
// a refused login, a denial, plain calls, and three runs answered over
// HTTP, an input_required retry (then replayed) and a live elicitation.
type scripted struct {
	runs []string
	// secrets are values that must appear in no label and no audit line.
	secrets []string
}

func runScript(t *testing.T, url string) scripted {
	t.Helper()
	var s scripted
	s.secrets = append(s.secrets, "alice-token", "bob-token")
	// A refused login.
	if code, _ := httpDo(t, http.MethodPost, url+"/mcp", "nope", `{}`); code != http.StatusUnauthorized {
		t.Fatalf("bad token: %d", code)
	}
	alice := sessionClient(t, url, "alice-token")
	if _, err := alice.ListTools(t.Context(), mcp.ListToolsRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.ListPrompts(t.Context(), mcp.ListPromptsRequest{}); err != nil {
		t.Fatal(err)
	}
	if res := callJSON(t, alice, "echo_echo", `{"message":"arg-value-1"}`); res.IsError {
		t.Fatal(text(res))
	}
	if res := callJSON(t, alice, "incidents_get_incident", `{"id":"INC-1042"}`); res.IsError {
		t.Fatal(text(res))
	}
	s.secrets = append(s.secrets, "arg-value-1", "INC-1042")

	// Run 1: paused result, a denial for bob, answered by alice over HTTP.
	paused := callJSON(t, alice, "investigate_incident", `{"incident_id":"INC-1042"}`)
	run1 := paused.Meta.AdditionalFields["vmcp/run"].(map[string]any)["id"].(string)
	s.runs = append(s.runs, run1)
	if code, _ := httpDo(t, http.MethodPost, url+"/api/v1/runs/"+run1+"/resume", "bob-token", `{"action":"accept","content":{"page":false}}`); code != http.StatusNotFound {
		t.Fatalf("bob answering alice's run: %d", code)
	}
	if code, body := httpDo(t, http.MethodPost, url+"/api/v1/runs/"+run1+"/resume", "alice-token", `{"action":"accept","content":{"page":false,"note":"answer-secret"}}`); code != http.StatusOK {
		t.Fatalf("alice answering: %d %s", code, body)
	}
	s.secrets = append(s.secrets, "answer-secret")

	// Run 2: input_required, answered by the retry, then the token replayed.
	out := rpc(t, url, "alice-token", modernCall("investigate_incident", `{"incident_id":"INC-1042"}`, "", ""))
	res, _ := out["result"].(map[string]any)
	tok, _ := res["requestState"].(string)
	if res["resultType"] != "input_required" || tok == "" {
		t.Fatalf("want input_required: %v", out)
	}
	s.secrets = append(s.secrets, tok)
	answer := `{"confirm_page":{"action":"accept","content":{"page":false,"note":"answer-secret"}}}`
	out = rpc(t, url, "alice-token", modernCall("investigate_incident", `{"incident_id":"INC-1042"}`, tok, answer))
	res, _ = out["result"].(map[string]any)
	if res["isError"] == true || res["resultType"] == "input_required" {
		t.Fatalf("retry: %v", out)
	}
	if m, ok := res["_meta"].(map[string]any); ok {
		s.runs = append(s.runs, m["vmcp/run"].(map[string]any)["id"].(string))
	}
	out = rpc(t, url, "alice-token", modernCall("investigate_incident", `{"incident_id":"INC-1042"}`, tok, answer))
	if res, _ = out["result"].(map[string]any); res["isError"] != true {
		t.Fatalf("replayed token accepted: %v", out)
	}

	// Run 3: bob answers live.
	ans := &answerer{action: mcp.ElicitationResponseActionAccept, content: map[string]any{"page": false, "note": "answer-secret"}}
	bob := sessionClient(t, url, "bob-token", client.WithElicitationHandler(ans))
	done := callJSON(t, bob, "investigate_incident", `{"incident_id":"INC-1042"}`)
	if done.IsError || ans.calls.Load() != 1 {
		t.Fatalf("live: %s (asked %d)", text(done), ans.calls.Load())
	}
	s.runs = append(s.runs, done.Meta.AdditionalFields["vmcp/run"].(map[string]any)["id"].(string))
	endSession(t, url, "alice-token", alice)
	endSession(t, url, "bob-token", bob)
	return s
}

// describe reduces families to "name type label,label" lines (vmcp's own
// and the MCP ones; go_* and process_* come from client_golang).
func describe(fams map[string]*dto.MetricFamily) []string {
	var out []string
	for name, f := range fams {
		if !strings.HasPrefix(name, "vmcp_") && !strings.HasPrefix(name, "mcp_") {
			continue
		}
		labels := map[string]bool{}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				labels[l.GetName()] = true
			}
		}
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out = append(out, fmt.Sprintf("%s %s %s", name, strings.ToLower(f.GetType().String()), strings.Join(keys, ",")))
	}
	sort.Strings(out)
	return out
}

// flakyBackend is a real MCP server whose tools/call answers HTTP 500
// once broken is set (a transport failure: the circuit counts it).
func flakyBackend(t *testing.T) (string, *atomic.Bool) {
	t.Helper()
	s := mcpserver.NewMCPServer("flaky", "1.0.0", mcpserver.WithToolCapabilities(true))
	s.AddTool(mcp.NewTool("ping"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("pong"), nil
	})
	h := mcpserver.NewStreamableHTTPServer(s)
	var broken atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() && r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			if bytes.Contains(b, []byte(`"tools/call"`)) {
				http.Error(w, "backend down", http.StatusInternalServerError)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp", &broken
}

// seedRunning leaves a run marked running in a new state file, as a
// process that stopped mid-run would: the next start interrupts it.
func seedRunning(t *testing.T, path string) string {
	t.Helper()
	st, err := state.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := statetest.NewRun("alice", "deploy")
	if err := st.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := st.Checkpoint(t.Context(), r.ID, json.RawMessage(`{"version":1}`), []string{"call_api"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return r.ID
}

func TestMetricsGoldenAndAudit(t *testing.T) {
	tel, audit := fullTelemetry(t)
	echo := newMetaBackend(t)
	flakyURL, broken := flakyBackend(t)
	statePath := filepath.Join(t.TempDir(), "state.db")
	stopped := seedRunning(t, statePath)
	g, url := startObserved(t, observedConfigWith(t, echo.url, true, flakyURL), statePath, tel)
	s := runScript(t, url)
	// A backend fails: its circuit opens (failure_threshold 1).
	broken.Store(true)
	c := sessionClient(t, url, "carol-token")
	if res := callJSON(t, c, "flaky_ping", `{}`); !res.IsError {
		t.Fatalf("a failing backend's call succeeded: %s", text(res))
	}
	endSession(t, url, "carol-token", c)
	if st := g.mgr.Status(); !slices.ContainsFunc(st, func(b backends.BackendStatus) bool { return b.Name == "flaky" && b.Circuit == backends.CircuitOpen }) {
		t.Fatalf("flaky's circuit is not open: %+v", st)
	}

	fams := scrape(t, url)
	got := describe(fams)
	methods, protocols := map[string]bool{}, map[string]bool{}
	for _, m := range fams["mcp_server_operation_duration_seconds"].GetMetric() {
		for _, l := range m.Label {
			switch l.GetName() {
			case "mcp_method_name":
				methods[l.GetValue()] = true
			case "mcp_protocol_version":
				protocols[l.GetValue()] = true
			}
		}
	}
	if !protocols["2025-11-25"] || !protocols["2026-07-28"] {
		t.Errorf("mcp_protocol_version values %v, want both eras", protocols)
	}
	for _, want := range []string{"initialize", "tools/list", "prompts/list", "tools/call"} {
		if !methods[want] {
			t.Errorf("mcp_server_operation_duration_seconds has no %s series (has %v)", want, methods)
		}
	}
	// Label values of the store, circuit and resume metrics.
	values := func(fam, label string) map[string]bool {
		out := map[string]bool{}
		for _, m := range fams[fam].GetMetric() {
			for _, l := range m.Label {
				if l.GetName() == label {
					out[l.GetValue()] = true
				}
			}
		}
		return out
	}
	for _, v := range []string{"closed", "open", "half_open"} {
		if !values("vmcp_backend_circuit_state", "state")[v] {
			t.Errorf("vmcp_backend_circuit_state has no state=%q series", v)
		}
	}
	for _, op := range []string{"recover", "create", "pause", "claim", "finish"} {
		if !values("vmcp_state_commit_seconds", "op")[op] {
			t.Errorf("vmcp_state_commit_seconds has no op=%q series (has %v)", op, values("vmcp_state_commit_seconds", "op"))
		}
	}
	if d := values("vmcp_resume_seconds", "driver"); !d["bbolt"] || len(d) != 1 {
		t.Errorf("vmcp_resume_seconds drivers %v, want bbolt", d)
	}
	if got := fams["vmcp_resume_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); got < 1 || got > 3 {
		t.Errorf("vmcp_resume_seconds counted %d resumes, want 1..3 (three answers; a resume that ends without a backend call records none)", got)
	}
	if v := values("vmcp_backend_circuit_transitions_total", "to"); !v["open"] || len(v) != 1 {
		t.Errorf("circuit transitions to %v, want open", v)
	}
	golden := filepath.Join("testdata", "metrics.golden")
	if *updateMetrics {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantB, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update-metrics to create it)", err)
	}
	want := strings.Split(strings.TrimSpace(string(wantB)), "\n")
	if !slices.Equal(got, want) {
		t.Errorf("/metrics differs from %s (rerun with -update-metrics if intended)\n got:\n%s\nwant:\n%s", golden, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Exemplars: OpenMetrics carries the trace id of a recorded call.
	req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	om, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(om, []byte(`mcp_server_operation_duration_seconds_bucket{`)) || !bytes.Contains(om, []byte(`# {trace_id="`)) {
		t.Error("no exemplar with a trace_id in the OpenMetrics exposition")
	}

	// Audit: each event as often as the script caused it.
	counts := map[string]int{}
	for _, l := range audit.lines() {
		counts[l["event"].(string)]++
		if l["schema"] != telemetry.AuditSchema {
			t.Errorf("line without schema: %v", l)
		}
	}
	want2 := map[string]int{
		telemetry.AuditAuthFailed: 1, telemetry.AuditAuthzDenied: 1,
		telemetry.AuditSessionCreated: 3, telemetry.AuditSessionClosed: 3,
		telemetry.AuditToolCalled:     3, // echo, incidents, and flaky's failure
		telemetry.AuditRunInterrupted: 1, telemetry.AuditBackendChanged: 1,
		telemetry.AuditRunStarted: 3, telemetry.AuditRunPaused: 3, telemetry.AuditRunAnswered: 3,
		telemetry.AuditAnswerRejected: 1, telemetry.AuditRunFinished: 3,
	}
	for ev, n := range want2 {
		if counts[ev] != n {
			t.Errorf("audit %s: %d lines, want %d (all: %v)\n%s", ev, counts[ev], n, counts, audit.String())
		}
	}
	for ev := range counts {
		if _, ok := want2[ev]; !ok {
			t.Errorf("unexpected audit event %s ×%d", ev, counts[ev])
		}
	}
	for _, l := range audit.lines() {
		switch l["event"] {
		case telemetry.AuditRunInterrupted:
			tg, _ := l["target"].(map[string]any)
			if tg["run"] != stopped || tg["workflow"] != "deploy" {
				t.Errorf("run.interrupted names %v, want run %s of deploy", tg, stopped)
			}
		case telemetry.AuditBackendChanged:
			d, _ := l["detail"].(map[string]any)
			if tg, _ := l["target"].(map[string]any); tg["backend"] != "flaky" || d["kind"] != "circuit" || d["from"] != "closed" || d["to"] != "open" {
				t.Errorf("backend.state_changed: %v", l)
			}
		}
	}
	if r, err := g.runs.store.Get(t.Context(), stopped); err != nil || r.Status != state.StatusInterrupted {
		t.Errorf("the run left running: %v %v", r, err)
	}
	text := audit.String()
	for _, sec := range s.secrets {
		if strings.Contains(text, sec) {
			t.Errorf("audit log contains %q (arguments, answers and tokens appear as digests only)", sec)
		}
	}
	// run.answered lines = the answer events in the store.
	stored := 0
	for _, id := range s.runs {
		run, err := g.runs.store.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range run.History {
			if e.Kind == state.EventAnswered {
				stored++
			}
		}
	}
	if len(s.runs) != 3 || stored != counts[telemetry.AuditRunAnswered] {
		t.Errorf("%d runs, %d answer events in the store, %d run.answered lines", len(s.runs), stored, counts[telemetry.AuditRunAnswered])
	}
}
