package telemetry

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Request is an MCP request vmcp received.
type Request struct {
	Method string
	// Tool or Prompt names the target (advertised names only; the server
	// passes OtherTool for a name it does not advertise).
	Tool, Prompt string
	// ID is the JSON-RPC request id (nil: unknown).
	ID any
	// Protocol is the negotiated protocol version; Session the session id
	// of a session-era (pre-2026-07-28) request, "" otherwise.
	Protocol, Session string
	// Transport is "tcp" (HTTP) or "pipe" (stdio).
	Transport string
	// Client is the peer address (client.address).
	Client string
	// Meta is the request's params._meta (the trace context carrier).
	Meta map[string]any
}

// Call is an MCP request vmcp sends: a backend call, or an elicitation to
// the client.
type Call struct {
	Method  string
	Backend string
	// Tool is the backend's own tool name.
	Tool string
	// Step and Attempt identify a workflow step (empty for plain tools).
	Step    string
	Attempt int
	// Server is the backend's address (server.address), if any.
	Server string
}

// Op is one operation in progress: a span and an operation-duration
// measurement. A nil *Op is valid (telemetry off).
type Op struct {
	t      *T
	span   trace.Span
	lean   *leanSpan // instead of span (lean.go), when sampled; nil once ended
	ls     *leanSpan // with lean spans: the span (leanOp); its span context is ctx's
	start  time.Time
	hist   metric.Float64Histogram
	labels labelKey
	method attribute.KeyValue
	server bool
	flight *flight // server operations: the in-flight count to decrement
	// errType and errMsg are a failure noted before End (Fail).
	errType, errMsg string
}

// leanOp is an Op with its lean span (which holds the context span), in
// one allocation (with lean spans; other Ops are plain).
type leanOp struct {
	Op
	ls leanSpan
}

// newOp is a new Op of t: a leanOp's when t uses lean spans.
func (t *T) newOp(start time.Time, method string) *Op {
	if t.lean == nil {
		return &Op{t: t, start: start, method: KeyMethod.String(method)}
	}
	lo := &leanOp{Op: Op{t: t, start: start, method: KeyMethod.String(method)}}
	lo.Op.ls = &lo.ls
	return &lo.Op
}

type opKey struct{}

// ContextWithOp returns ctx carrying op: the request's SERVER operation,
// which handlers further down name (SetTarget) and fail (Fail).
func ContextWithOp(ctx context.Context, op *Op) context.Context {
	if op == nil {
		return ctx
	}
	return context.WithValue(ctx, opKey{}, op)
}

// OpFromContext is the SERVER operation in ctx (nil: none).
func OpFromContext(ctx context.Context) *Op {
	op, _ := ctx.Value(opKey{}).(*Op)
	return op
}

// SetTarget names what a request is about once it is known: the span
// becomes "{method} {tool|prompt}" with gen_ai.tool.name (and
// gen_ai.operation.name execute_tool) or gen_ai.prompt.name, and the
// duration gets the tool label. tool must be an advertised name (or
// OtherTool).
func (op *Op) SetTarget(tool, prompt string) {
	if op == nil || (tool == "" && prompt == "") {
		return
	}
	if op.recording() {
		target, kv := prompt, []attribute.KeyValue{KeyPromptName.String(prompt)}
		if tool != "" {
			target, kv = tool, []attribute.KeyValue{KeyToolName.String(tool), KeyOperationName.String("execute_tool")}
		}
		if l := op.lean; l != nil {
			l.target = target
		} else {
			op.span.SetName(op.t.spanName(op.method.Value.AsString(), target))
		}
		op.SetAttributes(kv...)
	}
	if op.hist != nil && op.t.toolLabel {
		op.labels.tool, op.labels.prompt = tool, prompt
	}
}

// Fail notes the operation's outcome before End (the first failure
// noted wins; End's own errType, if any, overrides it).
func (op *Op) Fail(errType, msg string) {
	if op == nil || errType == "" || op.errType != "" {
		return
	}
	op.errType, op.errMsg = errType, msg
}

