package telemetry

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"
)

// Lean spans.
//
// When spans are exported with vmcp's own OTLP encoder (otlp.go) through
// vmcp's batcher and nothing else consumes them, the SERVER span of a
// request and the CLIENT span of a call (StartServer, StartCall,
// Op.End) are not SDK spans but leanSpans: a struct holding what the
// encoder writes, filled without the SDK's span machinery (its config
// building, locking, attribute dedup on read, span-processor fan-out and
// per-span allocations). The encoder writes a leanSpan to the bytes it
// writes for the equivalent SDK span (TestLeanSpanMatchesSDK).
//
// The request path does as little as it can: it draws the ids, takes
// the times and keeps what describes the request or call (the Request or
// Call, by value). The span's name and its attributes are built from
// those when the batcher encodes the span, off the request path: on the
// path, between a request's decoding and its backend round trip, every
// piece of code and memory telemetry touches is cold, and costs several
// times what it does in a loop (measured: BenchmarkTelemetryPaired in
// server).
//
// What stays as the SDK does it:
//   - Sampling: the decision of the configured ParentBased(
//     TraceIDRatioBased(ratio)) sampler (leanSampler.sample), ids from the
//     same generator (math/rand/v2, as the SDK's default), the trace
//     state and flags of the parent carried over.
//   - Context: ctx carries the span's SpanContext (a ctxSpan, allocated
//     with the Op), so child SDK spans, _meta injection, exemplars and
//     log correlation see its ids. The span in ctx is not recording:
//     nothing in vmcp asks ctx's span to record (every attribute goes
//     through the Op).
//   - Attributes: the start attributes, then those set later in the order
//     they were set, a key set again taking the new value in place.
//     Attributes beyond the span attribute count limit the SDK reads from
//     the environment (OTEL_[SPAN_]ATTRIBUTE_COUNT_LIMIT, default 128) are
//     dropped and counted; a configured value length limit
//     (OTEL_[SPAN_]ATTRIBUTE_VALUE_LENGTH_LIMIT) turns lean spans off (the
//     SDK truncates; these spans never need it by default).
//
// A leanSpan is part of its Op (one allocation); its span context is set
// for every operation, the rest only when the span is sampled. The
// batcher holds a sampled span until it exported (or dropped) it, and
// the Op forgets it at End.
type leanSpan struct {
	// cs holds the span context, and is what ctx carries (the
	// trace.Span of a non-recording span).
	cs     ctxSpan
	tr     *leanTracer
	parent trace.SpanID // invalid: a root span
	remote bool         // the parent came from the client
	server bool         // a SERVER span (desc is a Request's), else CLIENT
	kind   trace.SpanKind
	// start and end are Unix nanoseconds.
	start, end int64
	status     sdktrace.Status
	// method and target make the name: "{method} {target}", or method.
	method, target string
	desc           spanDesc
	// extra are the attributes set after the start, in order.
	extra []attribute.KeyValue
}

// spanDesc is what a lean span's start attributes are built from at
// export: a Request's fields (Tool, Prompt, Protocol, Session, Transport,
// Client; ID) or a Call's (Tool, Backend, Step, Server; Attempt), without
// keeping both structs in every span.
type spanDesc struct {
	s       [6]string
	id      any
	attempt int
}

func requestDesc(r Request) spanDesc {
	return spanDesc{s: [6]string{r.Tool, r.Prompt, r.Protocol, r.Session, r.Transport, r.Client}, id: r.ID}
}

func (d *spanDesc) request(method string) Request {
	return Request{Method: method, Tool: d.s[0], Prompt: d.s[1], Protocol: d.s[2], Session: d.s[3], Transport: d.s[4], Client: d.s[5], ID: d.id}
}

func callDesc(c Call) spanDesc {
	return spanDesc{s: [6]string{c.Tool, c.Backend, c.Step, c.Server}, attempt: c.Attempt}
}

func (d *spanDesc) call(method string) Call {
	return Call{Method: method, Tool: d.s[0], Backend: d.s[1], Step: d.s[2], Server: d.s[3], Attempt: d.attempt}
}

// leanTracer is what lean spans share: the resource and scope the SDK
// gives vmcp's spans, the sampler, the limits and the batcher.
type leanTracer struct {
	res        *resource.Resource
	scope      instrumentation.Scope
	sampler    leanSampler
	countLimit int // < 0: unlimited
	b          *batcher
}

// leanSampler is ParentBased(TraceIDRatioBased(ratio)) with the SDK's
// defaults for the parent cases (sampled parent: sample; not: drop).
type leanSampler struct {
	always, never bool
	bound         uint64
}

