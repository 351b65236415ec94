package telemetry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// BenchmarkRequestHooks is the telemetry cost of one proxied plain call:
// a SERVER span and a CLIENT span (sampled), _meta extraction, the
// backend call's traceparent (TraceMeta, as the backends package writes
// it), two histogram records and the in-flight gauge. "off" is the
// nil *T; metrics, traces and both batch SDK spans to a no-op exporter;
// both-otlp exports lean spans over OTLP/HTTP to a discarding receiver
// (what vmcp serve does), both-otlp-sdk the same with SDK spans.
// cpu-ns/op is the process's CPU per request, the export goroutine's
// included.
func BenchmarkRequestHooks(b *testing.B) {
	in := map[string]any{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	b.Cleanup(rcv.Close)
	run := func(b *testing.B, tel *T) {
		ctx := context.Background()
		b.ReportAllocs()
		cpu := processCPU()
		for b.Loop() {
			sctx, op := tel.StartServer(ctx, Request{Method: "tools/call", Tool: "echo_echo", ID: int64(7), Session: "s", Transport: "tcp", Client: "127.0.0.1", Meta: in})
			cctx, cop := tel.StartCall(sctx, Call{Method: "tools/call", Backend: "echo", Tool: "echo"})
			var tp [55]byte // the backend call's traceparent, as vmcp writes it
			_, _, _ = tel.TraceMeta(cctx, &tp)
			cop.End(cctx, "", "")
			op.End(sctx, "", "")
		}
		_ = tel.ForceFlush(ctx) // the export of these spans counts too
		if used := processCPU() - cpu; used > 0 {
			b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	}
	b.Run("off", func(b *testing.B) { run(b, nil) })
	for _, mode := range []string{"metrics", "traces", "both", "both-otlp", "both-otlp-sdk"} {
		b.Run(mode, func(b *testing.B) {
			opts := &Options{Getenv: func(string) string { return "" }}
			var cfg Config
			if mode != "traces" {
				opts.MetricReader = sdkmetric.NewManualReader()
			}
			switch mode {
			case "traces", "both":
				opts.SpanProcessor = NewBatchSpanProcessor(tracetest.NewNoopExporter(), nil)
			case "both-otlp", "both-otlp-sdk":
				cfg.Traces = TracesConfig{Exporter: "otlp", Endpoint: rcv.URL}
				opts.SDKSpans = mode == "both-otlp-sdk"
			}
			tel, err := New(context.Background(), cfg, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer tel.Shutdown(context.Background())
			run(b, tel)
		})
	}
}

// processCPU is the process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
