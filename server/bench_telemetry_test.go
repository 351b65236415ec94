package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// BenchmarkTelemetryPaired measures what a telemetry mode adds to a
// proxied call, in one process: a client calls a gateway with telemetry
// off and one with the mode on, in turn (the order alternating), against
// the same echo backend, so both sides' latencies come from the same
// moments. added-p50-ns is p50(on) − p50(off) over the b.N pairs; run
// it several times (-count) and read the spread. "aa" pairs two gateways
// with telemetry off, "aa-traced" two with traces on: the method's own
// bias.
//
//	go test ./server -run '^$' -bench TelemetryPaired -benchtime 3000x -count 6
//
// The client sends a W3C traceparent in _meta (flags 01, or 00 for
// "traces-unsampled"), as a traced agent does: with telemetry off vmcp
// passes it on, with traces on it sends its CLIENT span's, so the backend
// decodes one _meta on both sides. Spans go to an OTLP/HTTP receiver that
// discards them; metrics to the Prometheus reader.
func BenchmarkTelemetryPaired(b *testing.B) {
	echo := mcpserver.NewMCPServer("echo", "1.0.0", mcpserver.WithToolCapabilities(true))
	echo.AddTool(mcp.NewTool("echo", mcp.WithString("message")), echoHandler)
	backend := httptest.NewServer(mcpserver.NewStreamableHTTPServer(echo))
	b.Cleanup(backend.Close)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	b.Cleanup(rcv.Close)
	line := "  - {name: echo, url: " + backend.URL + "/mcp}\n"
	traces := "  traces: {exporter: otlp, sampling_ratio: 1, otlp: {endpoint: " + rcv.URL + "}}\n"
	metrics := "  metrics: {prometheus: {enabled: true}}\n"
	const sampled, unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	for _, mode := range []struct {
		name, yaml, traceparent string
		offYAML                 string // the "off" side's (aa-traced: both on)
	}{
		{"aa", "", sampled, ""},
		{"aa-traced", "telemetry:\n" + traces, unsampled, "telemetry:\n" + traces},
		{"metrics", "telemetry:\n" + metrics, sampled, ""},
		{"traces-unsampled", "telemetry:\n" + traces, unsampled, ""},
		{"traces-sampled", "telemetry:\n" + traces, sampled, ""},
		{"traces+metrics", "telemetry:\n" + traces + metrics, sampled, ""},
	} {
		b.Run(mode.name, func(b *testing.B) {
			gOff, offURL := startGateway(b, nil, false, mode.offYAML, line)
			gOn, onURL := startGateway(b, nil, false, mode.yaml, line)
			off := benchClient(b, offURL, mcp.ProtocolVersion20251125)
			on := benchClient(b, onURL, mcp.ProtocolVersion20251125)
			req := mcp.CallToolRequest{}
			req.Params.Name = "echo_echo"
			req.Params.Arguments = map[string]any{"message": "hello"}
			req.Params.Meta = &mcp.Meta{AdditionalFields: map[string]any{"traceparent": mode.traceparent}}
			call := func(c *client.Client) time.Duration {
				t0 := time.Now()
				res, err := c.CallTool(b.Context(), req)
				d := time.Since(t0)
				if err != nil || res.IsError {
					b.Fatal(err, res)
				}
				return d
			}
			for range 200 {
				call(off)
				call(on)
			}
			offD, onD := make([]time.Duration, b.N), make([]time.Duration, b.N)
			b.ResetTimer()
			for i := range b.N {
				if i%2 == 0 {
					offD[i], onD[i] = call(off), call(on)
				} else {
					onD[i], offD[i] = call(on), call(off)
				}
			}
			b.StopTimer()
			// Both sides on the same path: every call served without mcp-go
			// (toolscall.go), telemetry on or off.
			if nOff, nOn := gOff.tl.callsServed.Load(), gOn.tl.callsServed.Load(); nOff != nOn || nOff < int64(b.N) {
				b.Fatalf("fast path served %d calls off, %d on (of %d)", nOff, nOn, b.N+200)
			}
			slices.Sort(offD)
			slices.Sort(onD)
			b.ReportMetric(float64(offD[b.N/2]), "off-p50-ns")
			b.ReportMetric(float64(onD[b.N/2]), "on-p50-ns")
			b.ReportMetric(float64(onD[b.N/2]-offD[b.N/2]), "added-p50-ns")
		})
	}
}
