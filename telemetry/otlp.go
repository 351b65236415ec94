package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
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
	"google.golang.org/protobuf/encoding/protowire"
)

// otlpExporter sends spans over OTLP/HTTP in protobuf, as the SDK's
// otlptracehttp exporter does, but encodes the ReadOnlySpans straight to
// the wire format (protowire) into a buffer it reuses, instead of building
// the OTLP protobuf structs for every span, attribute and value and
// marshalling them. The request decodes to the same
// ExportTraceServiceRequest the SDK's exporter sends for the same spans
// (TestOTLPExporterMatchesSDK).
//
// Configuration, as otlptracehttp: the endpoint from the config (a base
// URL, /v1/traces appended), else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the
// full URL), else OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces), else
// http://localhost:4318/v1/traces; OTEL_EXPORTER_OTLP[_TRACES]_HEADERS,
// _TIMEOUT (ms, default 10 s) and _COMPRESSION (gzip or none). Retryable
// answers (429, 502, 503, 504) are retried with backoff (honouring
// Retry-After) while the batch's export timeout allows. Settings this
// exporter does not implement (client certificates, a custom CA,
// OTEL_EXPORTER_OTLP[_TRACES]_INSECURE, a protocol other than
// http/protobuf) make New use the SDK's exporter instead (otlpSupported).
type otlpExporter struct {
	url     string
	headers map[string]string
	gzip    bool
	timeout time.Duration
	hc      *http.Client

	mu      sync.Mutex // the buffers (the batcher exports one batch at a time)
	buf     []byte
	zbuf    bytes.Buffer
	zw      *gzip.Writer
	groups  []spanGroup
	qs      []queued // ExportSpans' scratch
	stopped atomic.Bool
}

type spanGroup struct {
	res   *resource.Resource
	scope instrumentation.Scope
	spans []queued
}

// otlpEnv returns the traces-specific variable or the general one.
func otlpEnv(getenv func(string) string, suffix string) string {
	if v := getenv("OTEL_EXPORTER_OTLP_TRACES_" + suffix); v != "" {
		return v
	}
	return getenv("OTEL_EXPORTER_OTLP_" + suffix)
}

// otlpSupported reports whether the environment asks only for what
// otlpExporter implements; otherwise the SDK's exporter is used.
func otlpSupported(getenv func(string) string) bool {
	for _, s := range []string{"CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY", "INSECURE"} {
		if otlpEnv(getenv, s) != "" {
			return false
		}
	}
	if p := otlpEnv(getenv, "PROTOCOL"); p != "" && p != "http/protobuf" {
		return false
	}
	switch c := strings.ToLower(otlpEnv(getenv, "COMPRESSION")); c {
	case "", "none", "gzip":
	default:
		return false
	}
	return true
}

// newOTLPExporter builds the exporter; endpoint is the config's base URL
// ("" for the variables).
func newOTLPExporter(endpoint string, getenv func(string) string) (*otlpExporter, error) {
	u := ""
	switch {
	case endpoint != "":
		u = strings.TrimRight(endpoint, "/") + "/v1/traces"
	case getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "":
		u = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	case getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "":
		u = strings.TrimRight(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "/") + "/v1/traces"
	default:
		u = "http://localhost:4318/v1/traces"
	}
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return nil, fmt.Errorf("telemetry: OTLP traces endpoint %q: want an http:// or https:// URL", u)
	}
	e := &otlpExporter{url: u, headers: map[string]string{}, timeout: 10 * time.Second}
	if v := otlpEnv(getenv, "HEADERS"); v != "" {
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			k = strings.TrimSpace(k)
			if !ok || k == "" {
				continue
			}
			if dv, err := url.PathUnescape(strings.TrimSpace(val)); err == nil {
				val = dv
			}
			e.headers[k] = strings.TrimSpace(val)
		}
	}
	if ms, err := strconv.Atoi(otlpEnv(getenv, "TIMEOUT")); err == nil && ms > 0 {
		e.timeout = time.Duration(ms) * time.Millisecond
	}
	e.gzip = strings.EqualFold(otlpEnv(getenv, "COMPRESSION"), "gzip")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	e.hc = &http.Client{Transport: tr}
	return e, nil
}

