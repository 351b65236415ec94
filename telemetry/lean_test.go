package telemetry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpTel is telemetry exporting traces over OTLP to sink, with env as
// the OTEL_* variables and the sampling ratio given.
func otlpTel(t *testing.T, sink *traceSink, ratio float64, env map[string]string, opts Options) *T {
	t.Helper()
	return otlpTelBaggage(t, sink, ratio, env, opts, false)
}

func otlpTelBaggage(t *testing.T, sink *traceSink, ratio float64, env map[string]string, opts Options, baggage bool) *T {
	t.Helper()
	opts.Getenv = func(k string) string { return env[k] }
	tel, err := New(t.Context(), Config{ServiceName: "vmcp-test", ServiceVersion: "1.2.3",
		Traces: TracesConfig{Exporter: "otlp", Endpoint: sink.srv.URL, SamplingRatio: &ratio, PropagateBaggage: baggage}}, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

// hooks runs the request shapes vmcp's hot path produces: a proxied tool
// call under a client's remote parent with a trace state, a request whose
// target is named later and that fails, a prompt, and an elicitation
// CLIENT span with an outcome and a step attempt.
func hooks(tel *T) {
	ctx := context.Background()
	in := map[string]any{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=abc,other=1"}
	sctx, op := tel.StartServer(ctx, Request{Method: "tools/call", Tool: "echo_echo", ID: int64(7), Protocol: "2025-06-18",
		Session: "s-1", Transport: "tcp", Client: "127.0.0.1", Meta: in})
	cctx, cop, _ := tel.StartClient(sctx, Call{Method: "tools/call", Backend: "echo", Tool: "echo", Server: "127.0.0.1:9"}, map[string]any{"k": 1})
	cop.End(cctx, "", "")
	op.End(sctx, "", "")

	sctx, op = tel.StartServer(ctx, Request{Method: "tools/call", ID: "abc", Transport: "pipe"})
	op.SetTarget("wf_tool", "")
	op.Fail("-32603", "first failure")
	cctx, cop, _ = tel.StartClient(sctx, Call{Method: "elicitation/create", Step: "ask", Attempt: 2}, nil)
	cop.SetAttributes(KeyOutcome.String("accept"))
	cop.End(cctx, "", "")
	cctx, cop, _ = tel.StartClient(sctx, Call{Method: "tools/call", Backend: "b", Tool: "t"}, nil)
	cop.End(cctx, ErrTimeout, "deadline exceeded")
	op.End(sctx, "", "")

	sctx, op = tel.StartServer(ctx, Request{Method: "prompts/get", Prompt: "greet", ID: 3.5})
	op.End(sctx, "", "")
}

// collect flushes tel and returns the spans sink received with the
// request's resource and scope (one of each expected).
func collect(t *testing.T, tel *T, sink *traceSink) (*tracepb.ResourceSpans, *tracepb.ScopeSpans) {
	t.Helper()
	if err := tel.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	reqs := sink.take(t)
	var all []*coltrace.ExportTraceServiceRequest
	all = append(all, reqs...)
	if len(all) != 1 || len(all[0].ResourceSpans) != 1 || len(all[0].ResourceSpans[0].ScopeSpans) != 1 {
		t.Fatalf("want one request with one resource and one scope, got %v", all)
	}
	rs := all[0].ResourceSpans[0]
	return rs, rs.ScopeSpans[0]
}

// normalised is a span with ids and times cleared and attributes sorted.
func normalised(s *tracepb.Span) *tracepb.Span {
	c := proto.Clone(s).(*tracepb.Span)
	c.TraceId, c.SpanId, c.ParentSpanId = nil, nil, nil
	c.StartTimeUnixNano, c.EndTimeUnixNano = 0, 0
	slices.SortFunc(c.Attributes, func(a, b *commonpb.KeyValue) int { return strings.Compare(a.Key, b.Key) })
	return c
}

// Lean spans, written by vmcp's encoder, decode to what SDK spans written
// by the SDK's own OTLP exporter decode to for the same hooks: resource,
// scope, names, kinds, attributes, statuses, trace state, flags, and the
// same parent structure (ids and times aside).
func TestLeanSpanMatchesSDK(t *testing.T) {
	for _, baggage := range []bool{false, true} { // the _meta read differs
		t.Run(fmt.Sprint("baggage=", baggage), func(t *testing.T) { leanMatchesSDK(t, baggage) })
	}
}

func leanMatchesSDK(t *testing.T, baggage bool) {
	leanSink, sdkSink := newTraceSink(t), newTraceSink(t)
	lean := otlpTelBaggage(t, leanSink, 1, nil, Options{}, baggage)
	// INSECURE is implemented by the SDK's exporter only: the SDK path.
	sdk := otlpTelBaggage(t, sdkSink, 1, map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "true"}, Options{}, baggage)
	if lean.lean == nil || sdk.lean != nil {
		t.Fatalf("lean spans: %v and %v, want on and off", lean.lean != nil, sdk.lean != nil)
	}
	hooks(lean)
	hooks(sdk)
	lrs, lss := collect(t, lean, leanSink)
	srs, sss := collect(t, sdk, sdkSink)
	if !proto.Equal(lrs.Resource, srs.Resource) || lrs.SchemaUrl != srs.SchemaUrl {
		t.Fatalf("resource:\nlean %v %q\nSDK  %v %q", lrs.Resource, lrs.SchemaUrl, srs.Resource, srs.SchemaUrl)
	}
	if !proto.Equal(lss.Scope, sss.Scope) || lss.SchemaUrl != sss.SchemaUrl {
		t.Fatalf("scope:\nlean %v %q\nSDK  %v %q", lss.Scope, lss.SchemaUrl, sss.Scope, sss.SchemaUrl)
	}
	if len(lss.Spans) != 6 || len(sss.Spans) != 6 {
		t.Fatalf("spans: lean %d, SDK %d, want 6", len(lss.Spans), len(sss.Spans))
	}
	// Both export in end order; the parent of each span is identified by
	// its index (or the client's remote parent).
	parents := func(spans []*tracepb.Span) []string {
		out := make([]string, len(spans))
		for i, s := range spans {
			out[i] = fmt.Sprintf("%x", s.ParentSpanId)
			for j, p := range spans {
				if string(p.SpanId) == string(s.ParentSpanId) {
					out[i] = fmt.Sprint("span ", j)
				}
			}
			if i > 0 && string(s.TraceId) == string(spans[i-1].TraceId) {
				out[i] += " same trace as previous"
			}
		}
		return out
	}
	if l, s := parents(lss.Spans), parents(sss.Spans); !slices.Equal(l, s) {
		t.Fatalf("parents:\nlean %q\nSDK  %q", l, s)
	}
	if got := fmt.Sprintf("%x", lss.Spans[0].TraceId); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("the client's trace id was not kept: %s", got)
	}
	for i := range lss.Spans {
		if l, s := normalised(lss.Spans[i]), normalised(sss.Spans[i]); !proto.Equal(l, s) {
			t.Errorf("span %d:\nlean %v\nSDK  %v", i, l, s)
		}
	}
}

// The lean sampler decides as the SDK's ParentBased(TraceIDRatioBased)
// for roots and for remote and local, sampled and unsampled parents; the
// span context a lean span starts with has the SDK's trace id, flags and
// trace state.
func TestLeanSamplingMatchesSDK(t *testing.T) {
	ts, _ := trace.ParseTraceState("k=v")
	rng := rand.New(rand.NewPCG(1, 2))
	randTID := func() trace.TraceID {
		var tid trace.TraceID
		for i := range tid {
			tid[i] = byte(rng.Uint32())
		}
		return tid
	}
	for _, ratio := range []float64{-1, 0, 1e-9, 0.1, 0.25, 0.5, 0.75, 0.999999, 1, 2} {
		sdk := sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
		lt := &leanTracer{sampler: newLeanSampler(ratio)}
		sampled := 0
		for i := 0; i < 4000; i++ {
			ctx := context.Background()
			var psc trace.SpanContext
			if k := i % 5; k > 0 { // 0: root; else remote/local × sampled/not
				var flags trace.TraceFlags
				if k%2 == 1 {
					flags = trace.FlagsSampled
				}
				psc = trace.NewSpanContext(trace.SpanContextConfig{TraceID: randTID(), SpanID: newSpanID(), TraceFlags: flags,
					TraceState: ts, Remote: k > 2})
				ctx = trace.ContextWithSpanContext(ctx, psc)
			}
			tid := randTID()
			if psc.IsValid() {
				tid = psc.TraceID()
			}
			want := sdk.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: tid}).Decision == sdktrace.RecordAndSample
			if got := lt.sampler.sample(psc, tid); got != want {
				t.Fatalf("ratio %v, parent %v, trace %s: lean %v, SDK %v", ratio, psc, tid, got, want)
			}
			if want {
				sampled++
			}
			if !psc.IsValid() {
				continue
			}
			// Span context: the parent's trace, flags and trace state.
			ls := new(leanSpan)
			lctx, l := lt.start(ctx, ls, trace.SpanKindServer, time.Time{})
			sc := trace.SpanContextFromContext(lctx)
			if !sc.Equal(ls.cs.sc) || trace.SpanFromContext(lctx).IsRecording() {
				t.Fatalf("context span %v, recording %v; want %v, not recording", sc, trace.SpanFromContext(lctx).IsRecording(), ls.cs.sc)
			}
			wantFlags := psc.TraceFlags() &^ trace.FlagsSampled
			if want {
				wantFlags |= trace.FlagsSampled
			}
			if sc.TraceID() != psc.TraceID() || sc.SpanID() == psc.SpanID() || !sc.SpanID().IsValid() ||
				sc.TraceFlags() != wantFlags || sc.TraceState().String() != psc.TraceState().String() || sc.IsRemote() {
				t.Fatalf("span context %v under parent %v", sc, psc)
			}
			if (l != nil) != want {
				t.Fatalf("recorded %v, sampled %v", l != nil, want)
			}
		}
		t.Logf("ratio %v: %d of 4000 sampled", ratio, sampled)
	}
}

