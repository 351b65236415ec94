package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Off is a nil *T: every hook on the hot path must cost no allocation.
func TestOffAllocatesNothing(t *testing.T) {
	var tel *T
	ctx := context.Background()
	meta := map[string]any{"progressToken": 1}
	allocs := testing.AllocsPerRun(1000, func() {
		c, op := tel.StartServer(ctx, Request{Method: "tools/call", Tool: "x", Transport: "tcp"})
		c2, cop, m := tel.StartClient(c, Call{Method: "tools/call", Backend: "b", Tool: "x"}, meta)
		cop.End(c2, "", "")
		_ = m
		c3, seg := tel.StartSegment(c, "wf", "r_1", "")
		seg.Event("paused")
		seg.End(c3, "completed", nil)
		op.End(c, "", "")
		tel.RunStarted(ctx, "wf")
		tel.RunFinished(ctx, "wf", "completed")
		tel.Paused(ctx, "wf", "mrtr")
		tel.Answered(ctx, "wf", "accept", "http", time.Second)
		tel.TokenRejected(ctx, "replayed")
		tel.AuthFailed(ctx, "invalid_token")
		tel.Audit(ctx, AuditEvent{Event: AuditToolCalled})
		_ = tel.Arguments(nil)
	})
	if allocs != 0 {
		t.Fatalf("telemetry off allocates %v times per request", allocs)
	}
	if tel.MetricsHandler() != nil || tel.Tracing() || tel.Auditing() {
		t.Fatal("nil telemetry reports something on")
	}
}

// Everything off in the config (and no test hooks) gives the nil *T.
func TestNewOff(t *testing.T) {
	tel, err := New(context.Background(), Config{}, &Options{Getenv: func(string) string { return "" }})
	if err != nil || tel != nil {
		t.Fatalf("New(off) = %v, %v; want nil, nil", tel, err)
	}
	// OTEL_SDK_DISABLED wins over the config.
	tel, err = New(context.Background(), Config{Metrics: MetricsConfig{Prometheus: true}}, &Options{Getenv: func(k string) string {
		if k == "OTEL_SDK_DISABLED" {
			return "true"
		}
		return ""
	}})
	if err != nil || tel != nil {
		t.Fatalf("OTEL_SDK_DISABLED: %v, %v", tel, err)
	}
	// OTEL_METRICS_EXPORTER turns Prometheus on.
	tel, err = New(context.Background(), Config{}, &Options{Getenv: func(k string) string {
		if k == "OTEL_METRICS_EXPORTER" {
			return "prometheus"
		}
		return ""
	}})
	if err != nil || tel.MetricsHandler() == nil {
		t.Fatalf("OTEL_METRICS_EXPORTER=prometheus: %v, %v", tel, err)
	}
	_ = tel.Shutdown(context.Background())
}

