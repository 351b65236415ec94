package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// compositeConfig is a vmcp config with chain_N composites (N echo steps,
// each echoing the previous step's text) and one fan-out composite (a
// for_each over the items, up to 32 at once).
func compositeConfig(echoURL string, chains []int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "name: bench-composite\nbackends:\n  - {name: echo, url: %q}\ncomposite_tools:\n", echoURL)
	for _, n := range chains {
		fmt.Fprintf(&sb, `  - name: chain_%d
    description: %d echo steps in a chain.
    parameters:
      type: object
      properties: {msg: {type: string}, sleep_ms: {type: integer}}
      required: [msg, sleep_ms]
    steps:
`, n, n)
		for i := range n {
			msg := "{{ params.msg }}"
			if i > 0 {
				msg = fmt.Sprintf("{{ steps.s%d.output.text }}", i-1)
			}
			fmt.Fprintf(&sb, "      - {id: s%d, tool: echo.echo, arguments: {msg: %q, sleep_ms: \"{{ params.sleep_ms }}\"}}\n", i, msg)
		}
		fmt.Fprintf(&sb, "    output: {msg: \"{{ steps.s%d.output.text }}\"}\n", n-1)
	}
	sb.WriteString(`  - name: fan
    description: One echo per item, up to 32 at once.
    max_parallel: 32
    parameters:
      type: object
      properties: {items: {type: array, items: {type: string}}, sleep_ms: {type: integer}}
      required: [items, sleep_ms]
    steps:
      - id: f
        tool: echo.echo
        for_each: "{{ params.items }}"
        max_parallel: 32
        arguments: {msg: "{{ item }}", sleep_ms: "{{ params.sleep_ms }}"}
    output: {msgs: "{{ map(steps.f.output, #.text) }}"}
`)
	return sb.String()
}