func newLeanSampler(ratio float64) leanSampler {
	switch {
	case ratio >= 1:
		return leanSampler{always: true}
	case ratio <= 0:
		return leanSampler{never: true}
	}
	return leanSampler{bound: uint64(ratio * (1 << 63))}
}

// sample is the SDK's decision for a span of trace tid under parent psc.
func (s leanSampler) sample(psc trace.SpanContext, tid trace.TraceID) bool {
	if psc.IsValid() { // remote or local: the parent's flag decides
		return psc.IsSampled()
	}
	switch {
	case s.always:
		return true
	case s.never:
		return false
	}
	return binary.BigEndian.Uint64(tid[8:16])>>1 < s.bound
}

// newIDs are the SDK's default generator's ids.
func newTraceID() trace.TraceID {
	var tid trace.TraceID
	for !tid.IsValid() {
		binary.NativeEndian.PutUint64(tid[:8], rand.Uint64())
		binary.NativeEndian.PutUint64(tid[8:], rand.Uint64())
	}
	return tid
}

func newSpanID() trace.SpanID {
	var sid trace.SpanID
	for !sid.IsValid() {
		binary.NativeEndian.PutUint64(sid[:], rand.Uint64())
	}
	return sid
}

// leanLimits reads the span limits the SDK reads (from the process
// environment, as the SDK does): the attribute count limit, and whether
// lean spans may be used (no value length limit).
func leanLimits() (count int, ok bool) {
	first := func(def int, keys ...string) int {
		for _, k := range keys {
			v := os.Getenv(k)
			if v == "" {
				continue
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return def
			}
			return n
		}
		return def
	}
	if first(-1, "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT") >= 0 {
		return 0, false
	}
	return first(sdktrace.DefaultAttributeCountLimit, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT"), true
}

// newLeanTracer probes the SDK for the resource and scope of vmcp's
// spans (a provider built with the same resource option, so the same
// environment merge) and returns the lean tracer over b.
func newLeanTracer(res *resource.Resource, ratio float64, b *batcher) (*leanTracer, bool) {
	count, ok := leanLimits()
	if !ok {
		return nil, false
	}
	probe := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	_, s := probe.Tracer(tracerName).Start(context.Background(), "probe")
	ro, isRO := s.(sdktrace.ReadOnlySpan)
	_ = probe.Shutdown(context.Background())
	if !isRO {
		return nil, false
	}
	return &leanTracer{res: ro.Resource(), scope: ro.InstrumentationScope(), sampler: newLeanSampler(ratio), countLimit: count, b: b}, true
}

// start begins a span of kind under ctx's span context: the context to
// pass on, carrying l's span context (which start sets), and l filled as
// the span (nil when not sampled). l is its Op's (one allocation,
// leanOp).
func (lt *leanTracer) start(ctx context.Context, l *leanSpan, kind trace.SpanKind, now time.Time) (context.Context, *leanSpan) {
	return lt.startUnder(ctx, trace.SpanContextFromContext(ctx), l, kind, now)
}

// startUnder is start with the parent psc (ctx's, or the remote parent of
// a request's _meta, which then need not be put in a context first).
func (lt *leanTracer) startUnder(ctx context.Context, psc trace.SpanContext, l *leanSpan, kind trace.SpanKind, now time.Time) (context.Context, *leanSpan) {
	var scc trace.SpanContextConfig
	if psc.TraceID().IsValid() {
		scc.TraceID, scc.SpanID = psc.TraceID(), newSpanID()
	} else {
		scc.TraceID, scc.SpanID = newTraceID(), newSpanID()
	}
	scc.TraceState = psc.TraceState()
	sampled := lt.sampler.sample(psc, scc.TraceID)
	if sampled {
		scc.TraceFlags = psc.TraceFlags() | trace.FlagsSampled
	} else {
		scc.TraceFlags = psc.TraceFlags() &^ trace.FlagsSampled
	}
	l.cs.sc = trace.NewSpanContext(scc)
	ctx = trace.ContextWithSpan(ctx, &l.cs)
	if !sampled {
		return ctx, nil
	}
	l.tr, l.parent, l.remote, l.kind, l.start = lt, psc.SpanID(), psc.IsRemote(), kind, now.UnixNano()
	return ctx, l
}

// parentContext is the parent as the encoder reads it: its span id and
// whether it is remote.
func (l *leanSpan) parentContext() trace.SpanContext {
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: l.cs.sc.TraceID(), SpanID: l.parent, Remote: l.remote})
}

// setAttributes records kv as set after the start (SetAttributes,
// SetTarget, End's error.type); attributes applies them.
func (l *leanSpan) setAttributes(kv ...attribute.KeyValue) {
	l.extra = append(l.extra, kv...)
}

