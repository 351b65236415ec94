package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmcp-dev/vmcp/state"
)

// memSide is one process's readings for the memory scenario.
type memSide struct {
	rss0, rss1, rss2 int64 // KiB: start, after idle sessions, after waiting runs
	thr0, thr1, thr2 int64 // OS threads
	m0, m1, m2       memReading
	gateway          bool
}

// memory is scenario 5: RSS (vmcp serve) and heap / goroutines (the same
// gateway in the bench's `gateway` child) per idle session and per waiting
// run; then restart-to-ready of vmcp serve with the waiting runs stored.
func (b *bench) memory(ctx context.Context) error {
	const sc = "memory"
	nSessions := 1000
	nRuns := b.n(300, 10_000)
	cfg := pauseConfig(b.echoURL(0))

	measure := func(v *vmcpProc, gw bool) (*memSide, error) {
		m := &memSide{gateway: gw}
		read := func(rss, thr *int64, mr *memReading) error {
			time.Sleep(500 * time.Millisecond) // let the last requests finish
			*rss, _ = procStatus(v.Pid(), "VmRSS")
			*thr, _ = procStatus(v.Pid(), "Threads")
			if gw {
				r, err := readMem(v.Base)
				if err != nil {
					return err
				}
				*mr = r
				// The forced GC returns memory lazily; read RSS again.
				*rss, _ = procStatus(v.Pid(), "VmRSS")
			}
			return nil
		}
		if err := read(&m.rss0, &m.thr0, &m.m0); err != nil {
			return nil, err
		}
		if err := openIdleSessions(ctx, v.URL, nSessions); err != nil {
			return nil, fmt.Errorf("idle sessions: %w", err)
		}
		if err := read(&m.rss1, &m.thr1, &m.m1); err != nil {
			return nil, err
		}
		if err := pauseRuns(ctx, v.URL, nRuns); err != nil {
			return nil, fmt.Errorf("waiting runs: %w", err)
		}
		if err := read(&m.rss2, &m.thr2, &m.m2); err != nil {
			return nil, err
		}
		return m, nil
	}

	v, err := b.vmcp("memory", cfg)
	if err != nil {
		return err
	}
	freshReady := v.ReadyIn
	real, err := measure(v, false)
	if err != nil {
		b.stopVMCP(v)
		return err
	}
	b.stopVMCP(v)
	// Restart on the same state file: nRuns waiting runs stored.
	restart := func(what string, k int) (Cell, error) {
		var ds []time.Duration
		for range k {
			v, err := b.vmcp("memory", cfg)
			if err != nil {
				return Cell{}, fmt.Errorf("restart with %s: %w", what, err)
			}
			ds = append(ds, v.ReadyIn)
			b.stopVMCP(v)
		}
		return b.rep.addCell(cell(sc, "restart to ready with "+what, map[string]any{"stored": what}, timeSorted(ds))), nil
	}
	rc, err := restart(fmt.Sprintf("%d stored waiting runs", nRuns), b.n(1, 3))
	if err != nil {
		return err
	}
	// Then many more, written straight into the file with the state
	// package (copies of a real waiting run: Create + Pause, 64 at once).
	bigN := b.n(10_000, 100_000)
	statePath := filepath.Join(b.work, "memory", "state.db")
	t0 := time.Now()
	if err := addStoredRuns(ctx, statePath, bigN-nRuns); err != nil {
		return fmt.Errorf("storing %d runs: %w", bigN, err)
	}
	fillTook := time.Since(t0)
	fileMiB := 0.0
	if st, err := os.Stat(statePath); err == nil {
		fileMiB = float64(st.Size()) / (1 << 20)
	}
	rcBig, err := restart(fmt.Sprintf("%d stored waiting runs", bigN), b.n(1, 2))
	if err != nil {
		return err
	}

	gv, err := b.gatewayChild("memory-gateway", cfg)
	if err != nil {
		return err
	}
	gw, err := measure(gv, true)
	gv.Stop(10 * time.Second)
	if err != nil {
		return err
	}

	perKiB := func(a, z int64, n int) float64 { return float64(z-a) / float64(n) }
	perB := func(a, z uint64, n int) float64 { return (float64(z) - float64(a)) / float64(n) }
	rssSess := perKiB(real.rss0, real.rss1, nSessions)
	rssRun := perKiB(real.rss1, real.rss2, nRuns)
	heapSess := perB(gw.m0.HeapAlloc, gw.m1.HeapAlloc, nSessions)
	heapRun := perB(gw.m1.HeapAlloc, gw.m2.HeapAlloc, nRuns)
	grSess := float64(gw.m1.Goroutines-gw.m0.Goroutines) / float64(nSessions)
	grRun := float64(gw.m2.Goroutines-gw.m1.Goroutines) / float64(nRuns)

	extra := map[string]float64{
		"rss_kib_per_idle_session": rssSess, "rss_kib_per_waiting_run": rssRun,
		"heap_b_per_idle_session": heapSess, "heap_b_per_waiting_run": heapRun,
		"goroutines_per_idle_session": grSess, "goroutines_per_waiting_run": grRun,
		"sessions": float64(nSessions), "waiting_runs": float64(nRuns),
	}
	b.rep.addCell(Cell{Scenario: sc, Name: "memory per idle session and per waiting run", Valid: true, Extra: extra})

	rows := [][]string{
		{"vmcp serve RSS", fmt.Sprintf("%.1f MiB", float64(real.rss0)/1024), fmt.Sprintf("%.1f MiB", float64(real.rss1)/1024), fmt.Sprintf("%.1f MiB", float64(real.rss2)/1024),
			fmt.Sprintf("**%.1f KiB**", rssSess), fmt.Sprintf("%.2f KiB", rssRun)},
		{"vmcp serve OS threads", fmt.Sprint(real.thr0), fmt.Sprint(real.thr1), fmt.Sprint(real.thr2), "", ""},
		{"gateway child RSS", fmt.Sprintf("%.1f MiB", float64(gw.rss0)/1024), fmt.Sprintf("%.1f MiB", float64(gw.rss1)/1024), fmt.Sprintf("%.1f MiB", float64(gw.rss2)/1024),
			fmt.Sprintf("%.1f KiB", perKiB(gw.rss0, gw.rss1, nSessions)), fmt.Sprintf("%.2f KiB", perKiB(gw.rss1, gw.rss2, nRuns))},
		{"gateway child live heap (after GC)", fmt.Sprintf("%.1f MiB", float64(gw.m0.HeapAlloc)/(1<<20)), fmt.Sprintf("%.1f MiB", float64(gw.m1.HeapAlloc)/(1<<20)), fmt.Sprintf("%.1f MiB", float64(gw.m2.HeapAlloc)/(1<<20)),
			fmt.Sprintf("%.0f B", heapSess), fmt.Sprintf("**%.0f B**", heapRun)},
		{"gateway child goroutines", fmt.Sprint(gw.m0.Goroutines), fmt.Sprint(gw.m1.Goroutines), fmt.Sprint(gw.m2.Goroutines), fmt.Sprintf("%.2f", grSess), fmt.Sprintf("**%.3f**", grRun)},
	}
	body := mdTable([]string{"", "start", fmt.Sprintf("+ %d idle sessions", nSessions), fmt.Sprintf("+ %d waiting runs", nRuns), "per idle session", "per waiting run"}, rows)
	pc := func(c Cell) string {
		if !c.Valid {
			return "INVALID: " + c.Error
		}
		return fmtUS(c.P50US)
	}
	body += fmt.Sprintf("\nIdle session: a 2025-11-25 session (initialize + notifications/initialized over plain POSTs), then the client's connections are closed; nothing else. "+
		"Waiting run: a call of the composite `pause` by a 2025-11-25 client that did not declare elicitation, so vmcp stores the run as waiting and returns a paused result. "+
		"RSS is from /proc of `vmcp serve` (no forced GC: it includes garbage not yet collected, so it is an upper bound); the live heap and goroutines come from the same gateway code "+
		"run as the bench's `gateway` child (the vmcp binary exposes no heap or goroutine count), read after two forced GCs.\n\n"+
		"**Restart to ready** (exec of `vmcp serve` until /readyz answers 200): on a fresh state file %s; on the file holding those %d waiting runs %s; "+
		"on the file holding **%d waiting runs**: **%s** (%.0f MiB file; the extra runs are copies of a real waiting run written with the state package's Create + Pause, 64 at a time, in %s).\n",
		freshReady.Round(time.Millisecond), nRuns, pc(rc), bigN, pc(rcBig), fileMiB, fillTook.Round(100*time.Millisecond))
	b.rep.addSection(sc, "Scenario 5: memory per idle session and per waiting run; restart", body)

	b.rep.target("5 memory", "RSS per idle session (1,000 sessions)", "≤ 16 KiB", fmt.Sprintf("%.1f KiB (heap %.0f B, %.2f goroutines)", rssSess, heapSess, grSess), ptr(rssSess <= 16), "")
	b.rep.target("5 memory", fmt.Sprintf("goroutines per waiting run (%d runs)", nRuns), "zero", fmt.Sprintf("%.3f", grRun), ptr(grRun < 0.01), "")
	b.rep.target("5 memory", fmt.Sprintf("heap per waiting run (%d runs)", nRuns), "< 1 KiB", fmt.Sprintf("%.0f B", heapRun), ptr(heapRun < 1024), "")
	if rcBig.Valid {
		var met *bool
		note := ""
		if bigN >= 100_000 {
			met = ptr(rcBig.P50US <= 1e6)
		} else {
			note = fmt.Sprintf("quick mode stores only %d runs", bigN)
		}
		b.rep.target("4 pause", "restart to ready with stored runs", "ready within 1 s with 100,000 stored runs",
			fmt.Sprintf("%s with %d runs (%s with %d)", fmtUS(rcBig.P50US), bigN, pc(rc), nRuns), met, note)
	}
	return nil
}