// composite is scenario 3: chains (per-step overhead from a linear fit)
// and fan-outs (against one call, the ideal) at several backend service
// times.
func (b *bench) composite(ctx context.Context) error {
	const sc = "composite"
	chains := []int{1, 10, 50}
	if !b.quick {
		chains = []int{1, 10, 25, 50}
	}
	fans := []int{1, 8, 32}
	sleeps := []int{0, 1, 10}
	// The scenario's own echo backend, whose trace (GET /trace) times each
	// call's wait; BENCH_PRECISE_SLEEP=1 makes it wait with nanosleep(2)
	// instead of the Go timer (compositePreciseSleep).
	eargs := []string{"echo-backend", "--endpoints", "1", "--tools", "2"}
	if compositePreciseSleep() {
		eargs = append(eargs, "--precise-sleep")
	}
	echo, err := b.child("echo-composite", eargs...)
	if err != nil {
		return err
	}
	echoURL := fmt.Sprintf("http://%s/mcp/0", echo.Addr)
	v, err := b.vmcp("composite", compositeConfig(echoURL, chains))
	if err != nil {
		return err
	}
	defer b.stopVMCP(v)
	s, err := dial(ctx, v.URL, eraLegacy)
	if err != nil {
		return err
	}
	defer s.Close()
	ds, err := dial(ctx, echoURL, eraLegacy)
	if err != nil {
		return err
	}
	defer ds.Close()
	// Hypothesis: vmcp's CPU per step at 10 ms includes the runtime's own
	// work over the longer wall time. Its CPU while idle, for scale.
	idle := b.dur(time.Second, 3*time.Second)
	icpu := startPreciseCPU(v.Pid())
	time.Sleep(idle)
	idleCPU := icpu.perSecond()[0]

	budget := b.dur(250*time.Millisecond, 1500*time.Millisecond)
	warm := b.n(1, 2)
	seq := 0
	// measure is one round at one service time.
	measure := func(sl int, suffix string) *fit {
		f := &fit{sleep: sl, chain: map[int]Cell{}, dchain: map[int]Cell{}, fan: map[int]Cell{}, vmcpCPUPerCall: map[int]float64{}}
		params := map[string]any{"sleep_ms": sl}
		_, _ = echoTrace(echo.Addr) // start clean
		f.direct = b.rep.addCell(cell(sc, fmt.Sprintf("direct echo, sleep %d ms%s", sl, suffix), params, runLoad(ctx, 1, warm, budget, 5, 0, func(ctx context.Context, _ int) error {
			seq++
			return callEcho(ctx, ds.Client, "echo", fmt.Sprint("d-", seq), sl)
		})))
		f.late.direct = lateness(echo.Addr)
		// A direct chain: the bench client makes the same N sequential
		// calls itself, so that the fit compares like with like (N calls
		// through vmcp against N calls without it).
		for _, n := range chains {
			cpu := startPreciseCPU(echo.Pid(), self)
			l := runLoad(ctx, 1, warm, budget, 3, 0, func(ctx context.Context, _ int) error {
				seq++
				for i := range n {
					if err := callEcho(ctx, ds.Client, "echo", fmt.Sprintf("dc-%d-%d", seq, i), sl); err != nil {
						return err
					}
				}
				return nil
			})
			c := cell(sc, fmt.Sprintf("direct chain of %d, sleep %d ms%s", n, sl, suffix), map[string]any{"sleep_ms": sl, "steps": n}, l)
			pc, pr := cpu.perOp(l.N()+warm), cpu.runsPerOp(l.N()+warm)
			c.Extra = map[string]float64{"backend_cpu_us_per_call": pc[0], "client_cpu_us_per_call": pc[1], "backend_runs_per_call": pr[0], "client_runs_per_call": pr[1]}
			f.dchain[n] = b.rep.addCell(c)
		}
		f.late.dchain = lateness(echo.Addr)
		for _, n := range chains {
			sa, _ := echoStats(echo.Addr)
			cpu := startPreciseCPU(v.Pid(), echo.Pid(), self)
			l := runLoad(ctx, 1, warm, budget, 3, 0, func(ctx context.Context, _ int) error {
				seq++
				msg := fmt.Sprint("c-", seq)
				res, err := callTool(ctx, s, fmt.Sprint("chain_", n), map[string]any{"msg": msg, "sleep_ms": sl})
				if err != nil {
					return err
				}
				return checkStructured(res, map[string]any{"msg": msg})
			})
			c := cell(sc, fmt.Sprintf("chain of %d, sleep %d ms%s", n, sl, suffix), map[string]any{"sleep_ms": sl, "steps": n}, l)
			pc, pr := cpu.perOp(l.N()+warm), cpu.runsPerOp(l.N()+warm)
			c.Extra = map[string]float64{"vmcp_cpu_us_per_call": pc[0], "backend_cpu_us_per_call": pc[1], "client_cpu_us_per_call": pc[2],
				"vmcp_runs_per_call": pr[0], "backend_runs_per_call": pr[1], "client_runs_per_call": pr[2]}
			if sb, err := echoStats(echo.Addr); err == nil {
				c.Extra["backend_conns"] = float64(sb["conns"] - sa["conns"])
			}
			f.chain[n] = b.rep.addCell(c)
		}
		f.late.chain = lateness(echo.Addr)
		for _, n := range fans {
			sa, _ := echoStats(echo.Addr)
			cpu := startPreciseCPU(v.Pid(), echo.Pid())
			_, _ = echoTrace(echo.Addr)
			var tmu sync.Mutex
			spans := map[string][2]int64{} // timed call → client's start and end (Unix ns)
			calls := 0
			l := runLoad(ctx, 1, warm, budget, 3, 0, func(ctx context.Context, _ int) error {
				seq++
				items := make([]any, n)
				for i := range items {
					items[i] = fmt.Sprintf("f-%d-%d", seq, i)
				}
				t0 := time.Now().UnixNano()
				res, err := callTool(ctx, s, "fan", map[string]any{"items": items, "sleep_ms": sl})
				t1 := time.Now().UnixNano()
				if err != nil {
					return err
				}
				tmu.Lock()
				if calls++; calls > warm { // the warm-up calls are not timed
					spans[fmt.Sprint("f-", seq, "-")] = [2]int64{t0, t1}
				}
				tmu.Unlock()
				return checkStructured(res, map[string]any{"msgs": items})
			})
			c := cell(sc, fmt.Sprintf("fan-out of %d, sleep %d ms%s", n, sl, suffix), map[string]any{"sleep_ms": sl, "fan": n}, l)
			pc := cpu.perOp(l.N() + warm)
			c.Extra = map[string]float64{"vmcp_cpu_us_per_call": pc[0], "backend_cpu_us_per_call": pc[1]}
			if sb, err := echoStats(echo.Addr); err == nil && l.N()+warm > 0 {
				c.Extra["backend_conns_per_call"] = float64(sb["conns"]-sa["conns"]) / float64(l.N()+warm)
			}
			if tr, err := echoTrace(echo.Addr); err == nil {
				maps.Copy(c.Extra, fanTimeline(tr, spans, n))
			}
			f.fan[n] = b.rep.addCell(c)
		}
		// Fit p50 against the number of steps.
		var xs, ys []float64
		ok := f.direct.Valid
		for _, n := range chains {
			c := f.chain[n]
			ok = ok && c.Valid
			xs, ys = append(xs, float64(n)), append(ys, c.P50US)
		}
		var dys []float64
		for _, n := range chains {
			c := f.dchain[n]
			ok = ok && c.Valid
			dys = append(dys, c.P50US)
		}
		if ok {
			f.icpt, f.slope = linearFit(xs, ys)
			f.dicpt, f.dslope = linearFit(xs, dys)
			f.perStep = f.slope - f.dslope
			f.perStepVsCall = f.slope - f.direct.P50US
			f.fitOK = true
			var cx []float64
			for _, n := range chains {
				cx = append(cx, float64(n))
			}
			perStep := func(m map[int]Cell, key string) float64 {
				var ys []float64
				for _, n := range chains {
					ys = append(ys, m[n].Extra[key])
				}
				_, b := linearFit(cx, ys)
				return b
			}
			f.cpuPerStepUS = perStep(f.chain, "vmcp_cpu_us_per_call")
			f.backendCPUPerStepUS = perStep(f.chain, "backend_cpu_us_per_call")
			f.vmcpRunsPerStep = perStep(f.chain, "vmcp_runs_per_call")
			f.backendRunsPerStep = perStep(f.chain, "backend_runs_per_call")
			f.dBackendCPUPerStepUS = perStep(f.dchain, "backend_cpu_us_per_call")
			f.dBackendRunsPerStep = perStep(f.dchain, "backend_runs_per_call")
			// The idle runtime's share of that: vmcp's CPU while idle,
			// over one step's wall time.
			f.idleCPUPerStepUS = idleCPU * f.slope / 1e6
			f.flatOK = true
			for i := 1; i < len(chains); i++ {
				a, z := f.chain[chains[i-1]], f.chain[chains[i]]
				da, dz := f.dchain[chains[i-1]], f.dchain[chains[i]]
				dn := float64(chains[i] - chains[i-1])
				m := (z.P50US-a.P50US)/dn - (dz.P50US-da.P50US)/dn
				f.marginal = append(f.marginal, fmt.Sprintf("%d→%d: %s", chains[i-1], chains[i], fmtUS(m)))
			}
		}
		return f
	}
	// The targets' service times (0 and 10 ms) run in rounds; the tables
	// show each service time's median round (by per-step overhead) and the
	// targets give the spread.
	rounds := b.n(2, 3)
	var fits []*fit
	roundsOf := map[int][]*fit{}
	for _, sl := range sleeps {
		n := 1
		if sl != 1 {
			n = rounds
		}
		for r := range n {
			suffix := ""
			if n > 1 {
				suffix = fmt.Sprintf(", round %d", r+1)
			}
			roundsOf[sl] = append(roundsOf[sl], measure(sl, suffix))
		}
		fits = append(fits, medianFit(roundsOf[sl], func(f *fit) float64 { return f.perStep }))
	}

	// Tables.
	var rows [][]string
	for _, f := range fits {
		row := []string{fmt.Sprintf("%d ms", f.sleep), fmtUS(f.direct.P50US)}
		for _, n := range chains {
			c, d := f.chain[n], f.dchain[n]
			if !c.Valid || !d.Valid {
				row = append(row, "INVALID: "+c.Error+d.Error)
				continue
			}
			row = append(row, fmtUS(c.P50US)+" / "+fmtUS(d.P50US))
		}
		if f.fitOK {
			row = append(row, fmtUS(f.slope)+" / "+fmtUS(f.dslope), "**"+fmtUS(f.perStep)+"**", fmtUS(f.icpt-f.dicpt), fmtUS(f.perStepVsCall), strings.Join(f.marginal, ", "),
				fmt.Sprintf("vmcp %s (idle runtime: %s; %.1f thread runs); backend %s (%.1f runs), direct chain's backend %s (%.1f runs)", fmtUS(f.cpuPerStepUS), fmtUS(f.idleCPUPerStepUS), f.vmcpRunsPerStep,
					fmtUS(f.backendCPUPerStepUS), f.backendRunsPerStep, fmtUS(f.dBackendCPUPerStepUS), f.dBackendRunsPerStep))
		} else {
			row = append(row, "", "", "", "", "", "")
		}
		if f.sleep > 0 {
			row = append(row, fmt.Sprintf("%s / %s / %s", f.late.direct, f.late.dchain, f.late.chain))
		} else {
			row = append(row, "—")
		}
		rows = append(rows, row)
	}
	hdr := []string{"backend service time", "direct echo p50"}
	for _, n := range chains {
		hdr = append(hdr, fmt.Sprintf("chain %d p50 (vmcp / direct)", n))
	}
	hdr = append(hdr, "fitted slope per step (vmcp / direct)", "per-step overhead (slope − direct slope)", "fixed cost of a composite (intercept − direct intercept)", "slope − one direct call (old definition)", "marginal overhead between points", "CPU per step (fit) and thread runs (times a thread was put on a CPU) per step",
		"backend's sleep late by, p50 (direct call / direct chain / vmcp chain)")
	body := "### Chains\n\n" + mdTable(hdr, rows)
	body += fmt.Sprintf("\nService times 0 and 10 ms ran %d rounds (every cell of the row measured again); the row is the round with the median per-step overhead, and each round's cells are in the JSON. Per-step overhead by round: %s.\n", rounds, roundList(roundsOf))
	body += "\nEach step is `echo.echo` with the previous step's text as its message (so the steps form a chain and every answer is checked end to end). " +
		"*Direct chain*: the bench client makes the same N sequential echo calls itself, on its own session to the same backend. Both are least-squares fits of the p50 against the length; " +
		"*per-step overhead* = slope through vmcp − slope of the direct chain: what a step through vmcp costs beyond the same call made directly, each side's per-call costs (client, HTTP, backend, the backend's timer) in both terms. " +
		"The old definition (slope − one direct call's p50) compares a chain with a lone call and is kept for comparison: at 10 ms it also picked up how differently the backend's timer and an idle machine's wake-ups behave in a lone call and in a chain. " +
		fmt.Sprintf("*Idle runtime*: vmcp's CPU while idle (%s per second, measured before the rounds) times one step's wall time: what the CPU per step contains that is not step work. ", fmtUS(idleCPU)) +
		sleepNote() + "*Sleep late by*: how much later than asked the backend's tool returned from its wait (p50 over the cells' calls, from the backend's trace). " +
		"Composites are durable runs: vmcp commits the run to bbolt when it is created (before its first step starts), around each step whose tool is neither read-only nor idempotent, and when it finishes " +
		fmt.Sprintf("(one bbolt commit on this machine: %s, one fsync: %s).\n\n", fmtD(b.floor.commit), fmtD(b.floor.fsync))

	rows = nil
	for _, f := range fits {
		row := []string{fmt.Sprintf("%d ms", f.sleep), fmtUS(f.direct.P50US)}
		for _, n := range fans {
			c := f.fan[n]
			if !c.Valid || !f.direct.Valid {
				row = append(row, "INVALID: "+c.Error)
				continue
			}
			row = append(row, fmt.Sprintf("%s (%.1f×; %.0f new conns)", fmtUS(c.P50US), c.P50US/f.direct.P50US, c.Extra["backend_conns_per_call"]))
		}
		if c := f.fan[32]; c.Valid && c.Extra["tl_calls"] > 0 {
			row = append(row, timelineText(c))
		} else {
			row = append(row, "—")
		}
		rows = append(rows, row)
	}
	hdr = []string{"backend service time", "ideal (one direct call)"}
	for _, n := range fans {
		hdr = append(hdr, fmt.Sprintf("fan-out %d p50 (× ideal)", n))
	}
	hdr = append(hdr, "fan-out 32 timeline (median call)")
	body += "### Fan-outs\n\n" + mdTable(hdr, rows)
	body += fmt.Sprintf("\nOne `for_each` step over N items with `max_parallel: 32` (workflow and step). Ideal = all N calls fully parallel = one direct call. "+
		"*New conns*: TCP connections the backend accepted per fan-out call (vmcp pools its backend connections). Client: one 2025-11-25 mcp-go session, one call at a time; each cell runs ≥ %s and ≥ 3 calls. "+
		"*Timeline*: from the backend's trace of every item (when its HTTP request reached the backend's handler, how long it slept, when its response was written) against the client's clock (same machine), the median over the cell's calls of: "+
		"client start → first item at the backend; first → last item at the backend (dispatch spread); the backend's service time late by (latest item); last response written → the client has vmcp's answer; and vmcp's and the backend's CPU per fan-out call.\n", budget)
	b.rep.addSection(sc, "Scenario 3: composite chains and fan-outs", body)

	var fit0 *fit
	for _, f := range fits {
		if f.sleep == 0 && f.fitOK {
			fit0 = f
		}
	}
	for _, f := range fits {
		if f.sleep != 0 && f.sleep != 10 {
			continue
		}
		rs := roundsOf[f.sleep]
		if f.fitOK {
			var per []float64
			for _, x := range rs {
				if x.fitOK {
					per = append(per, x.perStep)
				}
			}
			m, lo, hi := spread(per)
			b.rep.target("3 composite", fmt.Sprintf("per-step overhead (service time %d ms)", f.sleep), "≤ 25 µs, flat from 1 to 50 steps",
				fmt.Sprintf("%s, median of %d rounds (min–max %s–%s); median round: slope through vmcp %s − slope of the direct chain %s, marginal %s; old definition (slope − one direct call %s): %s",
					fmtUS(m), len(per), fmtUS(lo), fmtUS(hi), fmtUS(f.slope), fmtUS(f.dslope), strings.Join(f.marginal, ", "), fmtUS(f.direct.P50US), fmtUS(f.perStepVsCall)),
				ptr(m <= 25), stepNote(f, fit0, m <= 25, b.floor.commit))
		}
		if f.sleep == 10 {
			var p50s []float64
			for _, x := range rs {
				if c := x.fan[32]; c.Valid {
					p50s = append(p50s, c.P50US)
				}
			}
			if len(p50s) > 0 {
				m, lo, hi := spread(p50s)
				// The round whose fan-out is the median one.
				c := f.fan[32]
				for _, x := range rs {
					if x.fan[32].Valid && x.fan[32].P50US == m {
						c = x.fan[32]
					}
				}
				b.rep.target("3 composite", "fan-out of 32 with 10 ms steps", "≤ 12 ms",
					fmt.Sprintf("%s, median of %d rounds (min–max %s–%s; ideal %s)", fmtUS(m), len(p50s), fmtUS(lo), fmtUS(hi), fmtUS(f.direct.P50US)), ptr(m <= 12000),
					fanNote(c, f.direct.P50US, fit0, b.floor.commit))
			}
		}
	}
	return nil
}

