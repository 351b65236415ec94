package telemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// deferred takes the request path's operation durations (Op.End and
// ServerOperation: the SERVER and CLIENT histograms) off the request path. End appends the
// measurement to a buffer under a mutex; a goroutine records the buffer
// into the SDK's histograms a little later, in one pass.
//
// Why: a histogram Record walks the SDK's attribute-set map, the bucket
// search, the exemplar reservoir and their locks. In a tight loop that is
// about a microsecond, but on the request path, between a request's
// decoding and a backend round trip, that memory is cold: measured in the
// proxied call, the two records cost several times that. Recorded
// together, one after another, they are warm.
//
// Nothing is lost and nothing is stale where it can be seen: every
// collection (a Prometheus scrape, an OTLP export, ManualReader.Collect,
// ForceFlush, Shutdown) runs the instruments' callbacks first, and the
// callback drains the buffer before the SDK reads the aggregations. A
// full buffer records in place (the old way) rather than drop or block.
// An exemplar keeps the span it was measured in (its span context is
// kept); its timestamp is when the measurement was recorded, at most
// deferDelay after the operation ended.
type deferred struct {
	sets  *labelSets
	delay time.Duration

	mu     sync.Mutex
	buf    []pendingRecord
	spare  []pendingRecord
	closed bool // measurements are recorded in place

	drainMu sync.Mutex // one drain at a time: the loop, a collection, Shutdown

	wake chan struct{} // capacity 1: the buffer is no longer empty
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// pendingRecord is one measurement waiting to be recorded.
type pendingRecord struct {
	hist   metric.Float64Histogram
	v      float64
	labels labelKey
	sc     trace.SpanContext // the span it was measured in (exemplar)
}

const (
	// deferDelay is how long a measurement may wait before the loop
	// records it (a collection records it at once).
	deferDelay = 50 * time.Millisecond
	// maxDeferred measurements wait at most; beyond, End records in
	// place.
	maxDeferred = 8192
)

// newDeferred starts a recorder that records what waits delay after it
// started waiting (deferDelay; tests wait longer).
func newDeferred(sets *labelSets, delay time.Duration) *deferred {
	d := &deferred{sets: sets, delay: delay, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go d.loop()
	return d
}

// add queues a measurement, or records it now when the buffer is full or
// the recorder has stopped.
func (d *deferred) add(ctx context.Context, r pendingRecord) {
	d.mu.Lock()
	if d.closed || len(d.buf) >= maxDeferred {
		d.mu.Unlock()
		r.hist.Record(ctx, r.v, d.sets.get(r.labels)...)
		return
	}
	d.buf = append(d.buf, r)
	first := len(d.buf) == 1
	d.mu.Unlock()
	if first {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// loop records what waits, delay after the buffer stops being empty: at
// most one wake-up per delay however busy the gateway.
func (d *deferred) loop() {
	defer close(d.done)
	for {
		select {
		case <-d.stop:
			return
		case <-d.wake:
		}
		select {
		case <-d.stop:
			return
		case <-time.After(d.delay):
		}
		d.drain()
	}
}

// drain records every waiting measurement, in the order they ended.
func (d *deferred) drain() {
	d.drainMu.Lock()
	defer d.drainMu.Unlock()
	d.mu.Lock()
	recs := d.buf
	d.buf, d.spare = d.spare[:0], nil
	d.mu.Unlock()
	bg := context.Background()
	for i := range recs {
		r := &recs[i]
		ctx := bg
		if r.sc.IsValid() {
			ctx = trace.ContextWithSpanContext(bg, r.sc)
		}
		r.hist.Record(ctx, r.v, d.sets.get(r.labels)...)
		*r = pendingRecord{}
	}
	d.mu.Lock()
	if d.spare == nil && cap(recs) <= maxDeferred {
		d.spare = recs[:0]
	}
	d.mu.Unlock()
}

// close stops the loop and records what waits; later measurements are
// recorded in place.
func (d *deferred) close(context.Context) error {
	d.once.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		close(d.stop)
		<-d.done
	})
	d.drain()
	return nil
}
