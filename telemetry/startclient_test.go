package telemetry

import "context"

// StartClient is StartCall plus the _meta to send: meta's fields and, when
// tracing, the W3C trace context of the new span (overwriting any the
// caller had), meta itself not modified. The tests' shorthand for what
// vmcp's callers do with StartCall and InjectMeta or TraceMeta.
func (t *T) StartClient(ctx context.Context, c Call, meta map[string]any) (context.Context, *Op, map[string]any) {
	ctx, op := t.StartCall(ctx, c)
	if t.Tracing() {
		meta = t.InjectMeta(ctx, meta)
	}
	return ctx, op, meta
}