// spanName is "{method} {target}", cached (targets are advertised
// names, so the set is bounded): no concatenation per span.
func (t *T) spanName(method, target string) string {
	if target == "" {
		return method
	}
	return lookup(&t.namesMu, &t.names, [2]string{method, target}, func() string { return method + " " + target })
}

// Span start options built once (an option boxed per call allocates).
var (
	serverKind   = trace.WithSpanKind(trace.SpanKindServer)
	clientKind   = trace.WithSpanKind(trace.SpanKindClient)
	internalKind = trace.WithSpanKind(trace.SpanKindInternal)
)

// StartServer starts the SERVER span of a request (its parent is the
// trace context in the request's _meta) and counts it in flight.
func (t *T) StartServer(ctx context.Context, r Request) (context.Context, *Op) {
	if t == nil || (t.tracer == nil && t.m == nil) {
		return ctx, nil
	}
	op := t.newOp(time.Now(), r.Method)
	op.server = true
	target := r.Tool
	if r.Prompt != "" {
		target = r.Prompt
	}
	if t.lean != nil {
		// The parent: the _meta's trace context, else ctx's (mcp-go's
		// metaPropagator put it there). ctx is looked up only then: on
		// the request path its chain is long and cold.
		var psc trace.SpanContext
		if tp, ok := r.Meta["traceparent"]; ok {
			if t.baggage { // baggage goes in ctx too: the propagator
				ctx = t.prop.Extract(ctx, MetaCarrier(r.Meta))
			} else {
				psc = remoteParent(metaString(tp), metaString(r.Meta["tracestate"])) // what Extract would put in ctx, without the context
			}
		}
		if !psc.IsValid() {
			psc = trace.SpanContextFromContext(ctx)
		}
		// Name and attributes are built at export, from r (lean.go).
		if ctx, op.lean = t.lean.startUnder(ctx, psc, op.ls, trace.SpanKindServer, op.start); op.lean != nil {
			op.lean.method, op.lean.target, op.lean.server, op.lean.desc = r.Method, target, true, requestDesc(r)
		}
	} else if t.tracer != nil {
		if _, ok := r.Meta["traceparent"]; ok {
			ctx = t.prop.Extract(ctx, MetaCarrier(r.Meta))
		}
		ctx, op.span = t.tracer.Start(ctx, t.spanName(r.Method, target), serverKind)
		// Attributes only for a recorded span (the sampler reads none),
		// from a pooled slice (the span copies them).
		if op.span.IsRecording() {
			p := attrPool.Get().(*[]attribute.KeyValue)
			kv := appendServerAttrs((*p)[:0], r)
			op.span.SetAttributes(kv...)
			putAttrs(p, kv)
		}
	}
	if t.m != nil {
		op.hist = t.m.serverDur
		op.labels = labelKey{server: true, method: r.Method, protocol: r.Protocol, transport: r.Transport}
		if t.toolLabel {
			op.labels.tool, op.labels.prompt = r.Tool, r.Prompt
		}
		op.flight = t.m.sets.flight(r.Method)
		op.flight.n.Add(1)
	}
	return ctx, op
}

// attrPool holds the slices span attributes are built in: SetAttributes
// copies them into the span, so one slice serves every span in turn.
var attrPool = sync.Pool{New: func() any { s := make([]attribute.KeyValue, 0, 10); return &s }}

// putAttrs returns a slice to attrPool (its values cleared: they hold
// strings).
func putAttrs(p *[]attribute.KeyValue, kv []attribute.KeyValue) {
	clear(kv)
	*p = kv[:0]
	attrPool.Put(p)
}

// serverAttrs are a SERVER span's attributes.
func serverAttrs(r Request) []attribute.KeyValue {
	return appendServerAttrs(make([]attribute.KeyValue, 0, 10), r)
}