// An unsampled request records nothing, and the context still carries
// its span context: the backend gets a traceparent in the client's trace
// with the sampled flag off.
func TestLeanUnsampled(t *testing.T) {
	sink := newTraceSink(t)
	tel := otlpTel(t, sink, 1, nil, Options{})
	in := map[string]any{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}
	sctx, op := tel.StartServer(context.Background(), Request{Method: "tools/call", Tool: "x", Meta: in})
	cctx, cop, meta := tel.StartClient(sctx, Call{Method: "tools/call", Backend: "b", Tool: "x"}, nil)
	if op.lean != nil || cop.lean != nil {
		t.Fatal("an unsampled parent gave a recorded lean span")
	}
	tp, _ := meta["traceparent"].(string)
	sc := trace.SpanContextFromContext(cctx)
	if !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || !strings.HasSuffix(tp, "-00") ||
		!strings.Contains(tp, sc.SpanID().String()) || sc.SpanID() == trace.SpanContextFromContext(sctx).SpanID() {
		t.Fatalf("backend traceparent %q, client span %v", tp, sc)
	}
	cop.End(cctx, "", "")
	op.End(sctx, "", "")
	if err := tel.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := sink.take(t); len(got) != 0 {
		t.Fatalf("unsampled spans exported: %v", got)
	}
}