func timeSorted(d []time.Duration) load {
	out := slices.Clone(d)
	slices.Sort(out)
	return load{Lat: out}
}

// openIdleSessions opens n 2025-11-25 sessions and drops their
// connections.
func openIdleSessions(ctx context.Context, url string, n int) error {
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()
	return parallel(n, 8, func(int) error {
		_, err := rawDial(ctx, url, hc)
		return err
	})
}

// pauseRuns leaves n runs waiting: `pause` called by a client without
// elicitation gets a paused result.
func pauseRuns(ctx context.Context, url string, n int) error {
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()
	const conc = 16
	ss := make([]*rawSession, conc)
	for i := range ss {
		s, err := rawDial(ctx, url, hc)
		if err != nil {
			return err
		}
		ss[i] = s
	}
	defer func() {
		for _, s := range ss {
			s.Close()
		}
	}()
	return parallel(n, conc, func(i int) error {
		s := ss[i%conc]
		res, err := s.call(ctx, "tools/call", map[string]any{"name": "pause", "arguments": map[string]any{"tag": fmt.Sprint("w-", i)}})
		if err != nil {
			return err
		}
		var r struct {
			Meta    map[string]json.RawMessage `json:"_meta"`
			IsError bool                       `json:"isError"`
		}
		if err := json.Unmarshal(res, &r); err != nil {
			return err
		}
		if r.IsError || r.Meta["vmcp/run"] == nil || !strings.Contains(string(r.Meta["vmcp/run"]), "ask") {
			return fmt.Errorf("not a paused result: %s", truncate(string(res), 300))
		}
		return nil
	})
}