// appendServerAttrs appends a SERVER span's start attributes to kv.
func appendServerAttrs(kv []attribute.KeyValue, r Request) []attribute.KeyValue {
	kv = append(kv, KeyMethod.String(r.Method))
	if r.Tool != "" {
		kv = append(kv, KeyToolName.String(r.Tool), KeyOperationName.String("execute_tool"))
	}
	if r.Prompt != "" {
		kv = append(kv, KeyPromptName.String(r.Prompt))
	}
	switch id := r.ID.(type) {
	case nil:
	case string:
		kv = append(kv, KeyRequestID.String(id))
	case int64:
		kv = append(kv, KeyRequestID.String(strconv.FormatInt(id, 10)))
	default:
		kv = append(kv, KeyRequestID.String(fmt.Sprint(id)))
	}
	if r.Protocol != "" {
		kv = append(kv, KeyProtocolVersion.String(r.Protocol))
	}
	if r.Session != "" {
		kv = append(kv, KeySessionID.String(r.Session))
	}
	if r.Transport != "" {
		kv = append(kv, KeyTransport.String(r.Transport))
	}
	if r.Client != "" {
		kv = append(kv, KeyClientAddress.String(r.Client))
	}
	return kv
}

// StartCall starts the CLIENT span of a call vmcp makes. The trace
// context to send with the call is the span's in the returned ctx: the
// backends' tools/call writer puts it into the request (TraceMeta; the
// map form, InjectMeta, is its reference in the tests).
func (t *T) StartCall(ctx context.Context, c Call) (context.Context, *Op) {
	if t == nil || (t.tracer == nil && t.m == nil) {
		return ctx, nil
	}
	op := t.newOp(time.Now(), c.Method)
	target := c.Tool
	if target == "" {
		target = c.Step
	}
	switch {
	case t.lean != nil:
		// Name and attributes are built at export, from c (lean.go).
		if ctx, op.lean = t.lean.start(ctx, op.ls, trace.SpanKindClient, op.start); op.lean != nil {
			op.lean.method, op.lean.target, op.lean.desc = c.Method, target, callDesc(c)
		}
	case t.tracer != nil:
		ctx, op.span = t.tracer.Start(ctx, t.spanName(c.Method, target), clientKind)
		if op.span.IsRecording() {
			p := attrPool.Get().(*[]attribute.KeyValue)
			kv := appendCallAttrs((*p)[:0], c)
			op.span.SetAttributes(kv...)
			putAttrs(p, kv)
		}
	}
	if t.m != nil {
		op.hist = t.m.clientDur
		op.labels = labelKey{method: c.Method, backend: c.Backend}
		if t.toolLabel {
			op.labels.tool = c.Tool
		}
	}
	return ctx, op
}

// appendCallAttrs appends a CLIENT span's start attributes to kv.
func appendCallAttrs(kv []attribute.KeyValue, c Call) []attribute.KeyValue {
	kv = append(kv, KeyMethod.String(c.Method))
	if c.Tool != "" {
		kv = append(kv, KeyToolName.String(c.Tool), KeyOperationName.String("execute_tool"))
	}
	if c.Backend != "" {
		kv = append(kv, KeyBackend.String(c.Backend))
	}
	if c.Step != "" {
		kv = append(kv, KeyStepID.String(c.Step))
	}
	if c.Attempt > 0 {
		kv = append(kv, KeyStepAttempt.Int(c.Attempt))
	}
	if c.Server != "" {
		kv = append(kv, KeyServerAddress.String(c.Server))
	}
	return kv
}

// End finishes the operation. errType is "" on success, else the
// convention's error.type (a JSON-RPC code, ErrToolError, ErrTimeout, …);
// msg is the span status description.
func (op *Op) End(ctx context.Context, errType, msg string) {
	if op == nil {
		return
	}
	if errType == "" {
		errType, msg = op.errType, op.errMsg
	}
	if errType != "" {
		op.SetAttributes(KeyErrorType.String(errType))
	}
	var now time.Time // one clock read: the span's end and the duration
	if l := op.lean; l != nil {
		if errType != "" {
			l.setStatus(codes.Error, msg)
		}
		now = time.Now()
		op.lean = nil // queued: the batcher owns it now
		l.finish(now)
	}
	if op.span != nil {
		if errType != "" {
			op.span.SetStatus(codes.Error, msg)
		}
		op.span.End()
	}
	if op.hist != nil {
		// The span's context (still in ctx) makes the exemplar; the
		// record itself is deferred (deferred.go).
		op.labels.errType = errType
		if now.IsZero() {
			now = time.Now()
		}
		op.t.m.rec.add(ctx, pendingRecord{hist: op.hist, v: now.Sub(op.start).Seconds(), labels: op.labels, sc: op.spanContext(ctx)})
		if op.flight != nil {
			op.flight.n.Add(-1)
		}
	}
}

