package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Process placement, for the telemetry scenario's c=1 pairs.
//
// On this 2-vCPU VM a call at c=1 crosses processes four times, and each
// crossing is a wake-up either on the same CPU or on the other one (an
// inter-processor interrupt, tens of µs here). Where the scheduler puts
// each process differs from round to round, so an unpinned c=1 round is
// bimodal: measured 1–33 µs of "added" latency between rounds of the
// same two builds. Placement is pinned instead: the gateways on one CPU,
// the load generator and the backend on the other(s), the topology of a
// gateway with a core of its own. Both gateways get the same placement
// and only one runs at a time, so on − off is vmcp's own cost.

// cpuSet is the CPUs this process may run on (what its children inherit).
func cpuSet() (unix.CPUSet, error) {
	var s unix.CPUSet
	err := unix.SchedGetaffinity(0, &s)
	return s, err
}

// cpuList is s's CPUs in order.
func cpuList(s unix.CPUSet) []int {
	var out []int
	for c := range 1024 {
		if s.IsSet(c) {
			out = append(out, c)
		}
	}
	return out
}

// setAffinity puts every thread of process pid on the CPUs in s (threads
// it starts later inherit it from the thread that starts them).
func setAffinity(pid int, s unix.CPUSet) error {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// A thread that exited meanwhile is no error.
		if err := unix.SchedSetaffinity(tid, &s); err != nil && err != unix.ESRCH {
			return fmt.Errorf("affinity of pid %d thread %d: %w", pid, tid, err)
		}
	}
	return nil
}

// placement pins gateways to the last CPU of all and others to the rest;
// restore puts every process back on all. ok is false when there is a
// single CPU (nothing to place).
type placement struct {
	all, gw, rest unix.CPUSet
	ok            bool
}

func newPlacement() (placement, error) {
	all, err := cpuSet()
	if err != nil {
		return placement{}, err
	}
	cpus := cpuList(all)
	if len(cpus) < 2 {
		return placement{all: all}, nil
	}
	p := placement{all: all, rest: all, ok: true}
	last := cpus[len(cpus)-1]
	p.gw.Set(last)
	p.rest.Clear(last)
	return p, nil
}

// pin places the gateways and the others.
func (p placement) pin(gateways, others []int) error {
	for _, pid := range gateways {
		if err := setAffinity(pid, p.gw); err != nil {
			return err
		}
	}
	for _, pid := range others {
		if err := setAffinity(pid, p.rest); err != nil {
			return err
		}
	}
	return nil
}

// restore puts pids back on every CPU.
func (p placement) restore(pids ...int) error {
	for _, pid := range pids {
		if err := setAffinity(pid, p.all); err != nil {
			return err
		}
	}
	return nil
}

// fmtCPUs is s's CPUs, comma-separated.
func fmtCPUs(s unix.CPUSet) string {
	out := ""
	for i, c := range cpuList(s) {
		if i > 0 {
			out += ","
		}
		out += strconv.Itoa(c)
	}
	return out
}
