package telemetry

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// traceSink is an OTLP/HTTP receiver that decodes every request with the
// official proto types.
type traceSink struct {
	mu      sync.Mutex
	reqs    []*coltrace.ExportTraceServiceRequest
	headers []http.Header
	status  []int // answered first, in order (then 200)
	srv     *httptest.Server
	// hold, when set, blocks each request until it is closed (arrived
	// is signalled first).
	hold, arrived chan struct{}
}

func newTraceSink(t *testing.T) *traceSink {
	s := &traceSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.hold != nil {
			s.arrived <- struct{}{}
			<-s.hold
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.headers = append(s.headers, r.Header.Clone())
		if len(s.status) > 0 {
			code := s.status[0]
			s.status = s.status[1:]
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(code)
			return
		}
		var m coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.reqs = append(s.reqs, &m)
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *traceSink) take(t *testing.T) []*coltrace.ExportTraceServiceRequest {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.reqs
	s.reqs = nil
	return out
}

// sampleSpans are spans covering what an OTLP span can carry: every
// attribute type, events, links (with attributes, remote and not), a
// remote parent with a trace state, error and ok statuses, dropped
// counts, two instrumentation scopes and two resources.
func sampleSpans(t *testing.T) []sdktrace.ReadOnlySpan {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	res1 := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0",
		attribute.String("service.name", "vmcp"), attribute.String("service.version", "1.2.3"), attribute.Int("n", 7))
	res2 := resource.NewSchemaless(attribute.String("service.name", "other"))
	tp1 := sdktrace.NewTracerProvider(sdktrace.WithResource(res1), sdktrace.WithSpanProcessor(rec),
		sdktrace.WithSpanLimits(sdktrace.SpanLimits{AttributeCountLimit: 12, EventCountLimit: 2, LinkCountLimit: 2,
			AttributePerEventCountLimit: 1, AttributePerLinkCountLimit: 1, AttributeValueLengthLimit: -1}))
	tp2 := sdktrace.NewTracerProvider(sdktrace.WithResource(res2), sdktrace.WithSpanProcessor(rec))
	tr := tp1.Tracer("github.com/vmcp-dev/vmcp", trace.WithInstrumentationVersion("v9"), trace.WithSchemaURL("https://x/s"),
		trace.WithInstrumentationAttributes(attribute.Bool("scoped", true)))
	tr2 := tp1.Tracer("second")
	tr3 := tp2.Tracer("")

	ts, _ := trace.ParseTraceState("vendor=abc,other=1")
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	psid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: psid, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
	lsid, _ := trace.SpanIDFromHex("1111111111111111")
	local := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: lsid})

	ctx := trace.ContextWithRemoteSpanContext(context.Background(), remote)
	sctx, srv := tr.Start(ctx, "tools/call echo", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithLinks(trace.Link{SpanContext: local}, trace.Link{SpanContext: local, Attributes: []attribute.KeyValue{attribute.Int("x", 1)}},
			trace.Link{SpanContext: remote, Attributes: []attribute.KeyValue{attribute.String("a", "1"), attribute.String("b", "2")}}),
		trace.WithAttributes(
			attribute.String("s", "str"), attribute.String("empty", ""), attribute.Bool("t", true), attribute.Bool("f", false),
			attribute.Int64("i", -42), attribute.Int64("big", 1<<62), attribute.Float64("d", 3.25), attribute.Float64("zero", 0),
			attribute.StringSlice("ss", []string{"a", "", "c"}), attribute.BoolSlice("bs", []bool{true, false}),
			attribute.Int64Slice("is", []int64{1, -2, 300}), attribute.Float64Slice("fs", []float64{1.5, -0}),
			attribute.String("long", strings.Repeat("x", 300)),
		))
	srv.AddEvent("e0") // dropped (limit 2: the oldest go)
	srv.AddEvent("e1")
	srv.AddEvent("e2", trace.WithAttributes(attribute.String("k", "v"), attribute.Int("dropped", 1)))
	srv.SetStatus(codes.Error, "it broke")
	_, cli := tr.Start(sctx, "tools/call echo", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attribute.String("mcp.method.name", "tools/call")))
	cli.SetStatus(codes.Ok, "")
	cli.End()
	srv.End()
	for _, k := range []trace.SpanKind{trace.SpanKindInternal, trace.SpanKindProducer, trace.SpanKindConsumer, trace.SpanKindUnspecified} {
		_, s := tr2.Start(context.Background(), "kind", trace.WithSpanKind(k))
		s.End()
	}
	_, s := tr3.Start(context.Background(), "")
	s.End()
	_, s = tr.Start(context.Background(), "plain")
	s.End()
	return rec.Ended()
}