// spanContext is the operation's span context (ctx's when it has no
// span of its own: the client's, with traces off).
func (op *Op) spanContext(ctx context.Context) trace.SpanContext {
	switch {
	case op.ls != nil && op.ls.cs.sc.IsValid():
		return op.ls.cs.sc
	case op.span != nil:
		return op.span.SpanContext()
	}
	return trace.SpanContextFromContext(ctx)
}

// ServerOperation records a request served outside mcp-go (the
// pre-serialised tools/list): a SERVER span from start to now, and its
// duration and outcome in the server operation histogram.
func (t *T) ServerOperation(ctx context.Context, r Request, start time.Time, errType string) {
	if t == nil || (t.tracer == nil && t.m == nil) {
		return
	}
	if t.tracer != nil {
		if _, ok := r.Meta["traceparent"]; ok {
			ctx = t.prop.Extract(ctx, MetaCarrier(r.Meta))
		}
		var span trace.Span
		ctx, span = t.tracer.Start(ctx, r.Method, serverKind, trace.WithTimestamp(start),
			trace.WithAttributes(serverAttrs(r)...))
		if errType != "" {
			span.SetAttributes(KeyErrorType.String(errType))
			span.SetStatus(codes.Error, errType)
		}
		span.End()
	}
	if t.m != nil {
		k := labelKey{server: true, method: r.Method, protocol: r.Protocol, transport: r.Transport, errType: errType}
		t.m.rec.add(ctx, pendingRecord{hist: t.m.serverDur, v: time.Since(start).Seconds(), labels: k, sc: trace.SpanContextFromContext(ctx)})
	}
}

// ExtractMeta returns ctx with the trace context of an MCP request's
// _meta (traceparent, tracestate, baggage when configured) as the parent
// of what starts next.
func (t *T) ExtractMeta(ctx context.Context, meta map[string]any) context.Context {
	if t == nil || t.prop == nil {
		return ctx
	}
	if _, ok := meta["traceparent"]; !ok {
		return ctx
	}
	return t.prop.Extract(ctx, MetaCarrier(meta))
}

// ValidTraceParent reports whether s is a W3C traceparent header value
// the OpenTelemetry propagator accepts (a valid, remote span context),
// read by the propagator's rules without its context (remoteParent).
func ValidTraceParent(s string) bool { return remoteParent(s, "").IsValid() }

// recording reports whether the operation's span records (lean spans
// exist only when sampled).
func (op *Op) recording() bool {
	return op.lean != nil || (op.span != nil && op.span.IsRecording())
}

// SetAttributes adds span attributes (no metric labels).
func (op *Op) SetAttributes(kv ...attribute.KeyValue) {
	if op == nil {
		return
	}
	if op.lean != nil {
		op.lean.setAttributes(kv...)
		return
	}
	if op.span == nil {
		return
	}
	op.span.SetAttributes(kv...)
}

// Segment is one execution segment of a composite run: start (or
// resume) until pause or end. A nil *Segment is valid.
type Segment struct {
	t        *T
	span     trace.Span
	start    time.Time
	workflow string
}

