package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// spanRec is one span an OTLP/HTTP receiver got.
type spanRec struct {
	name, trace, id, parent string
	kind                    tracepb.Span_SpanKind
	links                   []string // "trace/span"
}

type otlpSink struct {
	mu    sync.Mutex
	spans []spanRec
	url   string
}

func newOTLPSink(t *testing.T) *otlpSink {
	s := &otlpSink{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/v1/traces" {
			w.WriteHeader(http.StatusOK) // metrics: accepted, ignored
			return
		}
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					rec := spanRec{name: sp.Name, trace: hex.EncodeToString(sp.TraceId), id: hex.EncodeToString(sp.SpanId), parent: hex.EncodeToString(sp.ParentSpanId), kind: sp.Kind}
					for _, l := range sp.Links {
						rec.links = append(rec.links, hex.EncodeToString(l.TraceId)+"/"+hex.EncodeToString(l.SpanId))
					}
					s.spans = append(s.spans, rec)
				}
			}
		}
		s.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *otlpSink) named(name string, kind tracepb.Span_SpanKind) []spanRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []spanRec
	for _, sp := range s.spans {
		if sp.name == name && sp.kind == kind {
			out = append(out, sp)
		}
	}
	return out
}

// Trace continuity with the built binary: the client's traceparent parents
// vmcp's SERVER span; the backend receives a traceparent in the same trace
// whose parent is vmcp's CLIENT span; a run paused, vmcp restarted and the
// run answered yields a resume segment linked to the segment that paused.
func TestTraceContinuityBinary(t *testing.T) {
	sink := newOTLPSink(t)
	var (
		mu    sync.Mutex
		metas []map[string]any
	)
	echo := mcpserver.NewMCPServer("echo", "1.0.0", mcpserver.WithToolCapabilities(true))
	echo.AddTool(mcp.NewTool("echo", mcp.WithString("message")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		m := map[string]any{}
		if req.Params.Meta != nil {
			for k, v := range req.Params.Meta.AdditionalFields {
				m[k] = v
			}
		}
		mu.Lock()
		metas = append(metas, m)
		mu.Unlock()
		return mcp.NewToolResultText(req.GetString("message", "")), nil
	})
	backend := httptest.NewServer(mcpserver.NewStreamableHTTPServer(echo))
	t.Cleanup(backend.Close)
	lastMeta := func() map[string]any {
		mu.Lock()
		defer mu.Unlock()
		return metas[len(metas)-1]
	}

	cfgPath := writeConfig(t, `name: otel-e2e
backends:
  - {name: echo, url: `+backend.URL+`/mcp}
telemetry:
  traces: {exporter: otlp, otlp: {endpoint: "`+sink.url+`"}}
  metrics: {prometheus: {enabled: true}}
composite_tools:
  - name: ask_echo
    description: Ask, then echo.
    steps:
      - id: confirm
        type: elicitation
        message: Go?
        schema: {type: object, properties: {ok: {type: boolean}}, required: [ok]}
      - id: say
        tool: echo.echo
        arguments: {message: after}
`)
	run := func() *proc {
		p := launch(t, cfgPath, freeAddr(t))
		if err := p.waitReady(30 * time.Second); err != nil {
			p.kill()
			t.Fatalf("vmcp serve: %v\n%s", err, p.Stderr())
		}
		return p
	}
	p := run()
	stopped := false
	t.Cleanup(func() {
		if !stopped && !p.Exited() {
			p.kill()
		}
	})

	tr, err := transport.NewStreamableHTTP(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(t.Context(), mcp.InitializeRequest{Params: mcp.InitializeParams{ClientInfo: mcp.Implementation{Name: "e2e"}}}); err != nil {
		t.Fatal(err)
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const parentID = "00f067aa0ba902b7"
	call := func(name, args, trace string) *mcp.CallToolResult {
		req := mcp.CallToolRequest{}
		req.Params.Name = name
		req.Params.Arguments = json.RawMessage(args)
		req.Params.Meta = &mcp.Meta{AdditionalFields: map[string]any{"traceparent": "00-" + trace + "-" + parentID + "-01"}}
		res, err := c.CallTool(t.Context(), req)
		if err != nil || res.IsError {
			t.Fatalf("%s: %v %+v", name, err, res)
		}
		return res
	}
	call("echo_echo", `{"message":"hi"}`, traceID)
	got, _ := lastMeta()["traceparent"].(string)
	parts := strings.Split(got, "-")
	if len(parts) != 4 || parts[1] != traceID || parts[2] == parentID {
		t.Fatalf("backend received traceparent %q: want trace %s and vmcp's span as parent", got, traceID)
	}
	backendParent := parts[2]

	const traceA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	paused := call("ask_echo", `{}`, traceA)
	runID, _ := paused.Meta.AdditionalFields["vmcp/run"].(map[string]any)["id"].(string)
	if runID == "" {
		t.Fatalf("not paused: %+v", paused)
	}
	_ = c.Close()
	// Restart: SIGTERM flushes the spans; the state file stays.
	if err := p.stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	p = run()
	resp, err := http.Post(p.Base+"/api/v1/runs/"+runID+"/resume", "application/json", strings.NewReader(`{"action":"accept","content":{"ok":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"completed"`) {
		t.Fatalf("resume: %d %s", resp.StatusCode, body)
	}
	// /metrics works on the binary's main listener.
	mresp, err := http.Get(p.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mbody, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(mbody), `vmcp_runs_finished_total{status="completed",workflow="ask_echo"} 1`) {
		t.Errorf("/metrics after the resume lacks the finished run:\n%s", mbody)
	}
	if err := p.stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	stopped = true
	checkNoRace(t, p)

	servers := sink.named("tools/call echo_echo", tracepb.Span_SPAN_KIND_SERVER)
	if len(servers) != 1 || servers[0].trace != traceID || servers[0].parent != parentID {
		t.Fatalf("SERVER span %+v: want trace %s, parent %s", servers, traceID, parentID)
	}
	clients := sink.named("tools/call echo", tracepb.Span_SPAN_KIND_CLIENT)
	found := false
	for _, cs := range clients {
		if cs.id == backendParent {
			found = cs.trace == traceID && cs.parent == servers[0].id
		}
	}
	if !found {
		t.Fatalf("no CLIENT span %s under the SERVER span in trace %s: %+v", backendParent, traceID, clients)
	}
	segs := sink.named("invoke_workflow ask_echo", tracepb.Span_SPAN_KIND_INTERNAL)
	if len(segs) != 2 {
		t.Fatalf("%d invoke_workflow segments, want 2: %+v", len(segs), segs)
	}
	first, second := segs[0], segs[1]
	if first.trace != traceA {
		t.Fatalf("first segment in trace %s, want %s", first.trace, traceA)
	}
	if len(second.links) != 1 || second.links[0] != first.trace+"/"+first.id {
		t.Fatalf("resumed segment links %v, want %s/%s", second.links, first.trace, first.id)
	}
	// The backend call of the resumed segment is in the resumed trace.
	got, _ = lastMeta()["traceparent"].(string)
	if !strings.Contains(got, "-"+second.trace+"-") {
		t.Fatalf("resumed backend call traceparent %q, want trace %s", got, second.trace)
	}
}
