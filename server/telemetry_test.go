package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/google/go-cmp/cmp"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/telemetry"
)

// metaBackend is a real MCP server on loopback whose echo tool records
// the _meta each call carried.
type metaBackend struct {
	mu    sync.Mutex
	metas []map[string]any
	url   string
}

func newMetaBackend(t testing.TB) *metaBackend {
	t.Helper()
	b := &metaBackend{}
	s := mcpserver.NewMCPServer("echo", "1.0.0", mcpserver.WithToolCapabilities(true))
	s.AddTool(mcp.NewTool("echo", mcp.WithString("message")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		m := map[string]any{}
		if req.Params.Meta != nil {
			for k, v := range req.Params.Meta.AdditionalFields {
				m[k] = v
			}
		}
		b.mu.Lock()
		b.metas = append(b.metas, m)
		b.mu.Unlock()
		return mcp.NewToolResultText(req.GetString("message", "")), nil
	})
	srv := httptest.NewServer(mcpserver.NewStreamableHTTPServer(s))
	t.Cleanup(srv.Close)
	b.url = srv.URL + "/mcp"
	return b
}

func (b *metaBackend) last() map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.metas) == 0 {
		return nil
	}
	return b.metas[len(b.metas)-1]
}

// observedConfig is the demo backends and workflows, the echo backend,
// a one-step composite over it (echo_run), and optionally two bearer
// tokens (alice, bob).
func observedConfig(t testing.TB, echoURL string, tokens bool) *dsl.Config {
	t.Helper()
	return observedConfigWith(t, echoURL, tokens, "")
}

// observedConfigWith adds a backend "flaky" at flakyURL (when set) and
// opens a backend's circuit at its first failed call.
func observedConfigWith(t testing.TB, echoURL string, tokens bool, flakyURL string) *dsl.Config {
	t.Helper()
	demo, ds := DemoConfig(nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	var sb strings.Builder
	sb.WriteString("name: otel-test\n")
	if tokens {
		sb.WriteString("incoming_auth:\n  type: tokens\n  tokens:\n")
		sb.WriteString(`    - {principal: alice, sha256: "` + sha("alice-token") + "\"}\n")
		sb.WriteString(`    - {principal: bob, sha256: "` + sha("bob-token") + "\"}\n")
		sb.WriteString(`    - {principal: carol, sha256: "` + sha("carol-token") + "\"}\n")
	}
	if flakyURL != "" {
		sb.WriteString("health: {failure_threshold: 1}\n")
	}
	sb.WriteString("backends:\n  - {name: echo, url: " + echoURL + "}\n")
	if flakyURL != "" {
		sb.WriteString("  - {name: flaky, url: " + flakyURL + "}\n")
	}
	for _, b := range demo.Backends {
		fmt.Fprintf(&sb, "  - {name: %s, builtin: %s}\n", b.Name.Value, b.Builtin.Value)
	}
	sb.WriteString(`composite_tools:
  - name: echo_run
    description: Echo once, as a durable run.
    parameters: {type: object, properties: {message: {type: string}}}
    steps:
      - id: say
        tool: echo.echo
        arguments: {message: "{{ params.message }}"}
`)
	cfg, ds := dsl.LoadConfig("otel.yaml", []byte(sb.String()), func(string) (string, bool) { return "", false })
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	cfg.LoadedWorkflows = append(cfg.LoadedWorkflows, demo.LoadedWorkflows...)
	return cfg
}

// startObserved starts a gateway with the given telemetry on a loopback
// HTTP server; it returns the gateway and the server's base URL.
func startObserved(t testing.TB, cfg *dsl.Config, statePath string, tel *telemetry.T) (*Gateway, string) {
	t.Helper()
	g, err := New(cfg, &Options{StatePath: statePath, Telemetry: tel})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = g.Close()
	})
	return g, srv.URL
}

// endSession deletes a session as its client would (mcp-go's client
// sends its DELETE without the configured Authorization header).
func endSession(t *testing.T, url, token string, c *client.Client) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, url+"/mcp", nil)
	req.Header.Set("Mcp-Session-Id", c.GetSessionId())
	req.Header.Set("MCP-Protocol-Version", mcp.ProtocolVersion20251125)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE session: %d", resp.StatusCode)
	}
}