// stepNote explains a per-step overhead target from its round's numbers
// (f) and the 0 ms round's (f0, for the CPU at 0 ms).
func stepNote(f, f0 *fit, met bool, commit time.Duration) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Compared like with like: the slope through vmcp minus the slope of the same N echo calls made directly by the client (the old definition, slope − one lone direct call, %s here, also counted how a chain of calls differs from a lone call on this machine, whoever makes them). ", fmtUS(f.perStepVsCall))
	fmt.Fprintf(&sb, "Not the store: the echo tool is read-only and idempotent, so steps are not committed one by one (the run's two commits, created and finished, %s each here, sit in the intercept). ", fmtD(commit))
	if f.sleep > 0 {
		conns := 0.0
		for _, c := range f.chain {
			conns += c.Extra["backend_conns"]
		}
		fmt.Fprintf(&sb, "Not new connections after idle gaps: the backend accepted %.0f new TCP connections during this round's chains through vmcp. ", conns)
		fmt.Fprintf(&sb, "Not the backend's timer: its %d ms wait ended late by %s in the direct call, %s in the direct chain, %s in vmcp's chain (p50, backend trace) — alike on both paths, so it cancels in the difference. ", f.sleep, f.late.direct, f.late.dchain, f.late.chain)
		if f0 != nil {
			fmt.Fprintf(&sb, "vmcp's CPU per step rises from %s at 0 ms to %s at %d ms, but not from background work over the longer wall time (vmcp's CPU while idle, times a step's wall time: %s) nor from anything vmcp does per step: the backend's CPU per call on the direct chain rises alike (%s → %s), with the times one of its threads is put on a CPU (%.1f → %.1f per call; vmcp %.1f → %.1f per step): after an idle gap every call wakes parked threads (netpoller, scheduler) in every process it crosses, CPU that a busy process saves by batching. ",
				fmtUS(f0.cpuPerStepUS), fmtUS(f.cpuPerStepUS), f.sleep, fmtUS(f.idleCPUPerStepUS), fmtUS(f0.dBackendCPUPerStepUS), fmtUS(f.dBackendCPUPerStepUS), f0.dBackendRunsPerStep, f.dBackendRunsPerStep, f0.vmcpRunsPerStep, f.vmcpRunsPerStep)
		}
	}
	if !met {
		fmt.Fprintf(&sb, "What a step through vmcp adds is one more MCP hop on 2 shared cores (vmcp's CPU per step %s; Profiles → chain): the request written, an HTTP round trip, the result parsed into the step's output, plus scheduling and rendering (BenchmarkChain in package engine: about 7 µs per step in-process). "+
			"Done: steps' backend calls take the lean HTTP path (to a plain-HTTP backend, the exchange runs on the step's own goroutine); a step alone in flight runs on the run's goroutine; a step's content list is decoded only when read; step outputs are decoded without encoding/json's generic decoder; expr VMs are reused. ", fmtUS(f.cpuPerStepUS))
	}
	sb.WriteString("The slope is a difference of p50s of a few calls each: its spread across rounds is wide on a shared machine")
	return sb.String()
}

