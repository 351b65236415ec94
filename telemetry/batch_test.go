package telemetry

import (
	"context"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// gateExporter records the batches it is given; while gate is non-nil
// each export waits for it to close.
type gateExporter struct {
	mu       sync.Mutex
	batches  []int
	names    []string
	gate     chan struct{}
	exported chan int
	shut     bool
}

func (e *gateExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	gate := e.gate
	e.mu.Unlock()
	if gate != nil {
		<-gate
	}
	e.mu.Lock()
	e.batches = append(e.batches, len(spans))
	for _, s := range spans {
		e.names = append(e.names, s.Name())
	}
	e.mu.Unlock()
	if e.exported != nil {
		e.exported <- len(spans)
	}
	return nil
}

func (e *gateExporter) Shutdown(context.Context) error {
	e.mu.Lock()
	e.shut = true
	e.mu.Unlock()
	return nil
}

func bspEnv(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func endSpans(tp *sdktrace.TracerProvider, n int) {
	tr := tp.Tracer("t")
	for i := 0; i < n; i++ {
		_, s := tr.Start(context.Background(), "s")
		s.End()
	}
}

// A full batch is exported without waiting for the schedule delay, in
// batches of at most MAX_EXPORT_BATCH_SIZE; Shutdown exports the rest and
// shuts the exporter down; unsampled spans are not exported.
func TestBatcherExportsFullBatchesAndFlushesAtShutdown(t *testing.T) {
	exp := &gateExporter{exported: make(chan int, 16)}
	b := newBatcher(exp, bspEnv("OTEL_BSP_SCHEDULE_DELAY", "3600000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4"), nil)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))
	endSpans(tp, 4)
	select {
	case n := <-exp.exported:
		if n != 4 {
			t.Fatalf("first batch has %d spans, want 4", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a full batch was not exported before the schedule delay")
	}
	endSpans(tp, 3)
	// Unsampled: never queued.
	tpOff := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), sdktrace.WithSpanProcessor(b))
	endSpans(tpOff, 5)
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	exp.mu.Lock()
	defer exp.mu.Unlock()
	total := 0
	for _, n := range exp.batches {
		if n > 4 {
			t.Errorf("a batch of %d spans, the maximum is 4", n)
		}
		total += n
	}
	if total != 7 || !exp.shut {
		t.Fatalf("exported %d spans (want 7), exporter shut down %v", total, exp.shut)
	}
	endSpans(tp, 2) // after Shutdown: dropped, no panic
}

// With the exporter stuck, spans beyond MAX_QUEUE_SIZE are dropped and
// counted; ending a span never waits for the exporter.
func TestBatcherDropsWhenQueueFull(t *testing.T) {
	exp := &gateExporter{gate: make(chan struct{}), exported: make(chan int, 64)}
	var warned []int64
	var wmu sync.Mutex
	b := newBatcher(exp, bspEnv("OTEL_BSP_SCHEDULE_DELAY", "3600000", "OTEL_BSP_MAX_QUEUE_SIZE", "8", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8"),
		func(n int64) { wmu.Lock(); warned = append(warned, n); wmu.Unlock() })
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))
	endSpans(tp, 8) // a full batch: the loop takes it and blocks in the exporter
	// Wait until the loop has taken the batch (the queue is empty again).
	for i := 0; ; i++ {
		b.mu.Lock()
		n := len(b.queue)
		b.mu.Unlock()
		if n == 0 {
			break
		}
		if i > 30000 {
			t.Fatal("the export loop never took the full batch")
		}
		time.Sleep(time.Millisecond)
	}
	endSpans(tp, 8+5) // 8 queue, 5 dropped; none of this blocks
	if d := b.Dropped(); d != 5 {
		t.Fatalf("dropped %d, want 5", d)
	}
	close(exp.gate)
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	exp.mu.Lock()
	total := 0
	for _, n := range exp.batches {
		total += n
	}
	exp.mu.Unlock()
	if total != 16 {
		t.Fatalf("exported %d spans, want 16", total)
	}
	wmu.Lock()
	defer wmu.Unlock()
	var sum int64
	for _, n := range warned {
		sum += n
	}
	if sum != 5 {
		t.Fatalf("warned about %d dropped spans (%v), want 5", sum, warned)
	}
}

// ForceFlush exports what is queued at once.
func TestBatcherForceFlush(t *testing.T) {
	exp := &gateExporter{}
	b := newBatcher(exp, bspEnv("OTEL_BSP_SCHEDULE_DELAY", "3600000"), nil)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))
	defer tp.Shutdown(context.Background())
	endSpans(tp, 3)
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	exp.mu.Lock()
	defer exp.mu.Unlock()
	if len(exp.names) != 3 {
		t.Fatalf("flushed %d spans, want 3", len(exp.names))
	}
}

// ctxExporter blocks each export until its context ends (a collector
// that never answers).
type ctxExporter struct{ started chan struct{} }

func (e *ctxExporter) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	select {
	case e.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}
func (e *ctxExporter) Shutdown(context.Context) error { return nil }

// Shutdown with an export stuck in progress returns once its context
// ends (the export is cancelled), not after the export timeout.
func TestBatcherShutdownCancelsStuckExport(t *testing.T) {
	exp := &ctxExporter{started: make(chan struct{}, 1)}
	b := newBatcher(exp, bspEnv("OTEL_BSP_SCHEDULE_DELAY", "3600000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2", "OTEL_BSP_EXPORT_TIMEOUT", "3600000"), nil)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))
	endSpans(tp, 2)
	<-exp.started // the loop is exporting, and will not finish by itself
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tp.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Shutdown hung behind an export that never finishes")
	}
}