func sessionClient(t *testing.T, url, token string, opts ...client.ClientOption) *client.Client {
	t.Helper()
	var to []transport.StreamableHTTPCOption
	if token != "" {
		to = append(to, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
	}
	tr, err := transport.NewStreamableHTTP(url+"/mcp", to...)
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr, append([]client.ClientOption{client.WithProtocolVersion(mcp.ProtocolVersion20251125)}, opts...)...)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Initialize(t.Context(), mcp.InitializeRequest{Params: mcp.InitializeParams{ClientInfo: mcp.Implementation{Name: "test"}}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func callMeta(t *testing.T, c *client.Client, name, args string, meta map[string]any) *mcp.CallToolResult {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = json.RawMessage(args)
	if meta != nil {
		req.Params.Meta = &mcp.Meta{AdditionalFields: meta}
	}
	res, err := c.CallTool(t.Context(), req)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

// rpc posts one JSON-RPC request as a stateless 2026-07-28 client.
func rpc(t *testing.T, url, token, body string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2026-07-28")
	var head struct {
		Method string `json:"method"`
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	_ = json.Unmarshal([]byte(body), &head)
	req.Header.Set("Mcp-Method", head.Method)
	if head.Params.Name != "" {
		req.Header.Set("Mcp-Name", head.Params.Name)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if i := bytes.Index(b, []byte("data: ")); i >= 0 && resp.Header.Get("Content-Type") == "text/event-stream" {
		b = bytes.TrimSpace(b[i+6:])
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("rpc: %d %s", resp.StatusCode, b)
	}
	return out
}

func modernCall(name, args, state string, responses string) string {
	p := `"name":"` + name + `","arguments":` + args + `,"_meta":{"` + mcp.MetaKeyProtocolVersion + `":"2026-07-28","` + mcp.MetaKeyClientInfo + `":{"name":"t","version":"1"},"` + mcp.MetaKeyClientCapabilities + `":{"elicitation":{}}}`
	if state != "" {
		p += `,"requestState":"` + state + `","inputResponses":` + responses
	}
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{` + p + `}}`
}

func httpDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func spanNamed(spans []sdktrace.ReadOnlySpan, name string, kind trace.SpanKind) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name && s.SpanKind() == kind {
			out = append(out, s)
		}
	}
	return out
}

func recordedTelemetry(t *testing.T) (*telemetry.T, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, &telemetry.Options{SpanProcessor: rec, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel, rec
}

// With telemetry off, a plain tool call passes the client's W3C trace
// context to the backend as given (the trace goes on through vmcp), and
// nothing else of its _meta but the progress token; a malformed
// traceparent is not passed.
func TestTraceContextPassesThroughWithoutTelemetry(t *testing.T) {
	echo := newMetaBackend(t)
	_, url := startObserved(t, observedConfig(t, echo.url, false), filepath.Join(t.TempDir(), "state.db"), nil)
	c := sessionClient(t, url, "")
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name string
		meta map[string]any
		want map[string]any
	}{
		{"trace context", map[string]any{"traceparent": tp, "tracestate": "k=v", "baggage": "user=alice", "other": "x"},
			map[string]any{"traceparent": tp, "tracestate": "k=v"}},
		{"traceparent alone", map[string]any{"traceparent": tp}, map[string]any{"traceparent": tp}},
		{"later version, extra fields", map[string]any{"traceparent": "01" + tp[2:] + "-extra", "tracestate": "k=v"},
			map[string]any{"traceparent": "01" + tp[2:] + "-extra", "tracestate": "k=v"}},
		{"malformed traceparent", map[string]any{"traceparent": "00-zz-00f067aa0ba902b7-01", "tracestate": "k=v"}, map[string]any{}},
		{"all-zero trace id", map[string]any{"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, map[string]any{}},
		{"not a string", map[string]any{"traceparent": 7}, map[string]any{}},
		{"no _meta", nil, map[string]any{}},
	} {
		if res := callMeta(t, c, "echo_echo", `{"message":"hi"}`, tc.meta); res.IsError {
			t.Fatalf("%s: %s", tc.name, text(res))
		}
		if got := echo.last(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: backend received _meta %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Trace continuity: the client's traceparent parents the SERVER span, the
// backend receives vmcp's CLIENT span as its parent, and a run paused,
// the gateway restarted and the run answered yields a resume segment
// linked to the segment that paused.
func TestTraceContinuity(t *testing.T) {
	tel, rec := recordedTelemetry(t)
	echo := newMetaBackend(t)
	cfg := observedConfig(t, echo.url, false)
	statePath := filepath.Join(t.TempDir(), "state.db")
	g1, url := startObserved(t, cfg, statePath, tel)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const parentID = "00f067aa0ba902b7"
	c := sessionClient(t, url, "")
	res := callMeta(t, c, "echo_echo", `{"message":"hi"}`, map[string]any{"traceparent": "00-" + traceID + "-" + parentID + "-01"})
	if res.IsError {
		t.Fatalf("echo: %s", text(res))
	}
	servers := spanNamed(rec.Ended(), "tools/call echo_echo", trace.SpanKindServer)
	if len(servers) != 1 {
		t.Fatalf("%d SERVER spans for echo_echo", len(servers))
	}
	srv := servers[0]
	if srv.Parent().TraceID().String() != traceID || srv.Parent().SpanID().String() != parentID {
		t.Fatalf("SERVER span parent %s/%s, want the client's %s/%s", srv.Parent().TraceID(), srv.Parent().SpanID(), traceID, parentID)
	}
	clients := spanNamed(rec.Ended(), "tools/call echo", trace.SpanKindClient)
	if len(clients) != 1 || clients[0].Parent().SpanID() != srv.SpanContext().SpanID() {
		t.Fatalf("CLIENT span: %d, parent should be the SERVER span", len(clients))
	}
	want := "00-" + traceID + "-" + clients[0].SpanContext().SpanID().String() + "-01"
	if got := echo.last()["traceparent"]; got != want {
		t.Fatalf("backend received traceparent %v, want %s (vmcp's CLIENT span)", got, want)
	}

	// A workflow step's CLIENT span names its step and attempt.
	if res := callJSON(t, c, "echo_run", `{"message":"hi"}`); res.IsError {
		t.Fatal(text(res))
	}
	steps := 0
	for _, s := range spanNamed(rec.Ended(), "tools/call echo", trace.SpanKindClient) {
		attrs := map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		if attrs[string(telemetry.KeyStepID)] == "say" && attrs[string(telemetry.KeyStepAttempt)] == "1" && attrs[string(telemetry.KeyBackend)] == "echo" {
			steps++
		}
	}
	if steps != 1 {
		t.Fatalf("%d CLIENT spans with vmcp.step.id=say, vmcp.step.attempt=1", steps)
	}

	// Pause a composite run in trace A.
	const traceA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	paused := callMeta(t, c, "investigate_incident", `{"incident_id":"INC-1042"}`, map[string]any{"traceparent": "00-" + traceA + "-" + parentID + "-01"})
	runID, _ := paused.Meta.AdditionalFields["vmcp/run"].(map[string]any)["id"].(string)
	if runID == "" {
		t.Fatalf("no paused run: %s", text(paused))
	}
	segs := spanNamed(rec.Ended(), "invoke_workflow investigate_incident", trace.SpanKindInternal)
	if len(segs) != 1 || segs[0].SpanContext().TraceID().String() != traceA {
		t.Fatalf("first segment: %d spans", len(segs))
	}
	first := segs[0].SpanContext()

	// Restart vmcp on the same state file, answer over HTTP.
	_ = c.Close()
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	_, url2 := startObserved(t, cfg, statePath, tel)
	code, body := httpDo(t, http.MethodPost, url2+"/api/v1/runs/"+runID+"/resume", "", `{"action":"accept","content":{"page":false}}`)
	if code != http.StatusOK || !strings.Contains(body, `"completed"`) {
		t.Fatalf("resume: %d %s", code, body)
	}
	segs = spanNamed(rec.Ended(), "invoke_workflow investigate_incident", trace.SpanKindInternal)
	if len(segs) != 2 {
		t.Fatalf("%d segments after the resume, want 2", len(segs))
	}
	second := segs[1]
	if len(second.Links()) != 1 || second.Links()[0].SpanContext.TraceID() != first.TraceID() || second.Links()[0].SpanContext.SpanID() != first.SpanID() {
		t.Fatalf("resumed segment links %v, want one to %v", second.Links(), first)
	}
	if second.SpanContext().TraceID() == first.TraceID() {
		t.Fatal("the resumed segment should live in the answering request's trace")
	}
}

// Every MCP request gets exactly one SERVER span: initialize, the list
// methods, tools/list answered from the pre-serialised catalogue and by
// mcp-go (a session that falls through, a 2026-07-28 request), a refused
// tools/call and a proxied one. mcp.session.id is set on session-era
// requests only.
func TestServerSpanEveryRequest(t *testing.T) {
	tel, rec := recordedTelemetry(t)
	echo := newMetaBackend(t)
	g, url := startObserved(t, observedConfig(t, echo.url, false), filepath.Join(t.TempDir(), "state.db"), tel)
	c := sessionClient(t, url, "")
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	lr := mcp.ListToolsRequest{}
	lr.Params.Meta = &mcp.Meta{AdditionalFields: map[string]any{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}}
	if _, err := c.ListTools(t.Context(), lr); err != nil {
		t.Fatal(err)
	}
	if g.tl.served.Load() != 1 {
		t.Fatalf("the pre-serialised tools/list served %d requests, want 1", g.tl.served.Load())
	}
	g.tl.off.Store(true) // the next tools/list falls through to mcp-go
	if _, err := c.ListTools(t.Context(), mcp.ListToolsRequest{}); err != nil {
		t.Fatal(err)
	}
	g.tl.off.Store(false)
	if _, err := c.ListPrompts(t.Context(), mcp.ListPromptsRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListResources(t.Context(), mcp.ListResourcesRequest{}); err != nil {
		t.Fatal(err)
	}
	if res := callJSON(t, c, "echo_echo", `{"message":"hi"}`); res.IsError {
		t.Fatal(text(res))
	}
	req := mcp.CallToolRequest{}
	req.Params.Name = "no_such_tool"
	if _, err := c.CallTool(t.Context(), req); err == nil {
		t.Fatal("an unknown tool was called")
	}
	// Methods no one serves: their names must not become span names or
	// label values.
	for _, m := range []string{"vendor/secret-1", "vendor/secret-2"} {
		req, _ := http.NewRequest(http.MethodPost, url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":99,"method":"`+m+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", c.GetSessionId())
		req.Header.Set("MCP-Protocol-Version", mcp.ProtocolVersion20251125)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(b, []byte(`-32601`)) {
			t.Fatalf("%s: %d %s", m, resp.StatusCode, b)
		}
	}
	modern := `{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta":{"` + mcp.MetaKeyProtocolVersion + `":"2026-07-28","` +
		mcp.MetaKeyClientInfo + `":{"name":"t","version":"1"},"` + mcp.MetaKeyClientCapabilities + `":{}}}}`
	if out := rpc(t, url, "", modern); out["result"] == nil {
		t.Fatalf("modern tools/list: %v", out)
	}

	type seen struct {
		session, protocol, errType string
		span                       sdktrace.ReadOnlySpan
	}
	byName := map[string][]seen{}
	for _, s := range rec.Ended() {
		if s.SpanKind() != trace.SpanKindServer {
			continue
		}
		var v seen
		v.span = s
		for _, a := range s.Attributes() {
			switch a.Key {
			case telemetry.KeySessionID:
				v.session = a.Value.AsString()
			case telemetry.KeyProtocolVersion:
				v.protocol = a.Value.AsString()
			case telemetry.KeyErrorType:
				v.errType = a.Value.AsString()
			}
		}
		byName[s.Name()] = append(byName[s.Name()], v)
	}
	want := map[string]int{"initialize": 1, "tools/list": 3, "prompts/list": 1, "resources/list": 1, "tools/call echo_echo": 1, "tools/call": 1, telemetry.OtherTool: 2}
	for name, n := range want {
		if len(byName[name]) != n {
			t.Errorf("%d SERVER spans %q, want %d (all: %v)", len(byName[name]), name, n, keys(byName))
		}
	}
	sid := c.GetSessionId()
	modernSeen := 0
	for name, ss := range byName {
		for _, s := range ss {
			switch {
			case s.protocol == "2026-07-28":
				modernSeen++
				if s.session != "" {
					t.Errorf("%s: a 2026-07-28 request's span has mcp.session.id %q", name, s.session)
				}
			case name == "initialize":
				// The session id is assigned by this request's answer.
			case s.session != sid:
				t.Errorf("%s: mcp.session.id %q, want the session's %q", name, s.session, sid)
			}
		}
	}
	if modernSeen != 1 {
		t.Errorf("%d SERVER spans of 2026-07-28 requests, want 1", modernSeen)
	}
	if ss := byName["tools/call"]; len(ss) == 1 && (ss[0].errType == "" || ss[0].span.Status().Code != codes.Error) {
		t.Errorf("the unknown tool's span: error.type %q, status %v", ss[0].errType, ss[0].span.Status())
	}
	// The pre-serialised tools/list continues the client's trace.
	continued := 0
	for _, s := range byName["tools/list"] {
		if s.span.SpanContext().TraceID().String() == traceID && s.span.Parent().SpanID().String() == "00f067aa0ba902b7" {
			continued++
		}
	}
	if continued != 1 {
		t.Errorf("%d tools/list spans continue the client's trace, want 1 (the pre-serialised one)", continued)
	}
	for _, s := range byName[telemetry.OtherTool] {
		if s.errType != "-32601" {
			t.Errorf("an unknown method's span has error.type %q, want -32601", s.errType)
		}
	}
	for name := range byName {
		if strings.Contains(name, "secret") {
			t.Errorf("a span is named after an unknown method: %q", name)
		}
	}
	// The proxied call's CLIENT span is the SERVER span's child.
	if ss := byName["tools/call echo_echo"]; len(ss) == 1 {
		cl := spanNamed(rec.Ended(), "tools/call echo", trace.SpanKindClient)
		if len(cl) != 1 || cl[0].Parent().SpanID() != ss[0].span.SpanContext().SpanID() {
			t.Errorf("CLIENT spans %d; parent is not the SERVER span", len(cl))
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Telemetry on keeps both lean paths of a plain call: the client's
// tools/call is served without mcp-go (toolscall.go) and the backend call
// goes out on the raw path (backends/rawcall.go: its JSON-RPC ids start at
// 2^40), with vmcp's CLIENT span in _meta, and the SERVER and CLIENT spans
// are recorded.
func TestTelemetryKeepsLeanPaths(t *testing.T) {
	tel, rec := recordedTelemetry(t)
	s := mcpserver.NewMCPServer("echo", "1.0.0", mcpserver.WithToolCapabilities(true))
	s.AddTool(mcp.NewTool("echo", mcp.WithString("message")), echoHandler)
	h := mcpserver.NewStreamableHTTPServer(s)
	var mu sync.Mutex
	var calls []map[string]any
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			var m map[string]any
			if json.Unmarshal(body, &m) == nil && m["method"] == "tools/call" {
				mu.Lock()
				calls = append(calls, m)
				mu.Unlock()
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(be.Close)
	cfg, ds := dsl.LoadConfig("lean.yaml", []byte("name: lean\nbackends:\n  - {name: echo, url: "+be.URL+"/mcp}\n"), func(string) (string, bool) { return "", false })
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	g, url := startObserved(t, cfg, filepath.Join(t.TempDir(), "state.db"), tel)
	c := sessionClient(t, url, "", client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	before := g.tl.callsServed.Load()
	res := callMeta(t, c, "echo_echo", `{"message":"hi"}`, nil)
	if res.IsError {
		t.Fatalf("echo: %s", text(res))
	}
	if n := g.tl.callsServed.Load() - before; n != 1 {
		t.Fatalf("the fast path served %d calls, want 1 (telemetry on must not take mcp-go's path)", n)
	}
	mu.Lock()
	seen := slices.Clone(calls)
	mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("the backend saw %d tools/call", len(seen))
	}
	if id, _ := seen[0]["id"].(float64); id < 1<<40 {
		t.Fatalf("backend tools/call id %v: not the raw path's (≥ 2^40)", seen[0]["id"])
	}
	params, _ := seen[0]["params"].(map[string]any)
	meta, _ := params["_meta"].(map[string]any)
	tp, _ := meta["traceparent"].(string)
	cli := spanNamed(rec.Ended(), "tools/call echo", trace.SpanKindClient)
	srv := spanNamed(rec.Ended(), "tools/call echo_echo", trace.SpanKindServer)
	if len(cli) != 1 || len(srv) != 1 {
		t.Fatalf("%d CLIENT and %d SERVER spans, want 1 each", len(cli), len(srv))
	}
	if want := "00-" + cli[0].SpanContext().TraceID().String() + "-" + cli[0].SpanContext().SpanID().String() + "-01"; tp != want {
		t.Fatalf("backend traceparent %q, want vmcp's CLIENT span %q", tp, want)
	}
	if cli[0].Parent().SpanID() != srv[0].SpanContext().SpanID() {
		t.Fatal("the CLIENT span's parent is not the SERVER span")
	}

	// The fast path describes the request as mcp-go's path does: the same
	// call from a client that declared elicitation (mcp-go serves it) has
	// a SERVER span with the same attributes, its own session id aside.
	mc := sessionClient(t, url, "", client.WithElicitationHandler(okAccepter{}))
	before = g.tl.callsServed.Load()
	if res := callMeta(t, mc, "echo_echo", `{"message":"hi"}`, nil); res.IsError {
		t.Fatalf("echo: %s", text(res))
	}
	if n := g.tl.callsServed.Load() - before; n != 0 {
		t.Fatalf("the fast path served the call of a client that declared elicitation")
	}
	srv = spanNamed(rec.Ended(), "tools/call echo_echo", trace.SpanKindServer)
	if len(srv) != 2 {
		t.Fatalf("%d SERVER spans, want 2", len(srv))
	}
	attrs := func(s sdktrace.ReadOnlySpan) map[string]string {
		out := map[string]string{}
		for _, kv := range s.Attributes() {
			out[string(kv.Key)] = kv.Value.Emit()
		}
		return out
	}
	fast, slow := attrs(srv[0]), attrs(srv[1])
	if fast[string(telemetry.KeySessionID)] == "" || fast[string(telemetry.KeySessionID)] == slow[string(telemetry.KeySessionID)] {
		t.Fatalf("session ids: fast %q, mcp-go %q", fast[string(telemetry.KeySessionID)], slow[string(telemetry.KeySessionID)])
	}
	delete(fast, string(telemetry.KeySessionID))
	delete(slow, string(telemetry.KeySessionID))
	if diff := cmp.Diff(slow, fast); diff != "" {
		t.Fatalf("SERVER span attributes, fast path vs mcp-go's (-mcp-go +fast):\n%s", diff)
	}
}

// Sessions are tracked whatever telemetry is on, not only with metrics:
// with only the audit log, a session's end is audited (session.closed
// was skipped, as if the session never started); with only traces, a
// session-era request's SERVER span carries the session's negotiated
// mcp.protocol.version, as it does when metrics are on too.
func TestSessionsTrackedWithoutMetrics(t *testing.T) {
	echo := mcpserver.NewMCPServer("echo", "1.0.0", mcpserver.WithToolCapabilities(true))
	echo.AddTool(mcp.NewTool("echo", mcp.WithString("message")), echoHandler)
	be := httptest.NewServer(mcpserver.NewStreamableHTTPServer(echo))
	t.Cleanup(be.Close)
	cfg, ds := dsl.LoadConfig("s.yaml", []byte("name: s\nbackends:\n  - {name: echo, url: "+be.URL+"/mcp}\n"), func(string) (string, bool) { return "", false })
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	start := func(tel *telemetry.T) string {
		_, url := startObserved(t, cfg, filepath.Join(t.TempDir(), "state.db"), tel)
		return url
	}

	t.Run("audit only", func(t *testing.T) {
		audit := &syncBuffer{}
		tel, err := telemetry.New(t.Context(), telemetry.Config{}, &telemetry.Options{AuditWriter: audit, Getenv: func(string) string { return "" }})
		if err != nil || tel == nil {
			t.Fatalf("audit-only telemetry: %v, %v", tel, err)
		}
		t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
		url := start(tel)
		c := sessionClient(t, url, "")
		endSession(t, url, "", c)
		deadline := time.Now().Add(5 * time.Second)
		for {
			counts := map[string]int{}
			for _, l := range audit.lines() {
				counts[l["event"].(string)]++
			}
			if counts[telemetry.AuditSessionCreated] == 1 && counts[telemetry.AuditSessionClosed] == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("audit events %v, want one session.created and one session.closed\n%s", counts, audit.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("traces only", func(t *testing.T) {
		tel, rec := recordedTelemetry(t)
		url := start(tel)
		c := sessionClient(t, url, "")
		if res := callMeta(t, c, "echo_echo", `{"message":"hi"}`, nil); res.IsError {
			t.Fatalf("echo: %s", text(res))
		}
		srv := spanNamed(rec.Ended(), "tools/call echo_echo", trace.SpanKindServer)
		if len(srv) != 1 {
			t.Fatalf("%d SERVER spans, want 1", len(srv))
		}
		var got string
		for _, kv := range srv[0].Attributes() {
			if kv.Key == telemetry.KeyProtocolVersion {
				got = kv.Value.AsString()
			}
		}
		if got != mcp.ProtocolVersion20251125 {
			t.Fatalf("SERVER span mcp.protocol.version %q, want %q", got, mcp.ProtocolVersion20251125)
		}
	})
}