// ExportSpans encodes and POSTs one batch.
func (e *otlpExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.stopped.Load() || len(spans) == 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	qs := e.qs[:0]
	for _, s := range spans {
		qs = append(qs, queued{s: s})
	}
	defer func() { clear(qs); e.qs = qs[:0] }()
	return e.send(ctx, qs)
}

// exportQueued encodes and POSTs one batch of the batcher's (SDK and
// lean spans).
func (e *otlpExporter) exportQueued(ctx context.Context, spans []queued) error {
	if e.stopped.Load() || len(spans) == 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.send(ctx, spans)
}

// send encodes spans and POSTs them (under e.mu).
func (e *otlpExporter) send(ctx context.Context, spans []queued) error {
	e.buf = e.encode(e.buf[:0], spans)
	body := e.buf
	if e.gzip {
		e.zbuf.Reset()
		if e.zw == nil {
			e.zw = gzip.NewWriter(&e.zbuf)
		} else {
			e.zw.Reset(&e.zbuf)
		}
		_, _ = e.zw.Write(body)
		_ = e.zw.Close()
		body = e.zbuf.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	backoff := time.Second
	for {
		retry, wait, err := e.post(ctx, body)
		if !retry {
			return err
		}
		if wait <= 0 {
			wait = backoff
			backoff = min(2*backoff, 30*time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (retrying after: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// post sends one request: whether to retry, after how long (0: backoff).
func (e *otlpExporter) post(ctx context.Context, body []byte) (bool, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return false, 0, err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", "vmcp OTLP trace exporter")
	if e.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	for k, v := range e.headers {
		req.Header.Set(k, v)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return ctx.Err() == nil, 0, fmt.Errorf("telemetry: OTLP traces export: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	switch sc := resp.StatusCode; {
	case sc >= 200 && sc < 300:
		return false, 0, nil
	case sc == http.StatusTooManyRequests || sc == http.StatusBadGateway || sc == http.StatusServiceUnavailable || sc == http.StatusGatewayTimeout:
		var wait time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return true, wait, fmt.Errorf("telemetry: OTLP traces export: %s", resp.Status)
	default:
		return false, 0, fmt.Errorf("telemetry: OTLP traces export: %s", resp.Status)
	}
}

// Shutdown stops exporting (what the batcher flushed before is sent).
func (e *otlpExporter) Shutdown(context.Context) error {
	e.stopped.Store(true)
	e.hc.CloseIdleConnections()
	return nil
}

// The OTLP field numbers (opentelemetry-proto trace/v1, common/v1,
// resource/v1, collector/trace/v1).
const (
	fReqResourceSpans = 1 // ExportTraceServiceRequest

	fRSResource   = 1 // ResourceSpans
	fRSScopeSpans = 2
	fRSSchemaURL  = 3

	fResAttributes = 1 // Resource

	fSSScope     = 1 // ScopeSpans
	fSSSpans     = 2
	fSSSchemaURL = 3

	fScopeName       = 1 // InstrumentationScope
	fScopeVersion    = 2
	fScopeAttributes = 3

	fSpanTraceID           = 1 // Span
	fSpanSpanID            = 2
	fSpanTraceState        = 3
	fSpanParentSpanID      = 4
	fSpanName              = 5
	fSpanKind              = 6
	fSpanStart             = 7
	fSpanEnd               = 8
	fSpanAttributes        = 9
	fSpanDroppedAttributes = 10
	fSpanEvents            = 11
	fSpanDroppedEvents     = 12
	fSpanLinks             = 13
	fSpanDroppedLinks      = 14
	fSpanStatus            = 15
	fSpanFlags             = 16

	fEventTime              = 1 // Span.Event
	fEventName              = 2
	fEventAttributes        = 3
	fEventDroppedAttributes = 4

	fLinkTraceID           = 1 // Span.Link
	fLinkSpanID            = 2
	fLinkAttributes        = 4
	fLinkDroppedAttributes = 5
	fLinkFlags             = 6

	fStatusMessage = 2 // Status
	fStatusCode    = 3

	fKVKey   = 1 // KeyValue
	fKVValue = 2

	fAnyString = 1 // AnyValue
	fAnyBool   = 2
	fAnyInt    = 3
	fAnyDouble = 4
	fAnyArray  = 5
	fAnyKVList = 6
	fAnyBytes  = 7

	fArrayValues = 1 // ArrayValue and KeyValueList
)

// Span flags (SpanFlags): the W3C trace flags in the low byte, and
// whether the parent is known to be remote.
const (
	flagHasIsRemote = 0x100
	flagIsRemote    = 0x200
)

// begin opens a length-delimited field: a one-byte length is reserved
// and end fixes it up (moving the body when the length needs more).
func begin(b []byte, field protowire.Number) ([]byte, int) {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = append(b, 0)
	return b, len(b)
}

func end(b []byte, start int) []byte {
	n := len(b) - start
	sz := protowire.SizeVarint(uint64(n))
	if sz > 1 {
		var pad [9]byte
		b = append(b, pad[:sz-1]...)
		copy(b[start+sz-1:], b[start:start+n])
	}
	protowire.AppendVarint(b[start-1:start-1], uint64(n))
	return b
}

func appendString(b []byte, field protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendUint32(b []byte, field protowire.Number, v int) []byte {
	if v <= 0 {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(min(int64(v), math.MaxUint32)))
}

func appendFixed64(b []byte, field protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func appendFixed32(b []byte, field protowire.Number, v uint32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, v)
}

func unixNano(t time.Time) uint64 { return uint64(max(0, t.UnixNano())) }

// encode appends an ExportTraceServiceRequest holding spans, grouped by
// resource and instrumentation scope as the SDK's transform groups them.
func (e *otlpExporter) encode(b []byte, spans []queued) []byte {
	groups := e.groups[:0]
	for _, s := range spans {
		var res *resource.Resource
		var scope instrumentation.Scope
		switch {
		case s.l != nil:
			res, scope = s.l.tr.res, s.l.tr.scope
		case s.s != nil:
			res, scope = s.s.Resource(), s.s.InstrumentationScope()
		default:
			continue
		}
		i := 0
		for ; i < len(groups); i++ {
			g := &groups[i]
			if g.scope == scope && (g.res == res || g.res.Equivalent() == res.Equivalent()) {
				break
			}
		}
		if i == len(groups) {
			var reuse []queued
			if i < cap(groups) {
				reuse = groups[:i+1][i].spans[:0]
			}
			groups = append(groups, spanGroup{res: res, scope: scope, spans: reuse})
		}
		groups[i].spans = append(groups[i].spans, s)
	}
	// One ResourceSpans per resource, its scopes in order of appearance.
	done := make([]bool, len(groups))
	for i := range groups {
		if done[i] {
			continue
		}
		var rs, start int
		b, rs = begin(b, fReqResourceSpans)
		if res := groups[i].res; res != nil {
			b, start = begin(b, fRSResource)
			for it := res.Iter(); it.Next(); {
				b = appendKV(b, fResAttributes, it.Attribute())
			}
			b = end(b, start)
		}
		for j := i; j < len(groups); j++ {
			if done[j] || (j != i && groups[j].res != groups[i].res && groups[j].res.Equivalent() != groups[i].res.Equivalent()) {
				continue
			}
			done[j] = true
			b = appendScopeSpans(b, &groups[j])
		}
		if groups[i].res != nil {
			b = appendString(b, fRSSchemaURL, groups[i].res.SchemaURL())
		}
		b = end(b, rs)
	}
	for i := range groups {
		clear(groups[i].spans)
	}
	e.groups = groups
	return b
}

func appendScopeSpans(b []byte, g *spanGroup) []byte {
	var ss, start int
	b, ss = begin(b, fRSScopeSpans)
	if g.scope != (instrumentation.Scope{}) {
		b, start = begin(b, fSSScope)
		b = appendString(b, fScopeName, g.scope.Name)
		b = appendString(b, fScopeVersion, g.scope.Version)
		for it := g.scope.Attributes.Iter(); it.Next(); {
			b = appendKV(b, fScopeAttributes, it.Attribute())
		}
		b = end(b, start)
	}
	for _, s := range g.spans {
		if s.l != nil {
			b = appendLeanSpan(b, s.l)
		} else {
			b = appendSpan(b, s.s)
		}
	}
	b = appendString(b, fSSSchemaURL, g.scope.SchemaURL)
	return end(b, ss)
}

func appendSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	var sp, start int
	b, sp = begin(b, fSSSpans)
	b = appendSpanHead(b, s.SpanContext(), s.Parent(), s.Name(), "", s.SpanKind(), s.StartTime(), s.EndTime(), s.Attributes(), s.DroppedAttributes())
	for _, ev := range s.Events() {
		b, start = begin(b, fSpanEvents)
		b = appendFixed64(b, fEventTime, unixNano(ev.Time))
		b = appendString(b, fEventName, ev.Name)
		for _, kv := range ev.Attributes {
			b = appendKV(b, fEventAttributes, kv)
		}
		b = appendUint32(b, fEventDroppedAttributes, ev.DroppedAttributeCount)
		b = end(b, start)
	}
	b = appendUint32(b, fSpanDroppedEvents, s.DroppedEvents())
	for _, l := range s.Links() {
		b, start = begin(b, fSpanLinks)
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		b = protowire.AppendTag(b, fLinkTraceID, protowire.BytesType)
		b = protowire.AppendBytes(b, ltid[:])
		b = protowire.AppendTag(b, fLinkSpanID, protowire.BytesType)
		b = protowire.AppendBytes(b, lsid[:])
		for _, kv := range l.Attributes {
			b = appendKV(b, fLinkAttributes, kv)
		}
		b = appendUint32(b, fLinkDroppedAttributes, l.DroppedAttributeCount)
		b = appendFixed32(b, fLinkFlags, spanFlags(l.SpanContext.TraceFlags(), l.SpanContext))
		b = end(b, start)
	}
	b = appendUint32(b, fSpanDroppedLinks, s.DroppedLinks())
	b = appendSpanTail(b, s.Status(), s.SpanContext(), s.Parent())
	return end(b, sp)
}

// appendLeanSpan appends a lean span: the fields appendSpan writes for
// an SDK span, in the same order (a lean span has no events or links).
func appendLeanSpan(b []byte, s *leanSpan) []byte {
	var sp int
	var buf [16]attribute.KeyValue
	attrs, dropped := s.attributes(buf[:0])
	b, sp = begin(b, fSSSpans)
	parent := s.parentContext()
	b = appendSpanHead(b, s.cs.sc, parent, s.method, s.target, s.kind, time.Unix(0, s.start), time.Unix(0, s.end), attrs, dropped)
	b = appendSpanTail(b, s.status, s.cs.sc, parent)
	return end(b, sp)
}

// appendSpanHead writes a span's fields from its ids to its dropped
// attributes count, in field order (events and links follow). The name
// is "{name} {target}", or name when target is "".
func appendSpanHead(b []byte, sc, parent trace.SpanContext, name, target string, kind trace.SpanKind, startT, endT time.Time, attrs []attribute.KeyValue, dropped int) []byte {
	tid, sid := sc.TraceID(), sc.SpanID()
	b = protowire.AppendTag(b, fSpanTraceID, protowire.BytesType)
	b = protowire.AppendBytes(b, tid[:])
	b = protowire.AppendTag(b, fSpanSpanID, protowire.BytesType)
	b = protowire.AppendBytes(b, sid[:])
	if ts := sc.TraceState(); ts.Len() > 0 {
		b = appendString(b, fSpanTraceState, ts.String())
	}
	if psid := parent.SpanID(); psid.IsValid() {
		b = protowire.AppendTag(b, fSpanParentSpanID, protowire.BytesType)
		b = protowire.AppendBytes(b, psid[:])
	}
	if target == "" {
		b = appendString(b, fSpanName, name)
	} else {
		b = protowire.AppendTag(b, fSpanName, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(name)+1+len(target)))
		b = append(append(append(b, name...), ' '), target...)
	}
	if k := spanKindNumber(kind); k != 0 {
		b = protowire.AppendTag(b, fSpanKind, protowire.VarintType)
		b = protowire.AppendVarint(b, k)
	}
	b = appendFixed64(b, fSpanStart, unixNano(startT))
	b = appendFixed64(b, fSpanEnd, unixNano(endT))
	for _, kv := range attrs {
		b = appendKV(b, fSpanAttributes, kv)
	}
	return appendUint32(b, fSpanDroppedAttributes, dropped)
}

// appendSpanTail writes a span's status (always present: the SDK's
// transform always sets it) and flags.
func appendSpanTail(b []byte, st sdktrace.Status, sc, parent trace.SpanContext) []byte {
	var start int
	b, start = begin(b, fSpanStatus)
	b = appendString(b, fStatusMessage, st.Description)
	switch st.Code {
	case codes.Ok:
		b = protowire.AppendTag(b, fStatusCode, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	case codes.Error:
		b = protowire.AppendTag(b, fStatusCode, protowire.VarintType)
		b = protowire.AppendVarint(b, 2)
	}
	b = end(b, start)
	return appendFixed32(b, fSpanFlags, spanFlags(sc.TraceFlags(), parent))
}

func spanFlags(tf trace.TraceFlags, parent trace.SpanContext) uint32 {
	f := uint32(tf) | flagHasIsRemote
	if parent.IsRemote() {
		f |= flagIsRemote
	}
	return f
}

func spanKindNumber(k trace.SpanKind) uint64 {
	switch k {
	case trace.SpanKindInternal:
		return 1
	case trace.SpanKindServer:
		return 2
	case trace.SpanKindClient:
		return 3
	case trace.SpanKindProducer:
		return 4
	case trace.SpanKindConsumer:
		return 5
	}
	return 0
}

// appendKV appends a KeyValue as field.
func appendKV(b []byte, field protowire.Number, kv attribute.KeyValue) []byte {
	var start int
	b, start = begin(b, field)
	b = appendString(b, fKVKey, string(kv.Key))
	b = appendValue(b, fKVValue, kv.Value)
	return end(b, start)
}

// appendValue appends an AnyValue as field (always present, as the SDK's
// transform sets it).
func appendValue(b []byte, field protowire.Number, v attribute.Value) []byte {
	var start int
	b, start = begin(b, field)
	switch v.Type() {
	case attribute.BOOL:
		b = protowire.AppendTag(b, fAnyBool, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(v.AsBool()))
	case attribute.INT64:
		b = protowire.AppendTag(b, fAnyInt, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v.AsInt64()))
	case attribute.FLOAT64:
		b = protowire.AppendTag(b, fAnyDouble, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		b = protowire.AppendTag(b, fAnyString, protowire.BytesType)
		b = protowire.AppendString(b, v.AsString())
	case attribute.BYTESLICE:
		b = protowire.AppendTag(b, fAnyBytes, protowire.BytesType)
		b = protowire.AppendBytes(b, v.AsByteSlice())
	case attribute.BOOLSLICE:
		b = appendArray(b, v.AsBoolSlice(), attribute.BoolValue)
	case attribute.INT64SLICE:
		b = appendArray(b, v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		b = appendArray(b, v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		b = appendArray(b, v.AsStringSlice(), attribute.StringValue)
	case attribute.SLICE:
		b = appendArray(b, v.AsSlice(), func(x attribute.Value) attribute.Value { return x })
	case attribute.MAP:
		var a int
		b, a = begin(b, fAnyKVList)
		for _, kv := range v.AsMap() {
			b = appendKV(b, fArrayValues, kv)
		}
		b = end(b, a)
	case attribute.EMPTY:
	default:
		b = protowire.AppendTag(b, fAnyString, protowire.BytesType)
		b = protowire.AppendString(b, "INVALID")
	}
	return end(b, start)
}

// appendArray writes xs as an AnyValue holding an ArrayValue, each
// element converted to an attribute value.
func appendArray[T any](b []byte, xs []T, value func(T) attribute.Value) []byte {
	b, a := begin(b, fAnyArray)
	for _, x := range xs {
		b = appendValue(b, fArrayValues, value(x))
	}
	return end(b, a)
}
