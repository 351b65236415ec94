package telemetry

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

// histCount is the total count of the histogram named name in a
// collection, and the trace ids of its exemplars.
func histCount(t *testing.T, r sdkmetric.Reader, name string) (uint64, []trace.TraceID) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n uint64
	var ids []trace.TraceID
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				n += dp.Count
				for _, e := range dp.Exemplars {
					ids = append(ids, trace.TraceID(e.TraceID))
				}
			}
		}
	}
	return n, ids
}

// Operation durations are recorded after the request (deferred), yet
// every collection sees all of them: the collection records what waits
// before it reads. Concurrent requests lose none.
func TestDeferredDurationsSeenByEveryCollection(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	tel, err := New(context.Background(), Config{}, &Options{Getenv: func(string) string { return "" }, MetricReader: reader})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	total := uint64(0)
	for round := range 3 {
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := range 250 {
					ctx, op := tel.StartServer(context.Background(), Request{Method: "tools/call", Tool: "echo", Transport: "tcp"})
					errType := ""
					if (w+i)%10 == 0 {
						errType = ErrToolError
					}
					op.End(ctx, errType, "")
				}
			})
		}
		wg.Wait()
		total += 8 * 250
		// No wait: the collection itself records the deferred durations.
		if n, _ := histCount(t, reader, MetricServerDuration); n != total {
			t.Fatalf("round %d: the collection saw %d durations, want %d", round, n, total)
		}
	}
}

// A full buffer and a closed recorder record in place (nothing dropped,
// nothing left waiting); the measurement's span becomes the exemplar.
func TestDeferredFullBufferAndClose(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	h, err := mp.Meter("test").Float64Histogram("d", metric.WithExplicitBucketBoundaries(0.001, 1))
	if err != nil {
		t.Fatal(err)
	}
	var sets labelSets
	d := newDeferred(&sets, time.Hour) // the loop never records here
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4}, TraceFlags: trace.FlagsSampled})
	rec := pendingRecord{hist: h, v: 0.0005, labels: labelKey{method: "tools/call"}, sc: sc}
	for range maxDeferred + 5 {
		d.add(context.Background(), rec)
	}
	if n, _ := histCount(t, reader, "d"); n != 5 {
		t.Fatalf("%d recorded in place with the buffer full, want 5", n)
	}
	d.drain()
	n, ids := histCount(t, reader, "d")
	if n != maxDeferred+5 {
		t.Fatalf("%d recorded after the drain, want %d", n, maxDeferred+5)
	}
	if len(ids) == 0 || ids[0] != sc.TraceID() {
		t.Fatalf("exemplar trace ids %v, want the measurement's span %s", ids, sc.TraceID())
	}
	d.add(context.Background(), rec) // waits
	if err := d.close(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.add(context.Background(), rec) // in place: closed
	if n, _ := histCount(t, reader, "d"); n != maxDeferred+7 {
		t.Fatalf("%d recorded after close, want %d (the waiting one and the one after)", n, maxDeferred+7)
	}
}
