package server

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/vmcp-dev/vmcp/state"
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

func TestMetricsGoldenAndAudit(t *testing.T) {
	tel, audit := fullTelemetry(t)
	echo := newMetaBackend(t)
	g, url := startObserved(t, observedConfig(t, echo.url, true), filepath.Join(t.TempDir(), "state.db"), tel)
	s := runScript(t, url)

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
		telemetry.AuditSessionCreated: 2, telemetry.AuditSessionClosed: 2,
		telemetry.AuditToolCalled: 2,
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
