// Package telemetry is vmcp's OpenTelemetry wiring: tracer and meter
// providers built from the config's telemetry block and the standard
// OTEL_* variables, the Prometheus /metrics handler, the span and metric
// vocabulary (attribute keys and metric names are defined once, in
// names.go), and the audit stream.
//
// A nil *T is valid and means "off": every method returns at once, without
// allocating, so the server calls it unconditionally on the hot path.
//
//	t, err := telemetry.New(ctx, telemetry.Config{Metrics: telemetry.MetricsConfig{Prometheus: true}}, nil)
//	defer t.Shutdown(ctx)
//	ctx, op := t.StartServer(ctx, telemetry.Request{Method: "tools/call", Tool: "echo"})
//	… serve the request …
//	op.End(ctx, "", "")          // error type ("" = success), error message
//	mux.Handle("/metrics", t.MetricsHandler())
//
// Trace context travels in MCP's params._meta (SEP-414): ExtractMeta reads
// the client's traceparent, and each backend call carries vmcp's own
// client span: StartCall starts it and TraceMeta gives its traceparent,
// tracestate and baggage for the backends package to write into the
// request (InjectMeta is the same as a _meta map). A paused run keeps no span open: its checkpoint
// stores the traceparent of the segment that paused (TraceParent), and the
// segment that resumes it carries a span link to that context.
package telemetry
