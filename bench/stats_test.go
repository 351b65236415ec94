package main

import (
	"context"
	"errors"
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
