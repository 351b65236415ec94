package telemetry

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// BenchmarkRequestHooks is the telemetry cost of one proxied plain call:
// a SERVER span and a CLIENT span (sampled, batched to a no-op exporter),
// _meta extraction and injection, two histogram records and the
// in-flight gauge. "off" is the nil *T.
func BenchmarkRequestHooks(b *testing.B) {
	in := map[string]any{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	run := func(b *testing.B, tel *T) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			sctx, op := tel.StartServer(ctx, Request{Method: "tools/call", Tool: "echo_echo", ID: int64(7), Session: "s", Transport: "tcp", Client: "127.0.0.1", Meta: in})
			cctx, cop, _ := tel.StartClient(sctx, Call{Method: "tools/call", Backend: "echo", Tool: "echo"}, nil)
			cop.End(cctx, "", "")
			op.End(sctx, "", "")
		}
	}
	b.Run("off", func(b *testing.B) { run(b, nil) })
	for _, mode := range []string{"metrics", "traces", "both"} {
		b.Run(mode, func(b *testing.B) {
			opts := &Options{Getenv: func(string) string { return "" }}
			if mode != "traces" {
				opts.MetricReader = sdkmetric.NewManualReader()
			}
			if mode != "metrics" {
				opts.SpanProcessor = NewBatchSpanProcessor(tracetest.NewNoopExporter(), nil)
			}
			tel, err := New(context.Background(), Config{}, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer tel.Shutdown(context.Background())
			run(b, tel)
		})
	}
}