// fanNote explains the fan-out target from the median round's cell: its
// timeline and CPU.
func fanNote(c Cell, ideal float64, f0 *fit, commit time.Duration) string {
	x := c.Extra
	if x["tl_calls"] == 0 {
		return "no timeline (the backend's trace was unavailable)"
	}
	cpu := x["vmcp_cpu_us_per_call"] + x["backend_cpu_us_per_call"]
	fx := ""
	if f0 != nil {
		fx = fmt.Sprintf("A composite's fixed cost (the chain fit's intercept through vmcp minus the direct chain's, at 0 ms where the intercepts are steadiest) is %s: mostly the run's two commits, created and finished, each writing the run's record, its indexes and checkpoint — several pages and two fdatasyncs each (an strace of vmcp serve on a 1-step chain, taken once outside this run, counted about 4 fdatasyncs and 35 page writes per call), not the floor's one-key commit (%s). ", fmtUS(f0.icpt-f0.dicpt), fmtD(commit))
	}
	return fx + fmt.Sprintf("Timeline of the median call (backend trace against the client's clock): client → first item at the backend %s (the call into vmcp, the run's created commit — one bbolt commit: %s here — and the for_each's rendering); "+
		"first → last item at the backend %s; the latest item's %s wait ended %s late; last response written → client %s (the last results, the finished commit, the response); %s in all. "+
		"Nothing serialises the dispatch: each item runs on its own worker (max_parallel 32), on pooled connections (%.1f new per fan-out call; no per-host limit), and the backend serves a session's requests concurrently. "+
		"The spread is CPU: one fan-out costs vmcp %s and the backend %s of CPU (%s per item together), on 2 cores shared with the client, so sending 32 requests and reading 32 requests alone take about half of that ÷ 2 cores ≈ %s, before the last item's wait can start. "+
		"The target leaves %s over the ideal for the fixed cost and 32 dispatches; with two commits (at least %s) and the dispatch's CPU on 2 cores that is out of reach by this arithmetic; what vmcp can cut is CPU per call (scenario 1) and the commits' size (the store)",
		fmtUS(x["tl_first_in_us"]), fmtD(commit), fmtUS(x["tl_dispatch_spread_us"]), "10 ms", fmtUS(x["tl_late_max_us"]), fmtUS(x["tl_tail_us"]), fmtUS(x["tl_total_us"]),
		x["backend_conns_per_call"], fmtUS(x["vmcp_cpu_us_per_call"]), fmtUS(x["backend_cpu_us_per_call"]), fmtUS(cpu/32), fmtUS(cpu/2/2),
		fmtUS(12000-ideal), fmtD(2*commit))
}

