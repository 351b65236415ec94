package main

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// runPaired alternates which side goes first, times both sides the same
// number of times, and stops at the first error.
func TestRunPaired(t *testing.T) {
	var seq strings.Builder
	op := func(name string) func(context.Context) error {
		return func(context.Context) error { seq.WriteString(name); return nil }
	}
	la, lb := runPaired(context.Background(), 1, 20*time.Millisecond, op("a"), op("b"))
	got := seq.String()
	if !strings.HasPrefix(got, "ab"+"ab"+"ba"+"ab"+"ba") || la.N() != lb.N() || la.N() < 2 {
		t.Fatalf("order %.12q…, %d and %d timed calls", got, la.N(), lb.N())
	}
	boom := errors.New("boom")
	n := 0
	la, lb = runPaired(context.Background(), 0, time.Second, func(context.Context) error { return nil }, func(context.Context) error {
		if n++; n == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(la.Err, boom) || !errors.Is(lb.Err, boom) || la.N() != 3 || lb.N() != 2 {
		t.Fatalf("after an error: %v/%v, %d and %d timed calls", la.Err, lb.Err, la.N(), lb.N())
	}
}

// medianCI gives the textbook order statistics, refuses samples too
// small for the level, and covers the true median about as often as it
// claims.
func TestMedianCI(t *testing.T) {
	seq := func(n int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = float64(n - i) // reversed: medianCI sorts
		}
		return xs
	}
	for _, c := range []struct {
		n      int
		lo, hi float64 // 1-based ranks
	}{{6, 1, 6}, {20, 6, 15}, {100, 40, 61}} {
		lo, hi, ok := medianCI(seq(c.n), 0.95)
		if !ok || lo != c.lo || hi != c.hi {
			t.Errorf("n=%d: x(%v)…x(%v) ok=%v, want x(%v)…x(%v)", c.n, lo, hi, ok, c.lo, c.hi)
		}
	}
	if _, _, ok := medianCI(seq(5), 0.95); ok {
		t.Error("n=5 at 95 %: ok, want too few samples")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const trials, n = 4000, 40
	covered := 0
	for range trials {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = rng.ExpFloat64() // skewed; the true median is ln 2
		}
		if lo, hi, _ := medianCI(xs, 0.95); lo <= math.Ln2 && math.Ln2 <= hi {
			covered++
		}
	}
	if f := float64(covered) / trials; f < 0.94 || f > 0.99 {
		t.Errorf("covered the true median in %.3f of %d trials, want about 0.95–0.97", f, trials)
	}
}
