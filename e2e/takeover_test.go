package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/state"
)

// Takeover across replicas (issue 9, design §5.6 "kill a replica
// mid-run"): three `vmcp serve` processes on one PostgreSQL; the replica
// holding 50 runs mid-step and 50 paused runs is SIGKILLed.

// takeoverWorkflows: the slow workflows plus one that asks first (a cheap
// paused run).
func takeoverWorkflows() map[string]string {
	wfs := map[string]string{"ask_first.yaml": questionWorkflow("ask_first", "1h")}
	for k, v := range slowWorkflows {
		wfs[k] = v
	}
	return wfs
}

// startAsk starts ask_first with tag on c (a client that cannot answer)
// and returns the waiting run's id.
func startAsk(t *testing.T, c *mcpClient, tag string) (string, error) {
	res, err := c.call(t, "ask_first", fmt.Sprintf(`{"tag":%q}`, tag))
	if err != nil {
		return "", err
	}
	return pausedID(res, "ask")
}

// eventAt is the time of a run's first history event of kind.
func (v *runView) eventAt(kind string) (time.Time, bool) {
	for _, h := range v.History {
		if h.Kind == kind {
			at, err := time.Parse(time.RFC3339Nano, h.At)
			return at, err == nil
		}
	}
	return time.Time{}, false
}