// fit is one round of one service time: the direct call, the chains and
// fan-outs, and the line fitted through the chains.
type fit struct {
	sleep               int
	direct              Cell
	chain               map[int]Cell // through vmcp
	dchain              map[int]Cell // the same calls made directly by the client
	fan                 map[int]Cell
	slope, icpt         float64
	dslope, dicpt       float64
	perStep             float64 // slope − dslope
	perStepVsCall       float64 // slope − direct.P50US (the old definition)
	marginal            []string
	fitOK, flatOK       bool
	cpuPerStepUS        float64
	backendCPUPerStepUS float64
	// the same from the direct chain, and threads put on a CPU per step
	dBackendCPUPerStepUS                                     float64
	vmcpRunsPerStep, backendRunsPerStep, dBackendRunsPerStep float64
	idleCPUPerStepUS                                         float64
	vmcpCPUPerCall                                           map[int]float64
	late                                                     struct{ direct, dchain, chain late }
}

// medianFit is the round with the median key; rounds whose fit failed
// count only if no round has one.
func medianFit(fs []*fit, key func(*fit) float64) *fit {
	var ok []*fit
	for _, f := range fs {
		if f.fitOK {
			ok = append(ok, f)
		}
	}
	if len(ok) == 0 {
		return fs[0]
	}
	slices.SortStableFunc(ok, func(a, b *fit) int { return cmp.Compare(key(a), key(b)) })
	return ok[(len(ok)-1)/2]
}