func newRecorded(t *testing.T) (*T, *tracetest.SpanRecorder, *sdkmetric.ManualReader) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	rd := sdkmetric.NewManualReader()
	tel, err := New(t.Context(), Config{}, &Options{SpanProcessor: rec, MetricReader: rd, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel, rec, rd
}

// The client's _meta traceparent parents the SERVER span; the _meta sent
// to the backend names vmcp's CLIENT span; the client's own traceparent is
// overwritten and its baggage is not forwarded.
func TestMetaPropagation(t *testing.T) {
	tel, rec, _ := newRecorded(t)
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	const clientSpan = "00f067aa0ba902b7"
	in := map[string]any{"traceparent": "00-" + clientTrace + "-" + clientSpan + "-01", "baggage": "user=alice"}
	ctx, op := tel.StartServer(t.Context(), Request{Method: "tools/call", Tool: "echo", Meta: in, Transport: "tcp"})
	cctx, cop, out := tel.StartClient(ctx, Call{Method: "tools/call", Backend: "b", Tool: "echo"}, map[string]any{"progressToken": 7, "traceparent": in["traceparent"]})
	cop.End(cctx, "", "")
	op.End(ctx, "", "")

	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	client, server := spans[0], spans[1]
	if server.Name() != "tools/call echo" || server.SpanKind() != trace.SpanKindServer {
		t.Fatalf("server span %q %v", server.Name(), server.SpanKind())
	}
	if server.Parent().TraceID().String() != clientTrace || server.Parent().SpanID().String() != clientSpan || !server.Parent().IsRemote() {
		t.Fatalf("server parent %v", server.Parent())
	}
	if client.SpanKind() != trace.SpanKindClient || client.Parent().SpanID() != server.SpanContext().SpanID() {
		t.Fatalf("client span parent %v", client.Parent())
	}
	want := "00-" + clientTrace + "-" + client.SpanContext().SpanID().String() + "-01"
	if out["traceparent"] != want || out["progressToken"] != 7 {
		t.Fatalf("backend _meta %v, want traceparent %s", out, want)
	}
	if _, ok := out["baggage"]; ok {
		t.Fatal("baggage forwarded without propagate_baggage")
	}
}

// The W3C level-2 random flag (0x02) a client sends reaches the backend
// with vmcp's span as the parent, on the SDK's spans and on lean spans
// alike, as propagation.TraceContext would carry it (the sampler is
// parent-based: an unsampled client keeps vmcp's spans unsampled).
func TestMetaPropagationKeepsRandomFlag(t *testing.T) {
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	sdkTel, _, _ := newRecorded(t)
	sink := newTraceSink(t)
	leanTel := otlpTel(t, sink, 1, nil, Options{})
	if leanTel.lean == nil {
		t.Fatal("OTLP telemetry without lean spans")
	}
	for _, tc := range []struct{ in, want string }{{"03", "03"}, {"02", "02"}, {"01", "01"}, {"00", "00"}} {
		for name, tel := range map[string]*T{"sdk": sdkTel, "lean": leanTel} {
			in := map[string]any{"traceparent": "00-" + clientTrace + "-00f067aa0ba902b7-" + tc.in}
			ctx, op := tel.StartServer(t.Context(), Request{Method: "tools/call", Tool: "echo", Meta: in})
			cctx, cop, out := tel.StartClient(ctx, Call{Method: "tools/call", Backend: "b", Tool: "echo"}, nil)
			sc := trace.SpanContextFromContext(cctx)
			cop.End(cctx, "", "")
			op.End(ctx, "", "")
			want := "00-" + clientTrace + "-" + sc.SpanID().String() + "-" + tc.want
			if out["traceparent"] != want {
				t.Errorf("%s: client flags %s: backend traceparent %v, want %s", name, tc.in, out["traceparent"], want)
			}
			prop := propagation.MapCarrier{}
			propagation.TraceContext{}.Inject(cctx, prop)
			if out["traceparent"] != prop["traceparent"] {
				t.Errorf("%s: client flags %s: backend traceparent %v, propagator %s", name, tc.in, out["traceparent"], prop["traceparent"])
			}
		}
	}
}

// A resumed segment links to the one that paused.
func TestSegmentLink(t *testing.T) {
	tel, rec, rd := newRecorded(t)
	ctx, seg := tel.StartSegment(t.Context(), "wf", "r_1", "")
	stored := TraceParent(ctx)
	seg.Event("paused")
	seg.End(ctx, "waiting", nil)
	ctx2, seg2 := tel.StartSegment(context.Background(), "wf", "r_1", stored)
	seg2.End(ctx2, "completed", nil)
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	first, second := spans[0], spans[1]
	if second.SpanContext().TraceID() == first.SpanContext().TraceID() {
		t.Fatal("the resumed segment should start its own trace here (no parent given)")
	}
	if len(second.Links()) != 1 || second.Links()[0].SpanContext.SpanID() != first.SpanContext().SpanID() {
		t.Fatalf("links %v, want one to %v", second.Links(), first.SpanContext().SpanID())
	}
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == MetricRunSegment {
				found = len(m.Data.(metricdata.Histogram[float64]).DataPoints) == 2
			}
		}
	}
	if !found {
		t.Fatal("no vmcp.run.execution points for the two segments")
	}
}

