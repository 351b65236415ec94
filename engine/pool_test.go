package engine

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Reused workers: sequential jobs run on one goroutine, concurrent jobs get
// one each, and every worker is gone once idle has passed (synctest fails
// the test if a goroutine outlives the bubble).
func TestWorkersReuse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorkers(true)
		ran := 0
		for range 10 {
			done := make(chan struct{})
			w.start(func() { ran++; close(done) })
			<-done
			synctest.Wait() // the worker is back waiting for a job
		}
		if ran != 10 || w.spawned.Load() != 1 {
			t.Fatalf("ran %d jobs on %d goroutines, want 10 on 1", ran, w.spawned.Load())
		}
		var wg sync.WaitGroup
		release := make(chan struct{})
		for range 3 {
			wg.Add(1)
			w.start(func() { defer wg.Done(); <-release })
		}
		close(release)
		wg.Wait()
		if n := w.spawned.Load(); n != 3 {
			t.Fatalf("%d goroutines for 3 concurrent jobs, want 3 (1 reused + 2 new)", n)
		}
		time.Sleep(w.idle + time.Second)
	})
}

// Without reuse every job gets its own goroutine.
func TestWorkersNoReuse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorkers(false)
		for range 3 {
			done := make(chan struct{})
			w.start(func() { close(done) })
			<-done
		}
		if n := w.spawned.Load(); n != 3 {
			t.Fatalf("%d goroutines, want 3", n)
		}
	})
}
