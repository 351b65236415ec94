package main

// What the echo backend's trace (GET /trace: every echo call with a
// service time, as the backend saw it) tells about composite cells: how
// late the backend's own wait was, and the timeline of a fan-out.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// compositePreciseSleep reports whether scenario 3's echo backend waits
// its service time with nanosleep(2) (BENCH_PRECISE_SLEEP=1) rather than
// the Go timer (the default). Measured: both end late by about the same
// at the median on this VM (wake-up latency), alike for a direct call, a
// direct chain and a chain through vmcp; nanosleep costs the backend more
// CPU (the runtime's sysmon polls while a thread blocks), so the Go timer
// stays the default and the lateness is reported instead.
func compositePreciseSleep() bool { return os.Getenv("BENCH_PRECISE_SLEEP") == "1" }

func sleepNote() string {
	if compositePreciseSleep() {
		return "The scenario's echo backend waits its service time with nanosleep(2) (BENCH_PRECISE_SLEEP=1: `echo-backend --precise-sleep`), for the direct calls and vmcp's alike. "
	}
	return "The scenario's echo backend waits its service time with the Go timer, for the direct calls and vmcp's alike (the runtime's netpoller waits in whole, truncated milliseconds, so an idle process's timer fires late; `BENCH_PRECISE_SLEEP=1` waits with nanosleep(2) instead: no better at the median on this VM, and it costs the backend CPU). "
}

// echoTrace reads (and clears) the echo backend's trace.
func echoTrace(addr string) ([]callTrace, error) {
	resp, err := http.Get("http://" + addr + "/trace")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var tr []callTrace
	return tr, json.NewDecoder(resp.Body).Decode(&tr)
}

// late is how much later than asked the backend's waits ended.
type late struct {
	n        int
	p50, p99 float64 // µs
}

func (l late) String() string {
	if l.n == 0 {
		return "—"
	}
	return fmt.Sprintf("%s (p99 %s)", fmtUS(l.p50), fmtUS(l.p99))
}

// lateness reads the trace since the last read: each wait's lateness.
func lateness(addr string) late {
	tr, err := echoTrace(addr)
	if err != nil || len(tr) == 0 {
		return late{}
	}
	d := make([]time.Duration, len(tr))
	for i, t := range tr {
		d[i] = time.Duration(t.Slept - t.Want)
	}
	slices.Sort(d)
	return late{n: len(d), p50: us(pct(d, 0.5)), p99: us(pct(d, 0.99))}
}

// fanTimeline groups a fan-out cell's trace by call (items are named
// f-<call>-<item>; spans holds each call's client start and end, keyed
// "f-<call>-") and returns the median call's timeline, in µs, as cell
// extras (tl_*), for the calls whose n items were all traced.
func fanTimeline(tr []callTrace, spans map[string][2]int64, n int) map[string]float64 {
	by := map[string][]callTrace{}
	for _, t := range tr {
		i := strings.LastIndexByte(t.Msg, '-')
		if i < 0 {
			continue
		}
		by[t.Msg[:i+1]] = append(by[t.Msg[:i+1]], t)
	}
	var first, disp, lateMax, tail, total []float64
	for k, ts := range by {
		sp, ok := spans[k]
		if !ok || len(ts) != n {
			continue
		}
		minIn, maxIn, maxOut, maxLate := ts[0].In, ts[0].In, ts[0].Out, int64(0)
		for _, t := range ts {
			minIn, maxIn, maxOut = min(minIn, t.In), max(maxIn, t.In), max(maxOut, t.Out)
			maxLate = max(maxLate, t.Slept-t.Want)
		}
		first = append(first, float64(minIn-sp[0])/1e3)
		disp = append(disp, float64(maxIn-minIn)/1e3)
		lateMax = append(lateMax, float64(maxLate)/1e3)
		tail = append(tail, float64(sp[1]-maxOut)/1e3)
		total = append(total, float64(sp[1]-sp[0])/1e3)
	}
	if len(first) == 0 {
		return nil
	}
	med := func(v []float64) float64 { m, _, _ := spread(v); return m }
	return map[string]float64{"tl_calls": float64(len(first)), "tl_first_in_us": med(first), "tl_dispatch_spread_us": med(disp),
		"tl_late_max_us": med(lateMax), "tl_tail_us": med(tail), "tl_total_us": med(total)}
}

// timelineText is a fan-out cell's timeline for the tables.
func timelineText(c Cell) string {
	x := c.Extra
	return fmt.Sprintf("start → first item %s; dispatch spread %s; wait late by %s (latest); last response → client %s; CPU per call: vmcp %s, backend %s",
		fmtUS(x["tl_first_in_us"]), fmtUS(x["tl_dispatch_spread_us"]), fmtUS(x["tl_late_max_us"]), fmtUS(x["tl_tail_us"]),
		fmtUS(x["vmcp_cpu_us_per_call"]), fmtUS(x["backend_cpu_us_per_call"]))
}

