package engine

import (
	"sync/atomic"
	"time"
)

// workers starts step workers (and for_each items). With reuse off it is
// a plain `go fn()`. With reuse on, a worker that finishes waits up to
// idle for the next job before it exits: a step's call goes deep (engine,
// backend client, HTTP transport), and on a fresh goroutine the runtime
// grows and copies its stack several times on the way down — about a
// third of a step's CPU in a chain of HTTP calls (BenchmarkCompositeChain
// in package server). Idle workers are bounded by the peak number of
// concurrent steps and gone after idle; no worker belongs to a paused run.
type workers struct {
	reuse bool
	idle  time.Duration
	jobs  chan func() // unbuffered: a send succeeds only to a waiting worker
	// spawned counts goroutines started (tests).
	spawned atomic.Int64
}

func newWorkers(reuse bool) *workers {
	return &workers{reuse: reuse, idle: 10 * time.Second, jobs: make(chan func())}
}

// start runs fn on a worker.
func (w *workers) start(fn func()) {
	if !w.reuse {
		w.spawned.Add(1)
		go fn()
		return
	}
	select {
	case w.jobs <- fn:
	default:
		w.spawned.Add(1)
		go w.serve(fn)
	}
}

// serve runs fn, then further jobs, until idle passes without one.
func (w *workers) serve(fn func()) {
	fn()
	fn = nil // an idle worker must not keep its last run alive
	t := time.NewTimer(w.idle)
	defer t.Stop()
	for {
		select {
		case fn = <-w.jobs:
			fn()
			fn = nil
			t.Reset(w.idle)
		case <-t.C:
			return
		}
	}
}