// Spans that end while others wait in the queue (and while exports run)
// each arrive once with their own values: each carries its own tool name
// in its name and attribute (built at export from what the request path
// kept), so a span overwritten or shared would arrive with another
// span's values, or twice.
func TestLeanSpansKeepTheirOwnValuesWhileQueued(t *testing.T) {
	sink := newTraceSink(t)
	tel := otlpTel(t, sink, 1, map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "3600000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16"}, Options{})
	const workers, per = 4, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				tool := fmt.Sprintf("tool_%d_%d", w, i)
				ctx, op := tel.StartServer(context.Background(), Request{Method: "tools/call", Tool: tool})
				op.End(ctx, "", "")
				if i%50 == 0 {
					_ = tel.ForceFlush(context.Background())
				}
			}
		}()
	}
	wg.Wait()
	if err := tel.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range sink.take(t) {
		for _, rs := range r.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					var tool string
					for _, kv := range s.Attributes {
						if kv.Key == string(KeyToolName) {
							tool = kv.Value.GetStringValue()
						}
					}
					if s.Name != "tools/call "+tool || seen[tool] {
						t.Fatalf("span %q carries tool %q (seen before: %v)", s.Name, tool, seen[tool])
					}
					seen[tool] = true
				}
			}
		}
	}
	if len(seen) != workers*per {
		t.Fatalf("%d distinct spans exported, want %d", len(seen), workers*per)
	}
}