// StartSegment starts the INTERNAL span `invoke_workflow {workflow}`. A
// resumed segment passes the traceparent its run stored at the pause
// (linkTo): the new span links to it, so both traces reach each other.
func (t *T) StartSegment(ctx context.Context, workflow, runID, linkTo string) (context.Context, *Segment) {
	if t == nil || (t.tracer == nil && t.m == nil) {
		return ctx, nil
	}
	s := &Segment{t: t, start: time.Now(), workflow: workflow}
	if t.tracer != nil {
		so := []trace.SpanStartOption{internalKind, trace.WithAttributes(
			KeyOperationName.String("invoke_workflow"), KeyWorkflowName.String(workflow), KeyRunID.String(runID))}
		if linkTo != "" {
			lc := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": linkTo})
			if sc := trace.SpanContextFromContext(lc); sc.IsValid() {
				so = append(so, trace.WithLinks(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("vmcp.link", "paused_segment")}}))
			}
		}
		ctx, s.span = t.tracer.Start(ctx, "invoke_workflow "+workflow, so...)
	}
	return ctx, s
}

// Event adds an event (paused, answered, …) to the segment's span.
func (s *Segment) Event(name string, kv ...attribute.KeyValue) {
	if s == nil || s.span == nil {
		return
	}
	s.span.AddEvent(name, trace.WithAttributes(kv...))
}

// End finishes the segment with the run's status at that point
// (waiting, completed, failed, …) and records its execution time.
func (s *Segment) End(ctx context.Context, status string, err error) {
	if s == nil {
		return
	}
	if s.span != nil {
		s.span.SetAttributes(KeyRunStatus.String(status))
		if err != nil {
			s.span.SetAttributes(KeyErrorType.String(ErrInternal))
			s.span.SetStatus(codes.Error, err.Error())
		} else if status == "failed" || status == "timed_out" {
			s.span.SetStatus(codes.Error, status)
		}
		s.span.End()
	}
	if s.t.m != nil {
		s.t.m.runSegment.Record(ctx, time.Since(s.start).Seconds(), attrs(KeyWorkflow.String(s.workflow), KeyStatus.String(status)))
	}
}

// TraceParent is the W3C traceparent of ctx's span ("" when none is
// recorded): what a pausing run stores.
func TraceParent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// TraceID is ctx's trace id in hex ("" when none), for logs and audit.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// InjectMeta returns a copy of meta with ctx's trace context added
// (traceparent, tracestate, and baggage when configured), replacing any
// the client sent.
func (t *T) InjectMeta(ctx context.Context, meta map[string]any) map[string]any {
	if t == nil || t.prop == nil {
		return meta
	}
	out := make(map[string]any, len(meta)+1)
	for k, v := range meta {
		switch k {
		case "traceparent", "tracestate", "baggage":
		default:
			out[k] = v
		}
	}
	if t.baggage {
		t.prop.Inject(ctx, MetaCarrier(out))
		return out
	}
	// W3C trace context written directly (what propagation.TraceContext
	// writes, without the carrier round trip).
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return out
	}
	out["traceparent"] = traceParent(sc)
	if ts := sc.TraceState(); ts.Len() > 0 {
		out["tracestate"] = ts.String()
	}
	return out
}

// TraceMeta is the trace context InjectMeta would add for ctx, for a
// writer that puts it into the request without a map: the traceparent
// written into tp (ok false, tp untouched, when ctx has no valid span
// context), the tracestate and, with propagate_baggage, the baggage (""
// when none: not sent). Only meaningful when Tracing().
func (t *T) TraceMeta(ctx context.Context, tp *[55]byte) (ok bool, state, baggageHeader string) {
	if t == nil || t.prop == nil {
		return false, "", ""
	}
	sc := trace.SpanContextFromContext(ctx)
	if t.baggage {
		baggageHeader = baggage.FromContext(ctx).String()
	}
	if !sc.IsValid() {
		return false, "", baggageHeader
	}
	putTraceParent(tp, sc)
	if ts := sc.TraceState(); ts.Len() > 0 {
		state = ts.String()
	}
	return true, state, baggageHeader
}

// traceParent is sc's W3C traceparent header value.
func traceParent(sc trace.SpanContext) string {
	var b [55]byte
	putTraceParent(&b, sc)
	return string(b[:])
}

