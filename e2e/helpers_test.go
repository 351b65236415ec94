// Package e2e tests the built vmcp binary end to end: `vmcp serve` as a
// child process, real backend processes (the demo backends over stdio and
// over HTTP, @modelcontextprotocol/server-everything from npm), and a real
// MCP client (mcp-go, streamable HTTP), all on loopback.
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/state/statetest"
)

var (
	// vmcpBin is the binary under test, built once by TestMain.
	vmcpBin string
	// moduleRoot is the directory holding go.mod.
	moduleRoot string
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if file := os.Getenv(probeEnv); file != "" {
		return serveProbe(file) // this binary as a stdio backend (partition_test.go)
	}
	root, err := findModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	moduleRoot = root
	tmp, err := os.MkdirTemp("", "vmcp-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	defer statetest.StopPrivatePostgres() // if a test started one
	// VMCP_E2E_BINARY tests a binary built elsewhere instead.
	if bin := os.Getenv("VMCP_E2E_BINARY"); bin != "" {
		vmcpBin = bin
		return m.Run()
	}
	vmcpBin = filepath.Join(tmp, "vmcp")
	// Under `go test -race` the binary is race-instrumented too, so a data
	// race in the gateway under real traffic fails the test that caused it.
	args := []string{"build", "-o", vmcpBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/vmcp")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go %s: %v\n%s", strings.Join(args, " "), err, out)
		return 1
	}
	return m.Run()
}

// findModuleRoot walks up from the package directory to go.mod.
func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the e2e package")
		}
		dir = parent
	}
}

// vmcp serve as a child process

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is one running `vmcp serve`.
type proc struct {
	cmd    *exec.Cmd
	dir    string
	Addr   string // 127.0.0.1:port
	Base   string // http://127.0.0.1:port
	URL    string // …/mcp
	stderr *lockedBuffer
	exited chan struct{}
	err    error // the exit status, once exited is closed
}

// Stderr is what the process wrote so far.
func (p *proc) Stderr() string { return p.stderr.String() }

// Pid is the serve process's pid.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// writeConfig writes cfg as vmcp.yaml into a new temporary directory.
func writeConfig(t *testing.T, cfg string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "vmcp.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// launch starts `vmcp serve` for the config file without waiting.
func launch(t *testing.T, cfgPath, addr string) *proc {
	t.Helper()
	dir := filepath.Dir(cfgPath)
	p := &proc{dir: dir, Addr: addr, Base: "http://" + addr, URL: "http://" + addr + "/mcp",
		stderr: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(vmcpBin, "serve", "--config", cfgPath, "--listen", addr,
		"--state", filepath.Join(dir, "state.db"), "--log-level", "debug")
	p.cmd.Dir = dir
	if os.Getenv("GORACE") == "" {
		// A -race binary sleeps 1s at exit by default; vmcp and its
		// demo-backend children would each spend it.
		p.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=50")
	}
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	// Its own process group: a test that fails half-way can still take
	// down everything it started.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p
}

// startVMCP writes cfg, starts `vmcp serve` on a free loopback port and
// waits for /readyz. Cleanup sends SIGTERM and asserts a clean exit in
// time (and no data race reported by a -race binary).
func startVMCP(t *testing.T, cfg string) *proc {
	t.Helper()
	cfgPath := writeConfig(t, cfg)
	var p *proc
	for attempt := 0; ; attempt++ {
		p = launch(t, cfgPath, freeAddr(t))
		err := p.waitReady(30 * time.Second)
		if err == nil {
			break
		}
		p.kill()
		if attempt == 0 && strings.Contains(p.Stderr(), "address already in use") {
			continue
		}
		t.Fatalf("vmcp serve did not become ready: %v\nstderr:\n%s", err, p.Stderr())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vmcp serve %s stderr (tail):\n%s", p.Addr, tail(p.Stderr(), 30000))
		}
		if p.Exited() {
			return
		}
		if err := p.stop(15 * time.Second); err != nil {
			t.Errorf("shutting down vmcp serve: %v\nstderr:\n%s", err, p.Stderr())
		}
		checkNoRace(t, p)
	})
	return p
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func checkNoRace(t *testing.T, p *proc) {
	t.Helper()
	if s := p.Stderr(); strings.Contains(s, "WARNING: DATA RACE") {
		t.Errorf("vmcp serve reported a data race:\n%s", s)
	}
}

// waitReady polls /readyz until it answers 200, the process exits or the
// timeout passes.
func (p *proc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("exited early: %v", p.err)
		}
		resp, err := hc.Get(p.Base + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s", timeout)
}

// stop sends SIGTERM and waits; it fails if the process does not exit in
// time (then kills its group) or exits with an error.
func (p *proc) stop(timeout time.Duration) error {
	if p.Exited() {
		return fmt.Errorf("had already exited: %v", p.err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			return fmt.Errorf("exit after SIGTERM: %v", p.err)
		}
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("still running %s after SIGTERM", timeout)
	}
}

// kill takes down the whole process group.
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// runVMCPFail runs `vmcp serve` with cfg, expecting it to exit on its own
// (a startup error) within the timeout; it returns the exit code and
// stderr.
func runVMCPFail(t *testing.T, cfg string) (int, string) {
	t.Helper()
	p := launch(t, writeConfig(t, cfg), freeAddr(t))
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.kill()
		t.Fatalf("vmcp serve did not exit; stderr:\n%s", p.Stderr())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		code = ee.ExitCode()
	} else if p.err != nil {
		t.Fatalf("vmcp serve: %v", p.err)
	}
	checkNoRace(t, p)
	return code, p.Stderr()
}

// statusDoc is the part of /status the tests read.
type statusDoc struct {
	Ready    bool `json:"ready"`
	Tools    int  `json:"tools"`
	Backends []struct {
		Name      string `json:"name"`
		Transport string `json:"transport"`
		State     string `json:"state"`
		Tools     int    `json:"tools"`
		LastError string `json:"last_error"`
		Connects  int    `json:"connects"`
		PID       int    `json:"pid"`
	} `json:"backends"`
	Replicas []struct {
		ID   string `json:"id"`
		Self bool   `json:"self"`
		Live bool   `json:"live"`
	} `json:"replicas"`
}

func (p *proc) status(t *testing.T) statusDoc {
	t.Helper()
	resp, err := http.Get(p.Base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st statusDoc
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// backendStatus returns one backend's /status entry.
func (p *proc) backendStatus(t *testing.T, name string) (state, lastErr string, pid int) {
	t.Helper()
	for _, b := range p.status(t).Backends {
		if b.Name == name {
			return b.State, b.LastError, b.PID
		}
	}
	t.Fatalf("/status has no backend %q", name)
	return "", "", 0
}
