package main

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Pinning reaches every thread of a process and restoring gives every
// thread, those started while pinned included, all CPUs back.
func TestPlacementPinsAndRestoresEveryThread(t *testing.T) {
	p, err := newPlacement()
	if err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid()
	if !p.ok { // one CPU: nothing is pinned; restoring still works
		if err := p.restore(pid); err != nil {
			t.Fatal(err)
		}
		return
	}
	masks := func() map[int]unix.CPUSet {
		out := map[int]unix.CPUSet{}
		tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range tasks {
			tid, _ := strconv.Atoi(e.Name())
			var s unix.CPUSet
			if unix.SchedGetaffinity(tid, &s) == nil {
				out[tid] = s
			}
		}
		return out
	}
	busy := func() { // start threads: goroutines blocked in syscalls
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var ts unix.Timespec
				ts.Nsec = 20e6
				_ = unix.Nanosleep(&ts, nil)
			}()
		}
		wg.Wait()
	}
	if err := p.pin([]int{pid}, nil); err != nil {
		t.Fatal(err)
	}
	busy()
	for tid, s := range masks() {
		if s != p.gw {
			t.Fatalf("pinned: thread %d has CPUs %s, want %s", tid, fmtCPUs(s), fmtCPUs(p.gw))
		}
	}
	if err := p.restore(pid); err != nil {
		t.Fatal(err)
	}
	for tid, s := range masks() {
		if s != p.all {
			t.Fatalf("restored: thread %d has CPUs %s, want %s", tid, fmtCPUs(s), fmtCPUs(p.all))
		}
	}
}