// vmcp's OTLP encoder sends what the SDK's otlptracehttp exporter sends
// for the same spans: the decoded requests are equal, field by field.
func TestOTLPExporterMatchesSDK(t *testing.T) {
	spans := sampleSpans(t)
	sink := newTraceSink(t)

	sdk, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpointURL(sink.srv.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sdk.ExportSpans(t.Context(), spans); err != nil {
		t.Fatal(err)
	}
	want := sink.take(t)

	ours, err := newOTLPExporter(sink.srv.URL, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ { // the buffers are reused
		if err := ours.ExportSpans(t.Context(), spans); err != nil {
			t.Fatal(err)
		}
		got := sink.take(t)
		if len(got) != 1 || len(want) != 1 {
			t.Fatalf("requests: ours %d, SDK %d", len(got), len(want))
		}
		// The SDK groups through maps: compare resource by resource and
		// scope by scope, in any order.
		if n, m := len(got[0].ResourceSpans), len(want[0].ResourceSpans); n != m || n != 2 {
			t.Fatalf("resource spans: ours %d, SDK %d", n, m)
		}
		for _, w := range want[0].ResourceSpans {
			g := findResource(got[0], w.Resource)
			if g == nil {
				t.Fatalf("resource %v not sent", w.Resource)
			}
			if !proto.Equal(g.Resource, w.Resource) || g.SchemaUrl != w.SchemaUrl || len(g.ScopeSpans) != len(w.ScopeSpans) {
				t.Fatalf("resource spans differ:\nours %v\nSDK  %v", g, w)
			}
			for _, wss := range w.ScopeSpans {
				found := false
				for _, gss := range g.ScopeSpans {
					if proto.Equal(gss.Scope, wss.Scope) {
						found = true
						if !proto.Equal(gss, wss) {
							t.Fatalf("scope spans differ:\nours %v\nSDK  %v", gss, wss)
						}
					}
				}
				if !found {
					t.Fatalf("scope %v not sent", wss.Scope)
				}
			}
		}
	}
	if n := len(spans); n != 8 {
		t.Fatalf("sample has %d spans, want 8", n)
	}
}

func findResource(r *coltrace.ExportTraceServiceRequest, res *resourcepb.Resource) *tracepb.ResourceSpans {
	for _, rs := range r.ResourceSpans {
		if proto.Equal(rs.Resource, res) {
			return rs
		}
	}
	return nil
}

// OTEL_EXPORTER_OTLP_* headers and gzip compression apply, and a 503 is
// retried (Retry-After honoured) until the batch goes through.
func TestOTLPExporterEnvHeadersGzipRetry(t *testing.T) {
	sink := newTraceSink(t)
	sink.status = []int{http.StatusServiceUnavailable}
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.srv.URL + "/v1/traces",
		"OTEL_EXPORTER_OTLP_HEADERS":         "api-key=general,x-other=o%20k",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS":  "api-key=secret%3D1",
		"OTEL_EXPORTER_OTLP_COMPRESSION":     "gzip",
	}
	getenv := func(k string) string { return env[k] }
	if !otlpSupported(getenv) {
		t.Fatal("plain settings fell back to the SDK exporter")
	}
	e, err := newOTLPExporter("", getenv)
	if err != nil {
		t.Fatal(err)
	}
	spans := sampleSpans(t)
	if err := e.ExportSpans(t.Context(), spans); err != nil {
		t.Fatal(err)
	}
	got := sink.take(t)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(got) != 1 || len(sink.headers) != 2 {
		t.Fatalf("%d requests decoded, %d received (want 1 after one retry)", len(got), len(sink.headers))
	}
	h := sink.headers[1]
	if h.Get("Content-Encoding") != "gzip" || h.Get("Api-Key") != "secret=1" || h.Get("X-Other") != "" {
		t.Fatalf("headers: %v (the traces variable replaces the general one)", h)
	}
	n := 0
	for _, rs := range got[0].ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	if n != len(spans) {
		t.Fatalf("%d spans arrived, want %d", n, len(spans))
	}
}

// A client error is not retried and is reported; a collector that is
// down fails within the export timeout; after Shutdown nothing is sent.
func TestOTLPExporterErrors(t *testing.T) {
	sink := newTraceSink(t)
	sink.status = []int{http.StatusBadRequest}
	e, err := newOTLPExporter(sink.srv.URL, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	spans := sampleSpans(t)
	if err := e.ExportSpans(t.Context(), spans); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("a 400 gave %v", err)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	d, err := newOTLPExporter(down.URL, func(k string) string {
		if k == "OTEL_EXPORTER_OTLP_TIMEOUT" {
			return "300"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.ExportSpans(t.Context(), spans); err == nil {
		t.Fatal("exporting to a closed port succeeded")
	}
	_ = e.Shutdown(t.Context())
	if err := e.ExportSpans(t.Context(), spans); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.take(t)); n != 0 {
		t.Fatalf("%d requests after Shutdown", n)
	}
	if _, err := newOTLPExporter("ftp://x", func(string) string { return "" }); err == nil {
		t.Fatal("an ftp endpoint was accepted")
	}
}

// Settings only the SDK's exporter implements select it.
func TestOTLPFallsBackToSDK(t *testing.T) {
	for _, kv := range [][2]string{
		{"OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"},
		{"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/k.pem"},
		{"OTEL_EXPORTER_OTLP_INSECURE", "true"},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
		{"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd"},
	} {
		if otlpSupported(func(k string) string {
			if k == kv[0] {
				return kv[1]
			}
			return ""
		}) {
			t.Errorf("%s=%s did not fall back to the SDK exporter", kv[0], kv[1])
		}
	}
}