// parallel runs f(0..n-1) on conc workers; the first error wins.
func parallel(n, conc int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for range conc {
		wg.Go(func() {
			for {
				mu.Lock()
				if first != nil || next >= n {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// gatewayChild runs the gateway in the bench's own `gateway` child (with
// pprof and a memory endpoint) and waits for /readyz.
func (b *bench) gatewayChild(name, cfg string) (*vmcpProc, error) {
	dir := filepath.Join(b.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "vmcp.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	start := time.Now()
	p, err := b.child("gateway", "gateway", "--config", cfgPath, "--state", filepath.Join(dir, "state.db"))
	if err != nil {
		return nil, err
	}
	v := &vmcpProc{proc: p, Base: "http://" + p.Addr, URL: "http://" + p.Addr + "/mcp", Dir: dir}
	if err := v.waitReady(60 * time.Second); err != nil {
		p.Stop(5 * time.Second)
		return nil, fmt.Errorf("gateway child: %v\n%s", err, p.tail())
	}
	v.ReadyIn = time.Since(start)
	return v, nil
}

// addStoredRuns adds n waiting runs to a stopped vmcp's state file:
// copies of one of its waiting runs.
func addStoredRuns(ctx context.Context, path string, n int) error {
	s, err := state.Open(path, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	list, _, err := s.List(ctx, state.Filter{Status: state.StatusWaiting, Limit: 1})
	if err != nil {
		return err
	}
	if len(list) == 0 {
		return errors.New("no waiting run to copy")
	}
	tmpl, err := s.Get(ctx, list[0].ID)
	if err != nil {
		return err
	}
	if tmpl.Pending == nil {
		return errors.New("the waiting run has no question")
	}
	return parallel(n, 64, func(int) error {
		r := &state.Run{ID: state.NewRunID(), Workflow: tmpl.Workflow, Owner: tmpl.Owner, Definition: tmpl.Definition,
			DefinitionName: tmpl.DefinitionName, Params: tmpl.Params, Checkpoint: tmpl.Checkpoint}
		if err := s.Create(ctx, r); err != nil {
			return err
		}
		q := *tmpl.Pending
		q.Seq = 0
		_, err := s.Pause(ctx, r.ID, tmpl.Checkpoint, q)
		return err
	})
}
