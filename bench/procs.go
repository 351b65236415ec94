package main

// Child processes: the bench's own subcommands (echo backend, HTTP floor,
// reverse proxy) and `vmcp serve`, each in its own process group, plus
// /proc readings (CPU time, RSS).

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 { // keep the tail bounded
		b.buf.Reset()
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a running child.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	Addr   string // 127.0.0.1:port
	out    *lockedBuffer
	exited chan struct{}
	err    error
}

func (p *proc) Pid() int { return p.cmd.Process.Pid }

func (p *proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to timeout, then kills the group.
func (p *proc) Stop(timeout time.Duration) {
	if p == nil || p.Exited() {
		return
	}
	if p.stdin != nil {
		_ = p.stdin.Close()
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

func (p *proc) tail() string {
	s := p.out.String()
	if len(s) > 4000 {
		s = "…" + s[len(s)-4000:]
	}
	return s
}

// startChild runs `self argv…` and waits for its "READY addr" line.
func startChild(self, name string, argv ...string) (*proc, error) {
	p := &proc{name: name, out: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(self, argv...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Stderr = p.out
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- a
			}
			_, _ = p.out.Write(append(sc.Bytes(), '\n'))
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.Addr = <-ready:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("%s exited early: %v\n%s", name, p.err, p.tail())
	case <-time.After(30 * time.Second):
		p.Stop(time.Second)
		return nil, fmt.Errorf("%s not ready after 30s\n%s", name, p.tail())
	}
}

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// vmcpProc is a running `vmcp serve`.
type vmcpProc struct {
	*proc
	Base    string // http://addr
	URL     string // …/mcp
	Dir     string
	ReadyIn time.Duration // from exec to /readyz 200
}

// startVMCP writes cfg into dir/vmcp.yaml and runs `vmcp serve` on a free
// port with its state file in dir, waiting for /readyz.
func startVMCP(bin, dir, cfg string, env ...string) (*vmcpProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "vmcp.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p := &proc{name: "vmcp", out: &lockedBuffer{}, exited: make(chan struct{}), Addr: addr}
		p.cmd = exec.Command(bin, "serve", "--config", cfgPath, "--listen", addr,
			"--state", filepath.Join(dir, "state.db"), "--log-level", "warn")
		p.cmd.Dir = dir
		if len(env) > 0 {
			p.cmd.Env = append(os.Environ(), env...)
		}
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		start := time.Now()
		if err := p.cmd.Start(); err != nil {
			return nil, err
		}
		go func() {
			p.err = p.cmd.Wait()
			close(p.exited)
		}()
		v := &vmcpProc{proc: p, Base: "http://" + addr, URL: "http://" + addr + "/mcp", Dir: dir}
		if err := v.waitReady(60 * time.Second); err != nil {
			p.Stop(5 * time.Second)
			lastErr = fmt.Errorf("vmcp serve: %v\n%s", err, p.tail())
			if strings.Contains(p.out.String(), "address already in use") {
				continue
			}
			return nil, lastErr
		}
		v.ReadyIn = time.Since(start)
		return v, nil
	}
	return nil, lastErr
}

func (v *vmcpProc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if v.Exited() {
			return fmt.Errorf("exited early: %v", v.err)
		}
		resp, err := hc.Get(v.Base + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s", timeout)
}

// clockTick is the kernel's USER_HZ (100 on Linux).
const clockTick = 100

// cpuTime is the process's user+system CPU time so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" that ends the command name: state is field 3,
	// utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// procStatus returns a numeric field of /proc/pid/status (kB for Vm*).
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// machineTicks reads the machine's line of /proc/stat: the ticks all CPUs
// spent in every state, and those the hypervisor ran another guest on
// them instead of this one (steal).
func machineTicks() (steal, total int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	// cpu user nice system idle iowait irq softirq steal guest guest_nice:
	// guest time is counted in user as well.
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, s := range f[1:9] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: field %d: %w", i+1, err)
		}
		total += v
		if i == 7 {
			steal = v
		}
	}
	return steal, total, nil
}

// stealMeter measures the share of the machine's CPU time stolen by the
// hypervisor over a window: on a shared VM, what moves a cell's
// throughput that no process here spent.
type stealMeter struct {
	steal, total int64
	ok           bool
}

func startSteal() stealMeter {
	s, t, err := machineTicks()
	return stealMeter{s, t, err == nil}
}

// frac is the stolen share since start, 0 to 1; ok is false when
// /proc/stat could not be read or no tick passed.
func (m stealMeter) frac() (float64, bool) {
	s, t, err := machineTicks()
	if !m.ok || err != nil || t <= m.total {
		return 0, false
	}
	return float64(s-m.steal) / float64(t-m.total), true
}
