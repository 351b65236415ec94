package backends

import (
	"context"
	"encoding/json"
	"strconv"
)

// The _meta of a tools/call vmcp sends a backend.
//
// It is the caller's _meta (the client's, decoded) with two things of
// vmcp's own: the progress token vmcp substitutes for the client's (so
// the backend's progress notifications come back to the right call), and,
// when Options.TraceContext is set (telemetry traces on), the W3C trace
// context of vmcp's CLIENT span in place of any trace keys the caller's
// _meta had (traceparent, tracestate, baggage: the backend's parent is
// vmcp's call). The lean path (rawcall.go) writes it straight into the
// request body, keys sorted and values encoded as encoding/json encodes a
// map[string]any, so the bytes are those json.Marshal makes of the merged
// map; the common case, a client that sent no _meta, writes
// {"traceparent":"00-…"} with no map and no reflection. mcp-go's path
// gets the merged map (asMap).

// TraceContext is the W3C trace context a backend call carries in its
// _meta (SEP-414): vmcp's own CLIENT span.
type TraceContext struct {
	// Parent is the traceparent header value; HasParent false: none
	// (the caller's trace keys are still dropped).
	Parent    [55]byte
	HasParent bool
	// State and Baggage are the tracestate and baggage values ("": not
	// sent).
	State, Baggage string
}

// traceKey reports the _meta keys the injected trace context owns.
func traceKey(k string) bool { return k == "traceparent" || k == "tracestate" || k == "baggage" }

// callMeta is the _meta one tools/call sends.
type callMeta struct {
	fields map[string]any // the caller's _meta, not modified; nil: none
	token  string         // the substituted progressToken ("": the field's own value, if any)
	trace  bool           // tc replaces the caller's trace keys
	tc     TraceContext
}

// newCallMeta is the _meta of a call made with ctx (the CLIENT span's
// context) and the caller's fields; tok is the substituted progress
// token.
func (m *Manager) newCallMeta(ctx context.Context, fields map[string]any, tok string) callMeta {
	cm := callMeta{fields: fields, token: tok}
	if f := m.opts.TraceContext; f != nil {
		cm.tc, cm.trace = f(ctx)
	}
	return cm
}

// empty reports a call that sends no _meta at all.
func (cm *callMeta) empty() bool { return cm.fields == nil && !cm.trace }

// skip reports a caller's field the merged _meta leaves out.
func (cm *callMeta) skip(k string) bool { return cm.trace && traceKey(k) }

// asMap is the merged _meta as a map (nil when empty).
func (cm *callMeta) asMap() map[string]any {
	if cm.empty() {
		return nil
	}
	out := make(map[string]any, len(cm.fields)+1)
	for k, v := range cm.fields {
		if !cm.skip(k) {
			out[k] = v
		}
	}
	if cm.token != "" {
		out["progressToken"] = cm.token
	}
	if cm.trace {
		if cm.tc.HasParent {
			out["traceparent"] = string(cm.tc.Parent[:])
		}
		if cm.tc.State != "" {
			out["tracestate"] = cm.tc.State
		}
		if cm.tc.Baggage != "" {
			out["baggage"] = cm.tc.Baggage
		}
	}
	return out
}

// appendJSON appends the merged _meta object to b: the bytes json.Marshal
// makes of asMap(); in the common case (vmcp's own keys only) written
// directly, without building the map.
func (cm *callMeta) appendJSON(b []byte) ([]byte, error) {
	// The common case: nothing but vmcp's own keys, which sort as
	// progressToken < traceparent < tracestate (baggage, rare, goes the
	// general way).
	own := cm.tc.Baggage == ""
	if own {
		for k := range cm.fields {
			if k != "progressToken" && !cm.skip(k) {
				own = false
				break
			}
		}
		if _, ok := cm.fields["progressToken"]; ok && cm.token == "" {
			own = false // a caller's token vmcp did not substitute (null)
		}
	}
	if own {
		b = append(b, '{')
		sep := false
		if cm.token != "" {
			b = append(b, `"progressToken":`...)
			b = strconv.AppendQuote(b, cm.token) // vmcp-<n>: nothing to escape
			sep = true
		}
		if cm.trace && cm.tc.HasParent {
			if sep {
				b = append(b, ',')
			}
			b = append(b, `"traceparent":"`...)
			b = append(b, cm.tc.Parent[:]...) // hex and dashes
			b = append(b, '"')
			sep = true
		}
		if cm.trace && cm.tc.State != "" {
			if sep {
				b = append(b, ',')
			}
			b = append(b, `"tracestate":`...)
			vb, _ := json.Marshal(cm.tc.State) // a string always encodes
			b = append(b, vb...)
		}
		return append(b, '}'), nil
	}
	mb, err := json.Marshal(cm.asMap())
	if err != nil {
		return nil, err
	}
	return append(b, mb...), nil
}
