package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// TestBackendKilledAndRestarted SIGKILLs a stdio backend: its tools leave
// tools/list with a list_changed notification, and come back (with
// another) once vmcp has restarted it.
func TestBackendKilledAndRestarted(t *testing.T) {
	p := startVMCP(t, fmt.Sprintf("name: e2e-restart\nbackends:\n  - {name: logs, command: %s}\n  - {name: metrics, builtin: metrics}\n%s",
		demoCmd("logs"), fastHealth))
	// A 2025-11-25 session gets list_changed on its GET stream; a
	// 2026-07-28 client opts in with subscriptions/listen.
	leg := connect(t, p.URL, legacy, true)
	mod := connect(t, p.URL, modern, false)
	stop, err := mod.ListenAsync(t.Context(), mcp.SubscriptionFilter{ToolsListChanged: true}, func(err error) { t.Logf("listen: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	clients := map[era]*mcpClient{legacy: leg, modern: mod}

	has := func(c *mcpClient, name string) bool { _, ok := c.toolNames(t)[name]; return ok }
	for e, c := range clients {
		if !has(c, "logs_search") || !has(c, "metrics_query") {
			t.Fatalf("%s: tools/list before the kill: %v", e, keys(c.toolNames(t)))
		}
	}
	state, _, pid := p.backendStatus(t, "logs")
	if state != "ready" || pid <= 0 {
		t.Fatalf("/status: logs is %s with pid %d", state, pid)
	}
	// Give the listen stream a moment to be established.
	time.Sleep(200 * time.Millisecond)
	changed := method("notifications/tools/list_changed")
	before := map[era]int{}
	for e, c := range clients {
		before[e] = c.notes.count(changed)
	}

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Gone: from tools/list, with a notification.
	eventually(t, 10*time.Second, "logs_search to leave tools/list", func() bool { return !has(leg, "logs_search") })
	t.Logf("logs_search left tools/list %s after the kill", time.Since(killed).Round(time.Millisecond))
	for e, c := range clients {
		if !c.notes.waitCount(changed, before[e]+1, 5*time.Second) {
			t.Errorf("%s client: no notifications/tools/list_changed after the backend died", e)
		}
		if !has(c, "metrics_query") {
			t.Errorf("%s client: the other backend's tools left too", e)
		}
	}
	// While it is down, a call fails fast with the reason (unless vmcp
	// already restarted it, which can take well under a second).
	res, err := leg.call(t, "logs_search", `{"service":"checkout","since":"1h"}`)
	if st, _, _ := p.backendStatus(t, "logs"); st != "ready" && err == nil && !res.IsError {
		t.Errorf("a call to the dead backend's tool succeeded while /status says %s: %s", st, text(res))
	}

	// Back: vmcp restarts the process.
	eventually(t, 15*time.Second, "logs_search to come back", func() bool { return has(leg, "logs_search") })
	t.Logf("logs_search was back %s after the kill", time.Since(killed).Round(time.Millisecond))
	for e, c := range clients {
		if !c.notes.waitCount(changed, before[e]+2, 5*time.Second) {
			t.Errorf("%s client: %d list_changed notifications in all, want a second one when the backend came back", e, c.notes.count(changed)-before[e])
		}
	}
	state2, _, pid2 := p.backendStatus(t, "logs")
	if state2 != "ready" || pid2 <= 0 || pid2 == pid {
		t.Errorf("/status after the restart: logs is %s with pid %d (was %d)", state2, pid2, pid)
	}
	if !strings.Contains(text(leg.mustCall(t, "logs_search", `{"service":"checkout","since":"1h"}`)), "error_count") {
		t.Error("logs_search after the restart")
	}
}

// TestNoChildLeftAfterShutdown: every process vmcp started (and what
// those started) is gone once vmcp exits after SIGTERM.
func TestNoChildLeftAfterShutdown(t *testing.T) {
	// The metrics backend runs behind a shell that leaves a grandchild
	// (sleep) in the backend's process group.
	wrapper := yamlList([]string{"/bin/sh", "-c", "sleep 300 & exec \"$0\" demo-backend metrics", vmcpBin})
	cfg := fmt.Sprintf("name: e2e-children\nbackends:\n  - {name: logs, command: %s}\n  - {name: metrics, command: %s}\n", demoCmd("logs"), wrapper)
	// A node process too, when server-everything is installed.
	if argv, err := everythingArgv(); err == nil {
		cfg += fmt.Sprintf("  - {name: everything, command: %s}\n", yamlList(argv))
	}
	p := startVMCP(t, cfg+fastHealth)
	c := connect(t, p.URL, legacy, false)
	c.mustCall(t, "metrics_query", `{"service":"checkout"}`)

	kids := descendants(p.Pid())
	var backendPids []int
	for _, b := range p.status(t).Backends {
		if b.PID <= 0 || b.State != "ready" {
			t.Errorf("backend %s: state %s, pid %d", b.Name, b.State, b.PID)
			continue
		}
		backendPids = append(backendPids, b.PID)
	}
	for _, bp := range backendPids {
		if _, ok := kids[bp]; !ok {
			t.Errorf("backend pid %d from /status is not a descendant of vmcp (%v)", bp, kids)
		}
	}
	sleeps := 0
	for pid := range kids {
		if comm(pid) == "sleep" {
			sleeps++
		}
	}
	if sleeps != 1 || len(kids) < len(backendPids)+1 {
		t.Fatalf("expected the backends and the wrapper's sleep among vmcp's descendants, got %v", describe(kids))
	}

	_ = c.Close()
	start := time.Now()
	if err := p.stop(15 * time.Second); err != nil {
		t.Fatalf("vmcp serve: %v\n%s", err, tail(p.Stderr(), 4000))
	}
	t.Logf("vmcp exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	// Processes reparented after vmcp exits are reaped by init; allow
	// a moment for that.
	var left map[int]string
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left = map[int]string{}
		for pid, st := range kids {
			if alive(pid, st) {
				left[pid] = comm(pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("processes left running after vmcp exited: %v (stderr:\n%s)", left, tail(p.Stderr(), 4000))
		for pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// descendants returns the pids below pid (children, grandchildren, …)
// with each one's start time, from /proc/<pid>/task/*/children.
func descendants(pid int) map[int]string {
	out := map[int]string{}
	var walk func(int)
	walk = func(p int) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p))
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, s := range strings.Fields(string(b)) {
				c, err := strconv.Atoi(s)
				if err != nil || out[c] != "" {
					continue
				}
				out[c] = startTime(c)
				walk(c)
			}
		}
	}
	walk(pid)
	return out
}

// statFields returns the fields of /proc/pid/stat after the command name
// (state first), or nil.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// startTime is field 22 of /proc/pid/stat (to tell a reused pid).
func startTime(pid int) string {
	f := statFields(pid)
	if len(f) < 20 {
		return "?"
	}
	return f[19]
}

// alive reports whether pid is still the process first seen (same start
// time) and is not a zombie.
func alive(pid int, start string) bool {
	f := statFields(pid)
	if f == nil || startTime(pid) != start {
		return false
	}
	return f[0] != "Z" && f[0] != "X"
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

func describe(pids map[int]string) string {
	var parts []string
	for pid := range pids {
		parts = append(parts, fmt.Sprintf("%d(%s)", pid, comm(pid)))
	}
	return strings.Join(parts, " ")
}
