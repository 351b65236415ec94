package telemetry

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Lean spans.
//
// When spans are exported with vmcp's own OTLP encoder (otlp.go) through
// vmcp's batcher and nothing else consumes them, the SERVER span of a
// request and the CLIENT span of a call (StartServer, StartCall,
// Op.End) are not SDK spans but leanSpans: a pooled struct holding what
// the encoder writes, filled without the SDK's span machinery (its
// config building, locking, attribute dedup on read, span-processor
// fan-out and per-span allocations). The encoder writes a leanSpan to the
// bytes it writes for the equivalent SDK span (TestLeanSpanMatchesSDK).
//
// What stays as the SDK does it:
//   - Sampling: the decision of the configured ParentBased(
//     TraceIDRatioBased(ratio)) sampler (leanSampler.sample), ids from the
//     same generator (math/rand/v2, as the SDK's default), the trace
//     state and flags of the parent carried over.
//   - Context: ctx carries the span's SpanContext
//     (trace.ContextWithSpanContext), so child SDK spans, _meta
//     injection, exemplars and log correlation see its ids. The span in
//     ctx is not recording: nothing in vmcp asks ctx's span to record
//     (every attribute goes through the Op).
//   - Limits: attributes beyond the span attribute count limit the SDK
//     reads from the environment (OTEL_[SPAN_]ATTRIBUTE_COUNT_LIMIT,
//     default 128) are dropped and counted; a configured value length
//     limit (OTEL_[SPAN_]ATTRIBUTE_VALUE_LENGTH_LIMIT) turns lean spans off
//     (the SDK truncates; these spans never need it by default).
//
// A leanSpan returns to its pool only after the batcher exported (or
// dropped) it; Op forgets it at End.
type leanSpan struct {
	tr         *leanTracer
	sc, parent trace.SpanContext
	name       string
	kind       trace.SpanKind
	start, end time.Time
	status     sdktrace.Status
	attrs      []attribute.KeyValue
	dropped    int
	slots      [12]attribute.KeyValue
	// state guards the pool: leanFree, leanLive, leanQueued.
	state atomic.Int32
}

const (
	leanFree int32 = iota
	leanLive
	leanQueued
)

// leanTracer is what lean spans share: the resource and scope the SDK
// gives vmcp's spans, the sampler, the limits and the batcher.
type leanTracer struct {
	res        *resource.Resource
	scope      instrumentation.Scope
	sampler    leanSampler
	countLimit int // < 0: unlimited
	b          *batcher
	pool       sync.Pool
	misuse     atomic.Int64 // pooled spans found live or queued (must stay 0)
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
	lt := &leanTracer{res: ro.Resource(), scope: ro.InstrumentationScope(), sampler: newLeanSampler(ratio), countLimit: count, b: b}
	lt.pool.New = func() any { return &leanSpan{tr: lt} }
	return lt, true
}

// start begins a span named name of kind under ctx's span context: the
// context to pass on and the span (nil when not sampled).
func (lt *leanTracer) start(ctx context.Context, name string, kind trace.SpanKind, now time.Time) (context.Context, *leanSpan) {
	return lt.startUnder(ctx, trace.SpanContextFromContext(ctx), name, kind, now)
}

// startUnder is start with the parent psc (ctx's, or the remote parent of
// a request's _meta, which then need not be put in a context first).
func (lt *leanTracer) startUnder(ctx context.Context, psc trace.SpanContext, name string, kind trace.SpanKind, now time.Time) (context.Context, *leanSpan) {
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
	sc := trace.NewSpanContext(scc)
	ctx = trace.ContextWithSpanContext(ctx, sc)
	if !sampled {
		return ctx, nil
	}
	l := lt.pool.Get().(*leanSpan)
	if !l.state.CompareAndSwap(leanFree, leanLive) {
		// A span handed back while still live or queued (a bug): leave
		// it alone, count it (tests require 0) and use a new one.
		lt.misuse.Add(1)
		l = &leanSpan{tr: lt}
		l.state.Store(leanLive)
	}
	l.sc, l.parent, l.name, l.kind, l.start = sc, psc, name, kind, now
	l.attrs = l.slots[:0]
	return ctx, l
}

// setAttributes sets kv as the SDK does: a key already set takes the new
// value; a new key beyond the count limit is dropped and counted.
func (l *leanSpan) setAttributes(kv ...attribute.KeyValue) {
next:
	for _, a := range kv {
		if !a.Valid() {
			l.dropped++ // as the SDK: dropped and counted
			continue
		}
		for i := range l.attrs {
			if l.attrs[i].Key == a.Key {
				l.attrs[i] = a
				continue next
			}
		}
		if lim := l.tr.countLimit; lim >= 0 && len(l.attrs) >= lim {
			l.dropped++
			continue
		}
		l.attrs = append(l.attrs, a)
	}
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

// finish ends the span at now and queues it for export.
func (l *leanSpan) finish(now time.Time) {
	l.end = now
	l.state.Store(leanQueued)
	if !l.tr.b.enqueueLean(l) {
		l.release()
	}
}

// release returns the span to its pool (after export or a drop).
func (l *leanSpan) release() {
	clear(l.attrs) // the used slots (or a grown slice): they hold strings
	l.sc, l.parent, l.name, l.kind = trace.SpanContext{}, trace.SpanContext{}, "", 0
	l.start, l.end, l.status, l.attrs, l.dropped = time.Time{}, time.Time{}, sdktrace.Status{}, nil, 0
	l.state.Store(leanFree)
	l.tr.pool.Put(l)
}

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