// preciseCPU measures processes' CPU time from the scheduler's nanosecond
// accounting (/proc/<pid>/task/*/schedstat), for windows where the 10 ms
// ticks of /proc/<pid>/stat are too coarse (an idle process).
type preciseCPU struct {
	pids []int
	t0   []time.Duration
	r0   []int64
	w0   time.Time
}

// self stands for the bench process (the client) in startPreciseCPU.
const self = 0

func startPreciseCPU(pids ...int) *preciseCPU {
	m := &preciseCPU{pids: pids, w0: time.Now()}
	for i, p := range pids {
		if p == self {
			m.pids[i] = os.Getpid()
		}
		t, r := schedStat(m.pids[i])
		m.t0, m.r0 = append(m.t0, t), append(m.r0, r)
	}
	return m
}

// perOp is each process's CPU time per operation, in µs.
func (m *preciseCPU) perOp(ops int) []float64 {
	out := make([]float64, len(m.pids))
	for i, p := range m.pids {
		if ops > 0 {
			t, _ := schedStat(p)
			out[i] = us(t-m.t0[i]) / float64(ops)
		}
	}
	return out
}

// runsPerOp is each process's number of times a thread was put on a CPU
// (schedstat's run count: wake-ups, preemptions) per operation.
func (m *preciseCPU) runsPerOp(ops int) []float64 {
	out := make([]float64, len(m.pids))
	for i, p := range m.pids {
		if ops > 0 {
			_, r := schedStat(p)
			out[i] = float64(r-m.r0[i]) / float64(ops)
		}
	}
	return out
}

// perSecond is each process's CPU time per second of wall time, in µs.
func (m *preciseCPU) perSecond() []float64 {
	w := time.Since(m.w0).Seconds()
	out := make([]float64, len(m.pids))
	for i, p := range m.pids {
		t, _ := schedStat(p)
		out[i] = us(t-m.t0[i]) / w
	}
	return out
}

// schedStat sums the threads' on-CPU time and run counts; the time falls
// back to /proc/<pid>/stat when schedstat is unavailable. (A thread that
// exited takes its numbers with it; the Go runtime keeps its threads.)
func schedStat(pid int) (time.Duration, int64) {
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	var runs int64
	ok := false
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		sum += time.Duration(ns)
		if len(f) >= 3 {
			n, _ := strconv.ParseInt(f[2], 10, 64)
			runs += n
		}
		ok = true
	}
	if !ok {
		t, _ := cpuTime(pid)
		return t, 0
	}
	return sum, runs
}

// wireResponse is one tools/call response as it came over the wire.
type wireResponse struct {
	status   int
	chunked  bool
	length   int64
	headers  []string // names, sorted, except Date
	ctype    string
	body     []byte
	readSize int // bytes of body read
}

// wireCall sends one echo tools/call with a fixed id on a raw session and
// returns the response's framing, headers and body.
func wireCall(ctx context.Context, url, tool string) (wireResponse, error) {
	var w wireResponse
	s, err := rawDial(ctx, url, nil)
	if err != nil {
		return w, err
	}
	defer s.Close()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":%q,"arguments":{"msg":"wire","sleep_ms":0}}}`, tool)
	req, err := s.request(ctx, []byte(body))
	if err != nil {
		return w, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return w, err
	}
	defer resp.Body.Close()
	w.status, w.length, w.ctype = resp.StatusCode, resp.ContentLength, resp.Header.Get("Content-Type")
	w.chunked = slices.Contains(resp.TransferEncoding, "chunked")
	for k := range resp.Header {
		if k != "Date" {
			w.headers = append(w.headers, k)
		}
	}
	slices.Sort(w.headers)
	w.body, err = io.ReadAll(resp.Body)
	return w, err
}

// wireCompare is scenario 1's check that vmcp answers a tools/call with
// the same framing and bytes as the backend does directly (a difference
// here would cost the client CPU per call).
func wireCompare(ctx context.Context, directURL, vmcpURL string) string {
	d, err := wireCall(ctx, directURL, "echo")
	if err != nil {
		return "direct: " + err.Error()
	}
	v, err := wireCall(ctx, vmcpURL, "echo_echo")
	if err != nil {
		return "vmcp: " + err.Error()
	}
	frame := func(w wireResponse) string {
		f := fmt.Sprintf("HTTP %d, %s, ", w.status, w.ctype)
		if w.chunked {
			return f + "chunked"
		}
		return f + fmt.Sprintf("Content-Length %d", w.length)
	}
	same := frame(d) == frame(v) && slices.Equal(d.headers, v.headers) && bytes.Equal(d.body, v.body)
	verdict := "identical"
	if !same {
		verdict = "**different**"
	}
	return fmt.Sprintf("%s: direct `%s`, headers %s, body `%s`; through vmcp `%s`, headers %s, body `%s`",
		verdict, frame(d), strings.Join(d.headers, ", "), strings.TrimSpace(string(d.body)), frame(v), strings.Join(v.headers, ", "), strings.TrimSpace(string(v.body)))
}

// wireVerdict is the first word of wireCompare's answer.
func wireVerdict(w string) string {
	if i := strings.IndexByte(w, ':'); i > 0 {
		return strings.Trim(w[:i], "*")
	}
	return w
}
