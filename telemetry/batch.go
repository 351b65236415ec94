package telemetry

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// batcher is vmcp's batch span processor. It exports what the SDK's
// BatchSpanProcessor would (every sampled span that ends, in batches of
// at most maxBatch, at least every delay), but hands spans over without
// waking a goroutine per span: the SDK's processor sends each ended span
// on a channel its export goroutine waits on, so every span of a proxied
// call (a SERVER and a CLIENT span) wakes that goroutine, a futex wake and
// a context switch on the call path. Here OnEnd appends to a slice under a
// mutex; the export goroutine is woken only when a batch is full, by the
// timer, or by ForceFlush/Shutdown.
//
// It never blocks the call path: when maxQueue spans are waiting (the
// collector is slow or down), further spans are dropped and counted
// (Dropped; a warning is logged after each export that saw drops).
//
// The standard OTEL_BSP_* variables apply: SCHEDULE_DELAY (ms),
// MAX_QUEUE_SIZE, MAX_EXPORT_BATCH_SIZE, EXPORT_TIMEOUT (ms).
type batcher struct {
	exp      sdktrace.SpanExporter
	delay    time.Duration
	timeout  time.Duration
	maxQueue int
	maxBatch int
	warn     func(dropped int64)

	// enc is exp when it is vmcp's OTLP encoder, which also writes lean
	// spans (lean.go); nil otherwise (only SDK spans are queued then).
	enc *otlpExporter

	mu      sync.Mutex
	queue   []queued
	spare   []queued                // the other buffer (swapped at export)
	ro      []sdktrace.ReadOnlySpan // export scratch for another exporter
	stopped bool

	wake    chan struct{}   // capacity 1: a batch is full
	ctx     context.Context // the export loop's; cancelled by a Shutdown that runs out of time
	cancel  context.CancelFunc
	stop    chan struct{}
	done    chan struct{}
	expMu   sync.Mutex // one export at a time (loop, ForceFlush, Shutdown)
	dropped atomic.Int64
	warned  int64 // dropped count last warned about (under expMu)
	once    sync.Once
}

// batcherDefaults are the SDK's defaults (and the OTel specification's).
const (
	defaultBSPDelay    = 5 * time.Second
	defaultBSPTimeout  = 30 * time.Second
	defaultBSPQueue    = 2048
	defaultBSPMaxBatch = 512
)

// newBatcher starts a batcher over exp, configured from the OTEL_BSP_*
// variables read with getenv.
func newBatcher(exp sdktrace.SpanExporter, getenv func(string) string, warn func(int64)) *batcher {
	num := func(key string, def int) int {
		if v, err := strconv.Atoi(getenv(key)); err == nil && v > 0 {
			return v
		}
		return def
	}
	b := &batcher{
		exp:      exp,
		delay:    time.Duration(num("OTEL_BSP_SCHEDULE_DELAY", int(defaultBSPDelay/time.Millisecond))) * time.Millisecond,
		timeout:  time.Duration(num("OTEL_BSP_EXPORT_TIMEOUT", int(defaultBSPTimeout/time.Millisecond))) * time.Millisecond,
		maxQueue: num("OTEL_BSP_MAX_QUEUE_SIZE", defaultBSPQueue),
		maxBatch: num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", defaultBSPMaxBatch),
		warn:     warn,
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if b.maxBatch > b.maxQueue { // as the SDK: a batch is at most the queue
		b.maxBatch = b.maxQueue
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.enc, _ = exp.(*otlpExporter)
	b.queue = make([]queued, 0, b.maxBatch)
	b.spare = make([]queued, 0, b.maxBatch)
	go b.loop()
	return b
}

func (b *batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span; it never blocks on the exporter.
func (b *batcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	b.enqueue(queued{s: s})
}

// queued is a span waiting for export: an SDK span or a lean span.
type queued struct {
	s sdktrace.ReadOnlySpan
	l *leanSpan
}

// enqueueLean queues a lean span beside the SDK spans (same queue, same
// limits). false: it was not queued (the queue is full, counted as
// dropped, or the batcher is shut down) and the caller still owns it.
func (b *batcher) enqueueLean(l *leanSpan) bool {
	if b.enc == nil {
		return false
	}
	return b.enqueue(queued{l: l})
}

func (b *batcher) enqueue(q queued) bool {
	b.mu.Lock()
	if b.stopped || len(b.queue) >= b.maxQueue {
		b.mu.Unlock()
		b.dropped.Add(1)
		return false
	}
	b.queue = append(b.queue, q)
	full := len(b.queue) == b.maxBatch
	b.mu.Unlock()
	if full {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// Dropped is the number of spans dropped because the queue was full.
func (b *batcher) Dropped() int64 { return b.dropped.Load() }

func (b *batcher) loop() {
	defer close(b.done)
	t := time.NewTimer(b.delay)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-b.wake:
		case <-t.C:
		}
		_ = b.export(b.ctx)
		t.Reset(b.delay)
	}
}

// export sends everything queued, in batches of at most maxBatch, each
// under the export timeout.
func (b *batcher) export(ctx context.Context) error {
	b.expMu.Lock()
	defer b.expMu.Unlock()
	var err error
	for {
		b.mu.Lock()
		batch := b.queue
		b.queue, b.spare = b.spare[:0], nil
		b.mu.Unlock()
		if len(batch) == 0 {
			b.mu.Lock()
			b.spare = batch[:0]
			b.mu.Unlock()
			break
		}
		all := batch
		for len(batch) > 0 {
			n := min(len(batch), b.maxBatch)
			ectx, cancel := context.WithTimeout(ctx, b.timeout)
			err = errors.Join(err, b.exportBatch(ectx, batch[:n]))
			cancel()
			clear(batch[:n]) // the spans are garbage now
			batch = batch[n:]
		}
		b.mu.Lock()
		b.spare = all[:0]
		more := len(b.queue) >= b.maxBatch
		b.mu.Unlock()
		if !more {
			break
		}
	}
	if d := b.dropped.Load(); d != b.warned && b.warn != nil {
		b.warn(d - b.warned)
		b.warned = d
	}
	return err
}

// exportBatch hands one batch to the exporter (under expMu).
func (b *batcher) exportBatch(ctx context.Context, batch []queued) error {
	if b.enc != nil {
		return b.enc.exportQueued(ctx, batch)
	}
	ro := b.ro[:0]
	for _, q := range batch {
		if q.s != nil {
			ro = append(ro, q.s)
		}
	}
	err := b.exp.ExportSpans(ctx, ro)
	clear(ro)
	b.ro = ro[:0]
	return err
}

// ForceFlush exports everything queued now.
func (b *batcher) ForceFlush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.export(ctx)
}

// Shutdown stops the export loop, exports what is queued and shuts the
// exporter down; spans ending after it are dropped. An export in progress
// (a collector that is down, retried) is cancelled when ctx ends, so
// Shutdown takes no longer than ctx allows.
func (b *batcher) Shutdown(ctx context.Context) error {
	var err error
	b.once.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		close(b.stop)
		select {
		case <-b.done:
		case <-ctx.Done():
			b.cancel()
			<-b.done
		}
		b.cancel()
		err = errors.Join(b.export(ctx), b.exp.Shutdown(ctx))
	})
	return err
}
