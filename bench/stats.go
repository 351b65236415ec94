package main

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"
)

// load is the outcome of a timed run of an operation.
type load struct {
	Lat     []time.Duration // every timed operation's latency, sorted
	Elapsed time.Duration   // wall time of the timed window
	Err     error           // the first failure (wrong answer or error): the cell is invalid
}

func (l load) N() int { return len(l.Lat) }

func (l load) P(q float64) time.Duration { return pct(l.Lat, q) }

func (l load) Throughput() float64 {
	if l.Elapsed <= 0 {
		return 0
	}
	return float64(len(l.Lat)) / l.Elapsed.Seconds()
}

// pct is the q-quantile (0..1) of sorted durations (nearest rank).
func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var s time.Duration
	for _, x := range d {
		s += x
	}
	return s / time.Duration(len(d))
}

// runLoad runs op on conc workers: warm untimed operations each, then, all
// together, timed operations until dur passes (at least minOps in all, at
// most maxOps if > 0). op gets the worker index. The first error stops the
// run and is kept.
func runLoad(ctx context.Context, conc, warm int, dur time.Duration, minOps, maxOps int, op func(ctx context.Context, w int) error) load {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		lats     = make([][]time.Duration, conc)
		ready    sync.WaitGroup
		start    = make(chan struct{})
		wg       sync.WaitGroup
		done     = make(chan struct{})
		doneOnce sync.Once
		count    int
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	ready.Add(conc)
	for w := range conc {
		wg.Go(func() {
			for range warm {
				if err := op(ctx, w); err != nil {
					fail(err)
					break
				}
			}
			ready.Done()
			<-start
			for ctx.Err() == nil {
				select {
				case <-done:
					return
				default:
				}
				t0 := time.Now()
				if err := op(ctx, w); err != nil {
					if ctx.Err() == nil {
						fail(err)
					}
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
				mu.Lock()
				count++
				c := count
				mu.Unlock()
				if maxOps > 0 && c >= maxOps {
					doneOnce.Do(func() { close(done) })
				}
			}
		})
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	go func() {
		t := time.NewTimer(dur)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				mu.Lock()
				c := count
				mu.Unlock()
				if c >= minOps {
					doneOnce.Do(func() { close(done) })
					return
				}
				t.Reset(10 * time.Millisecond)
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(t0)
	all := slices.Concat(lats...)
	slices.Sort(all)
	return load{Lat: all, Elapsed: elapsed, Err: firstErr}
}

// timeN runs op n times sequentially (after warm untimed runs) and
// returns the sorted latencies.
func timeN(ctx context.Context, warm, n int, op func(ctx context.Context) error) load {
	for range warm {
		if err := op(ctx); err != nil {
			return load{Err: err}
		}
	}
	lat := make([]time.Duration, 0, n)
	t0 := time.Now()
	for range n {
		s := time.Now()
		if err := op(ctx); err != nil {
			return load{Err: err}
		}
		lat = append(lat, time.Since(s))
	}
	el := time.Since(t0)
	slices.Sort(lat)
	return load{Lat: lat, Elapsed: el}
}

// linearFit is the least-squares line y = a + b·x.
func linearFit(xs, ys []float64) (a, b float64) {
	n := float64(len(xs))
	if n < 2 {
		return 0, 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0, 0
	}
	b = (n*sxy - sx*sy) / d
	a = (sy - b*sx) / n
	return a, b
}

// us is a duration in microseconds.
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// runPaired runs two operations call by call on one goroutine, a then b
// and b then a in turn, for dur after warm untimed pairs: each side's
// latencies come from the same moments, so the machine's drift (other
// load, frequency, the scheduler) falls on both alike. The first error
// stops the run and is kept in both loads.
func runPaired(ctx context.Context, warm int, dur time.Duration, a, b func(ctx context.Context) error) (load, load) {
	var la, lb load
	step := func(op func(context.Context) error, l *load, timed bool) bool {
		t0 := time.Now()
		if err := op(ctx); err != nil {
			la.Err, lb.Err = err, err
			return false
		}
		if timed {
			l.Lat = append(l.Lat, time.Since(t0))
		}
		return true
	}
	for range warm {
		if !step(a, &la, false) || !step(b, &lb, false) {
			return la, lb
		}
	}
	t0 := time.Now()
	for i := 0; ctx.Err() == nil && time.Since(t0) < dur; i++ {
		first, fl, second, sl := a, &la, b, &lb
		if i%2 == 1 {
			first, fl, second, sl = b, &lb, a, &la
		}
		if !step(first, fl, true) || !step(second, sl, true) {
			break
		}
	}
	la.Elapsed, lb.Elapsed = time.Since(t0), time.Since(t0)
	slices.Sort(la.Lat)
	slices.Sort(lb.Lat)
	return la, lb
}

// medianCI is a distribution-free confidence interval for the median of
// xs, which it sorts: the order statistics x(k) and x(n+1−k) for the
// largest k with P(Binomial(n, ½) < k) ≤ (1 − level)/2, so the interval
// holds the median with probability at least level whatever the
// distribution. ok is false when n is too small for the level (below 6
// samples at 95 %).
func medianCI(xs []float64, level float64) (lo, hi float64, ok bool) {
	n := len(xs)
	if n == 0 {
		return 0, 0, false
	}
	slices.Sort(xs)
	tail := (1 - level) / 2
	// lc(i) is log P(X = i) for X ~ Binomial(n, ½); cdf sums them up to
	// P(X ≤ i).
	lc := func(i int) float64 {
		a, _ := math.Lgamma(float64(n + 1))
		b, _ := math.Lgamma(float64(i + 1))
		c, _ := math.Lgamma(float64(n - i + 1))
		return a - b - c - float64(n)*math.Ln2
	}
	k, cdf := 0, 0.0 // k: the largest with P(X < k) = P(X ≤ k−1) ≤ tail
	for i := 0; i < n; i++ {
		cdf += math.Exp(lc(i))
		if cdf > tail {
			break
		}
		k = i + 1
	}
	if k == 0 {
		return xs[0], xs[n-1], false
	}
	return xs[k-1], xs[n-k], true
}