// roundList is each service time's per-step overhead by round.
func roundList(roundsOf map[int][]*fit) string {
	var parts []string
	for _, sl := range slices.Sorted(maps.Keys(roundsOf)) {
		rs := roundsOf[sl]
		if len(rs) < 2 {
			continue
		}
		var xs []string
		for _, f := range rs {
			if f.fitOK {
				xs = append(xs, fmtUS(f.perStep))
			} else {
				xs = append(xs, "INVALID")
			}
		}
		parts = append(parts, fmt.Sprintf("%d ms: %s", sl, strings.Join(xs, ", ")))
	}
	return strings.Join(parts, "; ")
}

// callTool calls a tool with arguments.
func callTool(ctx context.Context, s *session, name string, args map[string]any) (*mcp.CallToolResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := s.CallTool(ctx, req)
	if err != nil {
		return nil, err
	}
	if res.IsError {
		return nil, fmt.Errorf("%s: isError: %s", name, truncate(resultText(res), 300))
	}
	return res, nil
}

// checkStructured compares structuredContent with want (as JSON).
func checkStructured(res *mcp.CallToolResult, want map[string]any) error {
	var got any = res.StructuredContent
	if len(res.RawStructuredContent) > 0 {
		got = res.RawStructuredContent
	}
	gb, _ := json.Marshal(got)
	var gv, wv any
	_ = json.Unmarshal(gb, &gv)
	wb, _ := json.Marshal(want)
	_ = json.Unmarshal(wb, &wv)
	if g, w := canonJSON(gv), canonJSON(wv); g != w {
		return fmt.Errorf("wrong answer: structuredContent %s, want %s", truncate(g, 200), truncate(w, 200))
	}
	return nil
}

func canonJSON(v any) string {
	b, _ := json.Marshal(v) // maps marshal with sorted keys
	return string(b)
}