// putTraceParent writes sc's traceparent into b.
func putTraceParent(b *[55]byte, sc trace.SpanContext) {
	tid, sid := sc.TraceID(), sc.SpanID()
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	// The flags W3C Trace Context level 2 defines, sampled (0x01) and
	// random (0x02), pass on; other bits are not propagated (what
	// propagation.TraceContext.Inject keeps).
	flags := sc.TraceFlags() & (trace.FlagsSampled | trace.FlagsRandom)
	hex.Encode(b[53:55], []byte{byte(flags)})
}

// metaString is a _meta value as MetaCarrier.Get reads it.
func metaString(v any) string {
	s, _ := v.(string)
	return s
}

// MetaCarrier adapts an MCP _meta object to the propagation API.
type MetaCarrier map[string]any

func (c MetaCarrier) Get(key string) string {
	s, _ := c[key].(string)
	return s
}

func (c MetaCarrier) Set(key, value string) { c[key] = value }

func (c MetaCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// labelKey is an operation metric's label values; sets caches the
// attribute set of each, so a steady state records without allocating
// one (the keys are bounded like the series they name).
type labelKey struct {
	server                                             bool
	method, tool, prompt, protocol, transport, backend string
	errType                                            string
}

type labelSets struct {
	mu      sync.RWMutex
	ops     map[labelKey][]metric.RecordOption
	flights map[string]*flight
	smalls  map[[3]attribute.KeyValue][]metric.RecordOption
}

// flight counts one method's requests in progress (read by the
// vmcp.requests.in_flight observable gauge: no SDK call per request).
type flight struct {
	n   atomic.Int64
	set attribute.Set
}

// lookup returns the cached value of k in m, building it once. Typed maps
// (not sync.Map) so that a lookup boxes nothing: the steady state
// allocates nothing here.
func lookup[K comparable, V any](mu *sync.RWMutex, m *map[K]V, k K, build func() V) V {
	mu.RLock()
	v, ok := (*m)[k]
	mu.RUnlock()
	if ok {
		return v
	}
	mu.Lock()
	defer mu.Unlock()
	if v, ok := (*m)[k]; ok {
		return v
	}
	if *m == nil {
		*m = map[K]V{}
	}
	v = build()
	(*m)[k] = v
	return v
}

// get returns the options of k's label set as a slice (passed on with
// "opts...", so a Record allocates no variadic slice).
func (s *labelSets) get(k labelKey) []metric.RecordOption {
	return lookup(&s.mu, &s.ops, k, func() []metric.RecordOption {
		kv := make([]attribute.KeyValue, 0, 6)
		kv = append(kv, KeyMethod.String(k.method), KeyErrorType.String(k.errType))
		if k.tool != "" {
			kv = append(kv, KeyToolName.String(k.tool))
		}
		if k.prompt != "" {
			kv = append(kv, KeyPromptName.String(k.prompt))
		}
		if k.server {
			kv = append(kv, KeyProtocolVersion.String(k.protocol), KeyTransport.String(k.transport))
		} else {
			kv = append(kv, KeyBackend.String(k.backend))
		}
		return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
	})
}

func (s *labelSets) flight(method string) *flight {
	return lookup(&s.mu, &s.flights, method, func() *flight {
		return &flight{set: attribute.NewSet(KeyMethod.String(method))}
	})
}

// small caches the set of up to three bounded labels (unused ones are
// the zero KeyValue).
func (s *labelSets) small(a, b, c attribute.KeyValue) []metric.RecordOption {
	return lookup(&s.mu, &s.smalls, [3]attribute.KeyValue{a, b, c}, func() []metric.RecordOption {
		kv := make([]attribute.KeyValue, 0, 3)
		for _, x := range []attribute.KeyValue{a, b, c} {
			if x.Key != "" {
				kv = append(kv, x)
			}
		}
		return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
	})
}

// observeFlights reports the in-flight counts.
func (s *labelSets) observeFlights(o metric.Observer, g metric.Int64Observable) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, f := range s.flights {
		o.ObserveInt64(g, f.n.Load(), metric.WithAttributeSet(f.set))
	}
}