// A full queue drops lean spans as it drops SDK spans (counted).
func TestLeanSpanDroppedWhenQueueFull(t *testing.T) {
	sink := newTraceSink(t)
	sink.hold, sink.arrived = make(chan struct{}), make(chan struct{}, 8)
	tel := otlpTel(t, sink, 1, map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "3600000", "OTEL_BSP_MAX_QUEUE_SIZE": "3"}, Options{})
	end := func(n int) {
		for i := range n {
			ctx, op := tel.StartServer(context.Background(), Request{Method: "tools/call", Tool: fmt.Sprint("t", i)})
			op.End(ctx, "", "")
		}
	}
	end(3)         // a full batch: the export loop takes it
	<-sink.arrived // and is stuck posting it
	end(5)         // 3 queued, 2 dropped
	if d := tel.lean.b.Dropped(); d != 2 {
		t.Fatalf("dropped %d, want 2", d)
	}
	close(sink.hold)
	if err := tel.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range sink.take(t) {
		n += len(r.ResourceSpans[0].ScopeSpans[0].Spans)
	}
	if n != 6 {
		t.Fatalf("%d spans exported, want 6", n)
	}
}

// Limits: the attribute count limit of the environment applies (drops
// counted, as the SDK counts them); a value length limit keeps SDK
// spans; another span processor or SDKSpans keeps SDK spans.
func TestLeanSpanLimitsAndFallbacks(t *testing.T) {
	sink, sdkSink := newTraceSink(t), newTraceSink(t)
	t.Setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3")
	tel := otlpTel(t, sink, 1, nil, Options{})
	sdk := otlpTel(t, sdkSink, 1, nil, Options{SDKSpans: true})
	if tel.lean == nil {
		t.Fatal("a count limit turned lean spans off")
	}
	for _, tel := range []*T{tel, sdk} {
		ctx, op := tel.StartServer(context.Background(), Request{Method: "tools/call", Tool: "x", ID: "1", Transport: "tcp"})
		op.SetAttributes(attribute.String("", "invalid"), KeyMethod.String("again"))
		op.End(ctx, "", "")
	}
	_, ss := collect(t, tel, sink)
	_, sss := collect(t, sdk, sdkSink)
	if l, s := normalised(ss.Spans[0]), normalised(sss.Spans[0]); !proto.Equal(l, s) || len(l.Attributes) != 3 || l.DroppedAttributesCount == 0 {
		t.Fatalf("with a count limit of 3:\nlean %v\nSDK  %v", l, s)
	}

	t.Setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10")
	if tel := otlpTel(t, sink, 1, nil, Options{}); tel.lean != nil {
		t.Fatal("a value length limit kept lean spans")
	}
	t.Setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "")
	if tel := otlpTel(t, sink, 1, nil, Options{SDKSpans: true}); tel.lean != nil {
		t.Fatal("SDKSpans kept lean spans")
	}
	if tel := otlpTel(t, sink, 1, nil, Options{SpanProcessor: tracetest.NewSpanRecorder()}); tel.lean != nil {
		t.Fatal("another span processor kept lean spans")
	}
}

// remoteParent reads a traceparent and tracestate as
// propagation.TraceContext does: the same span context (or none) for
// valid, malformed and mutated headers; ValidTraceParent accepts the
// traceparents the propagator accepts.
func TestRemoteParentMatchesPropagator(t *testing.T) {
	base := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	cases := []string{base, "", "00", "zz-" + base[3:], "ff" + base[2:], "01" + base[2:] + "-extra", "01" + base[2:],
		"00" + base[2:] + "-extra", base[:53] + "03", base[:53] + "04", base[:53] + "02", base[:53] + "ff",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		strings.ToUpper(base), base + "-", "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01"}
	rng := rand.New(rand.NewPCG(3, 4))
	const alphabet = "0123456789abcdefABF-zx"
	for range 20000 {
		b := []byte(base)
		for range 1 + rng.IntN(2) {
			b[rng.IntN(len(b))] = alphabet[rng.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for i, tp := range cases {
		ts := []string{"", "vendor=abc,other=1", "not a tracestate!"}[i%3]
		c := propagation.MapCarrier{"traceparent": tp}
		if ts != "" {
			c["tracestate"] = ts
		}
		want := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), c))
		if got := remoteParent(tp, ts); !got.Equal(want) {
			t.Fatalf("traceparent %q tracestate %q: got %v, propagator %v", tp, ts, got, want)
		}
		if ValidTraceParent(tp) != want.IsValid() {
			t.Fatalf("ValidTraceParent(%q) = %v, the propagator's span context valid: %v", tp, !want.IsValid(), want.IsValid())
		}
	}
}