func TestPostgresTakeover(t *testing.T) {
	const (
		nPaused = 50
		nRead   = 25 // mid-step on a read-only tool
		nWrite  = 25 // mid-step on a tool neither read-only nor idempotent
		lease   = 2 * time.Second
		sweep   = 200 * time.Millisecond
	)
	slow := newSlowBackend(t)
	cfg, _ := durableSetup(t, slow.url, takeoverWorkflows())
	cfg += postgresState(t, lease.String(), "")
	a, b, c := startVMCP(t, cfg), startVMCP(t, cfg), startVMCP(t, cfg)
	survivors := []*proc{b, c}
	ca := connect(t, a.URL, legacy, false)
	cb := connect(t, b.URL, legacy, false)
	if st := b.status(t); len(st.Replicas) != 3 {
		t.Fatalf("/status lists %d replicas, want 3", len(st.Replicas))
	}

	// 50 runs paused on A.
	var mu sync.Mutex
	var paused []string
	var wg sync.WaitGroup
	for w := range 5 {
		wg.Go(func() {
			for i := range nPaused / 5 {
				id, err := startAsk(t, ca, fmt.Sprintf("p-%d-%d", w, i))
				if err != nil {
					t.Errorf("ask_first on A: %v", err)
					return
				}
				mu.Lock()
				paused = append(paused, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// 50 runs mid-step on A: their backend calls block.
	slow.hold.Store(true)
	calls := make(chan struct{}, nRead+nWrite)
	clients := []*mcpClient{ca, connect(t, a.URL, legacy, false), connect(t, a.URL, legacy, false)}
	readTags, writeTags := []string{}, []string{}
	for i := range nRead + nWrite {
		wf, tag := "wf_read", fmt.Sprintf("ro-%d", i)
		if i >= nRead {
			wf, tag = "wf_write", fmt.Sprintf("rw-%d", i)
			writeTags = append(writeTags, tag)
		} else {
			readTags = append(readTags, tag)
		}
		cl := clients[i%len(clients)]
		go func() {
			defer func() { calls <- struct{}{} }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			req := mcp.CallToolRequest{}
			req.Params.Name = wf
			req.Params.Arguments = json.RawMessage(fmt.Sprintf(`{"tag":%q}`, tag))
			_, _ = cl.CallTool(ctx, req) // ends when A dies
		}()
	}
	eventually(t, 30*time.Second, "all mid-step calls to reach the slow backend", func() bool {
		return int(slow.inflight.Load()) == nRead+nWrite
	})
	time.Sleep(300 * time.Millisecond) // the in-flight commit follows the hand-off to a worker
	running := map[string]string{}     // run → workflow
	for _, wf := range []string{"wf_read", "wf_write"} {
		for id := range listRuns(t, cb, state.StatusRunning, wf) {
			running[id] = wf
		}
	}
	if len(running) != nRead+nWrite {
		t.Fatalf("B lists %d running runs, want %d", len(running), nRead+nWrite)
	}

	killed := time.Now()
	a.kill()
	slow.hold.Store(false)
	for range nRead + nWrite {
		<-calls
	}

	// Every orphan is taken over: read-only ones continue and complete,
	// the others stay interrupted and wait for a decision.
	views := map[string]*runView{}
	eventually(t, lease+sweep+20*time.Second, "every orphan to be taken over", func() bool {
		done := 0
		for id, wf := range running {
			v := apiRun(t, survivors[len(id)%2], id)
			views[id] = v
			if (wf == "wf_read" && v.Status == state.StatusCompleted) || (wf == "wf_write" && v.Status == state.StatusInterrupted) {
				done++
			}
		}
		return done == len(running)
	})
	var worst time.Duration
	for id, v := range views {
		k := v.kinds()
		if k[state.EventInterrupted] != 1 {
			t.Errorf("run %s (%s): interrupted %d times: %s", id, running[id], k[state.EventInterrupted], v.historyString())
		}
		at, ok := v.eventAt(state.EventInterrupted)
		if !ok {
			continue
		}
		worst = max(worst, at.Sub(killed))
		switch running[id] {
		case "wf_read":
			if k[state.EventResumed] != 1 || k[state.StatusCompleted] != 1 {
				t.Errorf("read-only run %s: %s; want one takeover (resumed by vmcp) and completed", id, v.historyString())
			}
			if !strings.HasPrefix(fmt.Sprint(v.Output["fetched"]), "read ro-") {
				t.Errorf("read-only run %s completed with %v", id, v.Output)
			}
		case "wf_write":
			if len(v.Interrupted.NeedsDecision) != 1 || v.Interrupted.NeedsDecision[0] != "write" || k[state.EventResumed] != 0 {
				t.Errorf("non-idempotent run %s: interrupted %+v, history %s; want it waiting for a decision on step write", id, v.Interrupted, v.historyString())
			}
		}
	}
	t.Logf("%d orphans interrupted at most %v after the SIGKILL (lease %v, sweep %v); bound asserted: lease + sweep + 5s",
		len(views), worst.Round(time.Millisecond), lease, sweep)
	if worst > lease+sweep+5*time.Second {
		t.Errorf("the last orphan was interrupted %v after the kill", worst)
	}
	for _, tag := range readTags {
		if n := slow.count("read", tag); n != 2 {
			t.Errorf("read-only step %s invoked %d times, want 2 (once on A, exactly once more after the takeover)", tag, n)
		}
	}
	for _, tag := range writeTags {
		if n := slow.count("write", tag); n != 1 {
			t.Errorf("non-idempotent step %s invoked %d times before any answer, want 1", tag, n)
		}
	}

	// The non-idempotent runs are answered through the survivors: half
	// re-run their step (once more), half fail it.
	rerun := map[string]bool{}
	i := 0
	for id, wf := range running {
		if wf != "wf_write" {
			continue
		}
		i++
		rerun[id] = i%2 == 0
		p := survivors[i%2]
		code, body := apiDo(t, p, "", http.MethodPost, "/api/v1/runs/"+id+"/resume", fmt.Sprintf(`{"action":"accept","content":{"rerun":%v}}`, rerun[id]))
		if code != http.StatusOK {
			t.Errorf("deciding interrupted run %s on a survivor: %d %s", id, code, body)
		}
	}
	reran := 0
	for id, again := range rerun {
		v := apiRun(t, b, id)
		switch {
		case again && v.Status != state.StatusCompleted:
			t.Errorf("run %s re-run by decision: %s (%s)", id, v.Status, v.historyString())
		case !again && v.Status != state.StatusFailed:
			t.Errorf("run %s failed by decision: %s (%s)", id, v.Status, v.historyString())
		}
		if again {
			reran++
		}
	}
	total := 0
	for _, tag := range writeTags {
		total += slow.count("write", tag)
	}
	if total != nWrite+reran {
		t.Errorf("non-idempotent steps invoked %d times in all, want %d (once each on A, once more for the %d re-run by decision)", total, nWrite+reran, reran)
	}

	// The paused runs are answered through any survivor.
	for i, id := range paused {
		p := survivors[i%2]
		code, body := apiDo(t, p, "", http.MethodPost, "/api/v1/runs/"+id+"/resume", `{"action":"accept","content":{"ok":true}}`)
		if code != http.StatusOK {
			t.Errorf("answering paused run %s on a survivor: %d %s", id, code, body)
			continue
		}
		if v := completedWithTicket(t, survivors[(i+1)%2], id); v.kinds()[state.EventAnswered] != 1 {
			t.Errorf("paused run %s: %s", id, v.historyString())
		}
	}

	// 0 runs lost: all 100 are accounted for, none left running.
	counts := map[string]int{}
	for _, s := range []string{state.StatusRunning, state.StatusWaiting, state.StatusInterrupted, state.StatusCompleted, state.StatusFailed, state.StatusCancelled} {
		counts[s] = len(listRuns(t, cb, s, ""))
	}
	want := map[string]int{state.StatusCompleted: nPaused + nRead + reran, state.StatusFailed: nWrite - reran}
	for s, n := range counts {
		if n != want[s] {
			t.Errorf("%d runs %s after the takeover, want %d (all: %v)", n, s, want[s], counts)
		}
	}
}

// The same question answered on two replicas at once, 1,000 times
// (design §5.6 "double answer"): exactly one answer applies each time, the
// other gets a clear conflict, the history holds one answer. Rounds run 8
// at a time on a workflow whose first step is the question, so a round is
// a pause, two answers, one ticket and a finish. Then resume tokens
// (2026-07-28 requestState): the same retry sent to both replicas at once
// applies once, and a token used on one replica is refused on the other.
func TestPostgresDoubleAnswer(t *testing.T) {
	const rounds, workers, tokenRounds = 1000, 8, 20
	cfg := durableConfig(t, "", map[string]string{"ask_first.yaml": questionWorkflow("ask_first", "1h")})
	cfg += postgresState(t, "10s", "")
	a, b := startVMCP(t, cfg), startVMCP(t, cfg)
	procs := []*proc{a, b}

	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		c := connect(t, procs[w%2].URL, legacy, false)
		wg.Go(func() {
			for i := w; i < rounds; i += workers {
				if t.Failed() {
					return
				}
				id, err := startAsk(t, c, fmt.Sprintf("d-%d", i))
				if err != nil {
					t.Errorf("round %d: %v", i, err)
					return
				}
				codes, bodies := make([]int, 2), make([][]byte, 2)
				var both sync.WaitGroup
				for k, p := range procs {
					both.Go(func() {
						codes[k], bodies[k] = apiDo(t, p, "", http.MethodPost, "/api/v1/runs/"+id+"/resume", `{"action":"accept","content":{"ok":true}}`)
					})
				}
				both.Wait()
				won := 0
				for k := range procs {
					switch {
					case codes[k] == http.StatusOK:
						won++
					case codes[k] != http.StatusConflict || !strings.Contains(string(bodies[k]), "not waiting for an answer"):
						t.Errorf("round %d: the losing answer got %d %s; want 409 saying the run is not waiting", i, codes[k], bodies[k])
					}
				}
				if won != 1 {
					t.Errorf("round %d: answers on A and B got %v; want exactly one 200", i, codes)
					return
				}
				v := apiRun(t, procs[i%2], id)
				if k := v.kinds(); v.Status != state.StatusCompleted || k[state.EventAnswered] != 1 {
					t.Errorf("round %d: run %s %s, history %s; want completed with one answer", i, id, v.Status, v.historyString())
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	el := time.Since(start)
	t.Logf("%d double answers across two replicas in %v (%d at a time): one applied each time", rounds, el.Round(time.Millisecond), workers)

	// Resume tokens.
	ia, inja := connectInjector(t, a.URL)
	ib, injb := connectInjector(t, b.URL)
	ok := map[string]any{"ok": true}
	for i := range tokenRounds {
		args := fmt.Sprintf(`{"tag":"tok-%d"}`, i)
		tok, reqs := ask(t, ia, "ask_first", args)
		if len(reqs) != 1 || reqs[0] != "ask" {
			t.Fatalf("input requests %v", reqs)
		}
		id := waitingRunID(t, b, "", "ask_first")
		type answer struct {
			res *mcp.CallToolResult
			err error
		}
		got := make([]answer, 2)
		var both sync.WaitGroup
		for k, side := range []struct {
			c   *mcpClient
			inj *injector
		}{{ia, inja}, {ib, injb}} {
			both.Go(func() {
				side.inj.retryWith(tok, accept("ask", ok))
				got[k].res, got[k].err = side.c.call(t, "ask_first", args)
			})
		}
		both.Wait()
		applied := 0
		for k, g := range got {
			switch {
			case g.err == nil && !g.res.IsError:
				applied++
			case g.err == nil && (strings.Contains(text(g.res), "already used") || strings.Contains(text(g.res), "not waiting for an answer")):
			default:
				t.Errorf("token round %d: the retry on replica %d got %v %v; want it applied or refused as already used", i, k, g.err, g.res)
			}
		}
		if applied != 1 {
			t.Fatalf("token round %d: the same requestState was applied %d times across the replicas", i, applied)
		}
		if v := apiRun(t, a, id); v.Status != state.StatusCompleted || v.kinds()[state.EventAnswered] != 1 {
			t.Errorf("token round %d: run %s %s, history %s", i, id, v.Status, v.historyString())
		}
		// Replayed later on either replica: refused, nothing changes.
		replay, inj := ib, injb
		if i%2 == 1 {
			replay, inj = ia, inja
		}
		refusedRetry(t, replay, inj, "ask_first", args, tok, accept("ask", ok), "already used")
	}
}
