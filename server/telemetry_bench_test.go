package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/telemetry"
)

// BenchmarkTelemetryProxiedCall: one plain call through vmcp to an HTTP
// echo backend, telemetry off vs on (every span sampled and batched to a
// no-op exporter, metrics recorded with a Prometheus reader), and on-otlp
// (spans exported over OTLP/HTTP to a receiver here: lean spans), and
// on-otlp-sdk (the same with SDK spans, Options.SDKSpans). cpu-ns/op is the
// process's CPU per call: client, vmcp, backend and exporter together.
func BenchmarkTelemetryProxiedCall(b *testing.B) {
	echo := mcpserver.NewMCPServer("echo", "1.0.0", mcpserver.WithToolCapabilities(true))
	echo.AddTool(mcp.NewTool("echo", mcp.WithString("message")), echoHandler)
	backend := httptest.NewServer(mcpserver.NewStreamableHTTPServer(echo))
	b.Cleanup(backend.Close)
	cfg, ds := dsl.LoadConfig("bench.yaml", []byte("name: bench\nbackends:\n  - {name: echo, url: "+backend.URL+"/mcp}\n"), func(string) (string, bool) { return "", false })
	if len(ds) > 0 {
		b.Fatal(ds)
	}
	// An OTLP/HTTP receiver that discards what it gets (the harness's).
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	b.Cleanup(rcv.Close)
	for _, name := range []string{"off", "metrics", "traces", "on", "on-otlp", "on-otlp-sdk"} {
		var tel *telemetry.T
		if name != "off" {
			cfg := telemetry.Config{Metrics: telemetry.MetricsConfig{Prometheus: name != "traces"}}
			opts := &telemetry.Options{Getenv: func(string) string { return "" }}
			switch name {
			case "on-otlp", "on-otlp-sdk": // spans exported for real, as vmcp serve does
				cfg.Traces = telemetry.TracesConfig{Exporter: "otlp", Endpoint: rcv.URL}
				opts.SDKSpans = name == "on-otlp-sdk"
			case "traces", "on":
				opts.SpanProcessor = telemetry.NewBatchSpanProcessor(tracetest.NewNoopExporter(), nil)
			}
			var err error
			tel, err = telemetry.New(context.Background(), cfg, opts)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
		}
		_, url := startObserved(b, cfg, filepath.Join(b.TempDir(), "state.db"), tel)
		c := benchClient(b, url+"/mcp", mcp.ProtocolVersion20251125)
		b.Run(name, func(b *testing.B) {
			req := mcp.CallToolRequest{}
			req.Params.Name = "echo_echo"
			req.Params.Arguments = map[string]any{"message": "hello"}
			b.ReportAllocs()
			cpu := processCPU()
			timed(b, func() {
				res, err := c.CallTool(b.Context(), req)
				if err != nil || res.IsError {
					b.Fatal(err, res)
				}
			})
			// Client, vmcp and backend share this process: the CPU of
			// the whole round trip (export included: the batch
			// processor's goroutine runs here too).
			if used := processCPU() - cpu; used > 0 {
				b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
		})
	}
}