// Audit lines: digests by default, values redacted when included.
func TestAuditDigestsAndRedaction(t *testing.T) {
	var buf bytes.Buffer
	tel, err := New(t.Context(), Config{}, &Options{AuditWriter: &buf, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	args := []byte(`{"query":"secret-sauce","api_token":"tok-123"}`)
	tel.Audit(t.Context(), AuditEvent{Event: AuditToolCalled, Target: &Target{Tool: "search"}, Detail: map[string]any{"arguments": tel.Arguments(args)}})
	if strings.Contains(buf.String(), "secret-sauce") || strings.Contains(buf.String(), "tok-123") {
		t.Fatalf("argument values in the audit line by default: %s", buf.String())
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["schema"] != AuditSchema || line["event"] != AuditToolCalled || line["outcome"] != "success" {
		t.Fatalf("line %v", line)
	}
	a := line["detail"].(map[string]any)["arguments"].(map[string]any)
	if len(a["sha256"].(string)) != 64 || a["size"].(float64) != float64(len(args)) {
		t.Fatalf("arguments %v", a)
	}

	buf.Reset()
	tel2, err := New(t.Context(), Config{Audit: AuditConfig{IncludeArguments: true}}, &Options{AuditWriter: &buf, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	tel2.Audit(t.Context(), AuditEvent{Event: AuditToolCalled, Detail: map[string]any{"arguments": tel2.Arguments(args)}})
	if !strings.Contains(buf.String(), "secret-sauce") || strings.Contains(buf.String(), "tok-123") || !strings.Contains(buf.String(), "[redacted]") {
		t.Fatalf("include_arguments with redaction: %s", buf.String())
	}
}

var _ sdktrace.SpanProcessor = (*tracetest.SpanRecorder)(nil)

// A log line written with a traced context carries trace_id and span_id;
// one without a span (or with an unsampled one) carries neither.
func TestLogHandlerAddsTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "test")
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, span := tp.Tracer("t").Start(context.Background(), "op")
	log.InfoContext(ctx, "inside")
	span.End()
	log.InfoContext(context.Background(), "outside")
	unsampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: span.SpanContext().TraceID(), SpanID: span.SpanContext().SpanID()}))
	log.InfoContext(unsampled, "unsampled")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines: %s", len(lines), buf.String())
	}
	var in, out, un map[string]any
	for i, m := range []*map[string]any{&in, &out, &un} {
		if err := json.Unmarshal([]byte(lines[i]), m); err != nil {
			t.Fatal(err)
		}
	}
	if in["trace_id"] != span.SpanContext().TraceID().String() || in["span_id"] != span.SpanContext().SpanID().String() || in["component"] != "test" {
		t.Errorf("traced line: %v", in)
	}
	for _, m := range []map[string]any{out, un} {
		if _, ok := m["trace_id"]; ok {
			t.Errorf("line without a sampled span has trace_id: %v", m)
		}
	}
}

// InjectMeta writes what the W3C propagator writes (sampled or not, with
// tracestate), replaces the client's trace keys and keeps the others.
func TestInjectMetaMatchesPropagator(t *testing.T) {
	tel, err := New(context.Background(), Config{}, &Options{SpanProcessor: tracetest.NewSpanRecorder(), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	ts, _ := trace.ParseTraceState("vendor=abc,other=1")
	for f := 0; f < 256; f++ { // every flags byte: what the propagator keeps, InjectMeta keeps
		flags := trace.TraceFlags(f)
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0x4b, 0xf9, 1, 2, 3}, SpanID: trace.SpanID{0, 0xf0, 0x67, 9}, TraceFlags: flags, TraceState: ts})
		ctx := trace.ContextWithSpanContext(context.Background(), sc)
		in := map[string]any{"traceparent": "00-client-client-01", "tracestate": "x=y", "progressToken": 3}
		got := tel.InjectMeta(ctx, in)
		want := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, want)
		if got["traceparent"] != want["traceparent"] || got["tracestate"] != want["tracestate"] || got["progressToken"] != 3 || len(got) != 3 {
			t.Errorf("flags %v: InjectMeta %v, propagator %v", flags, got, want)
		}
		if in["traceparent"] != "00-client-client-01" {
			t.Error("InjectMeta modified its argument")
		}
	}
}

// TraceMeta gives what InjectMeta writes (every flags byte, with and
// without tracestate, with and without baggage propagation, no span).
func TestTraceMetaMatchesInjectMeta(t *testing.T) {
	ts, _ := trace.ParseTraceState(`vendor=abc,other=1`)
	bg, _ := baggage.Parse("user=alice") // one member: String() orders members at random
	for _, prop := range []bool{false, true} {
		tel, err := New(context.Background(), Config{Traces: TracesConfig{PropagateBaggage: prop}},
			&Options{SpanProcessor: tracetest.NewSpanRecorder(), Getenv: func(string) string { return "" }})
		if err != nil {
			t.Fatal(err)
		}
		defer tel.Shutdown(context.Background())
		ctxs := []context.Context{context.Background(), baggage.ContextWithBaggage(context.Background(), bg)}
		for f := 0; f < 256; f++ {
			for _, state := range []trace.TraceState{{}, ts} {
				sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0x4b, 0xf9, 1}, SpanID: trace.SpanID{0, 0xf0, 9}, TraceFlags: trace.TraceFlags(f), TraceState: state})
				ctxs = append(ctxs, trace.ContextWithSpanContext(baggage.ContextWithBaggage(context.Background(), bg), sc))
			}
		}
		for i, ctx := range ctxs {
			want := tel.InjectMeta(ctx, nil)
			var tp [55]byte
			ok, st, bag := tel.TraceMeta(ctx, &tp)
			got := map[string]any{}
			if ok {
				got["traceparent"] = string(tp[:])
			}
			if st != "" {
				got["tracestate"] = st
			}
			if bag != "" {
				got["baggage"] = bag
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("baggage %v, context %d: TraceMeta %v, InjectMeta %v", prop, i, got, want)
			}
		}
	}
}