// attributes are the span's attributes as the SDK holds them, appended to
// kv, and the count of those dropped: the start attributes, then the
// extra ones in order, each set as the SDK sets it (a key already set
// takes the new value; a new key beyond the count limit, or an invalid
// one, is dropped and counted).
func (l *leanSpan) attributes(kv []attribute.KeyValue) ([]attribute.KeyValue, int) {
	var start [10]attribute.KeyValue
	first := start[:0]
	if l.server {
		first = appendServerAttrs(first, l.desc.request(l.method))
	} else {
		first = appendCallAttrs(first, l.desc.call(l.method))
	}
	dropped := 0
	set := func(a attribute.KeyValue) {
		if !a.Valid() {
			dropped++ // as the SDK: dropped and counted
			return
		}
		for i := range kv {
			if kv[i].Key == a.Key {
				kv[i] = a
				return
			}
		}
		if lim := l.tr.countLimit; lim >= 0 && len(kv) >= lim {
			dropped++
			return
		}
		kv = append(kv, a)
	}
	for _, a := range first {
		set(a)
	}
	for _, a := range l.extra {
		set(a)
	}
	return kv, dropped
}

// setStatus is the SDK's rule: Unset < Error < Ok; a description only
// with Error.
func (l *leanSpan) setStatus(code codes.Code, desc string) {
	if l.status.Code > code {
		return
	}
	st := sdktrace.Status{Code: code}
	if code == codes.Error {
		st.Description = desc
	}
	l.status = st
}

// finish ends the span at now and queues it for export (a full queue
// drops it, counted).
func (l *leanSpan) finish(now time.Time) {
	l.end = now.UnixNano()
	l.tr.b.enqueueLean(l)
}

// ctxSpan is the span an operation puts in its context: its span
// context, not recording (what trace.ContextWithSpanContext puts there,
// allocated with the Op, in its leanSpan, instead of on its own).
type ctxSpan struct {
	embedded.Span
	sc trace.SpanContext
}

func (*ctxSpan) End(...trace.SpanEndOption)              {}
func (*ctxSpan) AddEvent(string, ...trace.EventOption)   {}
func (*ctxSpan) AddLink(trace.Link)                      {}
func (*ctxSpan) IsRecording() bool                       { return false }
func (*ctxSpan) RecordError(error, ...trace.EventOption) {}
func (s *ctxSpan) SpanContext() trace.SpanContext        { return s.sc }
func (*ctxSpan) SetStatus(codes.Code, string)            {}
func (*ctxSpan) SetName(string)                          {}
func (*ctxSpan) SetAttributes(...attribute.KeyValue)     {}
func (*ctxSpan) TracerProvider() trace.TracerProvider    { return noop.NewTracerProvider() }

// tracerName is the instrumentation scope of vmcp's spans.
const tracerName = "github.com/vmcp-dev/vmcp"

// remoteParent is the span context propagation.TraceContext extracts
// from a W3C traceparent and tracestate (the same rules: version 00
// exactly, later versions with extra fields, lower-case hex, the
// sampled and random flags kept, an unparsable tracestate ignored),
// without the context Extract returns it in. Invalid: the zero value.
func remoteParent(tp, ts string) trace.SpanContext {
	var ver [1]byte
	if !hexPart(ver[:], &tp, 2) || ver[0] == 0xff {
		return trace.SpanContext{}
	}
	var scc trace.SpanContextConfig
	var opts [1]byte
	if !hexPart(scc.TraceID[:], &tp, 32) || !hexPart(scc.SpanID[:], &tp, 16) || !hexPart(opts[:], &tp, 2) {
		return trace.SpanContext{}
	}
	if ver[0] == 0 && (tp != "" || opts[0] > 3) {
		return trace.SpanContext{}
	}
	scc.TraceFlags = trace.TraceFlags(opts[0]) & (trace.FlagsSampled | trace.FlagsRandom)
	if ts != "" {
		scc.TraceState, _ = trace.ParseTraceState(ts)
	}
	scc.Remote = true
	sc := trace.NewSpanContext(scc)
	if !sc.IsValid() {
		return trace.SpanContext{}
	}
	return sc
}

// hexPart decodes the next "-"-separated part of *h, n lower-case hex
// digits, into dst.
func hexPart(dst []byte, h *string, n int) bool {
	part, left, _ := strings.Cut(*h, "-")
	*h = left
	if len(part) != n {
		return false
	}
	for i := 0; i < n; i += 2 {
		hi, ok1 := unhex(part[i])
		lo, ok2 := unhex(part[i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i/2] = hi<<4 | lo
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
