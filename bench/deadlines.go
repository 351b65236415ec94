package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

// deadlineWorkflowConfig serves dl: a question with a timeout whose
// on_cancel continues to one echo call carrying the run's tag.
func deadlineWorkflowConfig(echoURL, dsn, schema string) string {
	return fmt.Sprintf(`name: bench-deadlines
backends:
  - {name: echo, url: %q}
composite_tools:
  - name: dl
    description: Ask with a timeout; on timeout, echo the tag once.
    parameters:
      type: object
      properties: {tag: {type: string}}
      required: [tag]
    steps:
      - id: ask
        type: elicitation
        message: "Proceed with {{ params.tag }}?"
        schema:
          type: object
          properties: {ok: {type: boolean}}
          required: [ok]
        timeout: 1h
        on_cancel: continue
      - id: mark
        tool: echo.echo
        arguments: {msg: "{{ params.tag }}"}
    output: {tag: "{{ params.tag }}", marked: "{{ steps.mark.output.text }}"}
state:
  driver: postgres
  dsn: %q
  postgres: {schema: %s}
`, echoURL, dsn, schema)
}

// deadlineTarget is issue #9's deadline line, in the targets table.
var deadlineTarget = struct{ what, target string }{
	"PostgreSQL: 10,000 waiting runs with deadlines across 3 replicas",
	"exactly 10,000 on_cancel applications, each within sweep interval + 1 s of due",
}

// pgDeadlines is issue #9's deadline measurement: three `vmcp serve`
// replicas (default PostgreSQL settings: sweep every second) on a schema
// of their own; one run started through a replica pauses on its question,
// and the bench stores n copies of it through the driver (new ids and
// tags; each due lead after it is stored, and no earlier than its slot in
// a window of spread), which is what n paused calls leave in the table.
// The replicas claim the due questions and continue each run on its
// on_cancel path, which echoes the run's tag once. Checked: every run
// completed with its own tag echoed, one deadline event each, and the
// echo backend got exactly n calls. Measured: how long after its
// deadline each question was claimed (the deadline event's time, from the
// database clock, against the deadline stored).
func (b *bench) pgDeadlines(ctx context.Context, dsn, schema string) (Cell, int64, error) {
	const sc = "postgres"
	n := b.n(2000, 10_000)
	spread, lead := 10*time.Second, 2*time.Second
	cfg := deadlineWorkflowConfig(b.echoURL(0), dsn, schema)
	var vs []*vmcpProc
	defer func() {
		for _, v := range vs {
			b.stopVMCP(v)
		}
	}()
	for i := range 3 {
		v, err := b.vmcp(fmt.Sprintf("pg-deadlines-%d", i), cfg)
		if err != nil {
			return Cell{}, 0, err
		}
		vs = append(vs, v)
	}
	st, err := postgres.Open(ctx, dsn, &postgres.Options{Schema: schema, SweepInterval: -1, StatementTimeout: time.Minute})
	if err != nil {
		return Cell{}, 0, err
	}
	defer st.Close()

	// The template: a real paused run (a 2025-11-25 client that cannot
	// answer gets the paused result).
	s, err := dial(ctx, vs[0].URL, eraLegacy)
	if err != nil {
		return Cell{}, 0, err
	}
	_, err = callTool(ctx, s, "dl", map[string]any{"tag": "TEMPLATE-TAG"})
	s.Close()
	if err != nil {
		return Cell{}, 0, fmt.Errorf("dl template: %w", err)
	}
	l, _, err := st.List(ctx, state.Filter{Status: state.StatusWaiting, Workflow: "dl", Limit: 2})
	if err != nil || len(l) != 1 {
		return Cell{}, 0, fmt.Errorf("dl template: %d waiting runs (%v), want 1", len(l), err)
	}
	tmpl, err := st.Get(ctx, l[0].ID)
	if err != nil {
		return Cell{}, 0, err
	}
	if tmpl.Pending == nil || !bytes.Contains(tmpl.Checkpoint, []byte(tmpl.ID)) {
		return Cell{}, 0, fmt.Errorf("dl template %s: pending %+v", tmpl.ID, tmpl.Pending)
	}
	before, err := echoStats(b.echoSrv.Addr)
	if err != nil {
		return Cell{}, 0, err
	}

	start := time.Now().Add(lead)
	type seeded struct {
		id, tag string
		due     time.Time
	}
	runs := make([]seeded, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var seedErr error
	var mu sync.Mutex
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				id, tag := state.NewRunID(), fmt.Sprintf("dl-%05d", i)
				due := start.Add(spread * time.Duration(i) / time.Duration(n))
				if earliest := time.Now().Add(lead); due.Before(earliest) {
					due = earliest
				}
				r := statetest.CloneWaiting(tmpl, id, "TEMPLATE-TAG", tag, due)
				if err := st.Create(ctx, r); err != nil {
					mu.Lock()
					seedErr = fmt.Errorf("storing copy %d: %w", i, err)
					mu.Unlock()
					return
				}
				runs[i] = seeded{id, tag, r.Pending.Deadline}
			}
		})
	}
	wg.Wait()
	if seedErr != nil {
		return Cell{}, 0, seedErr
	}

	// Until every copy is finished (or 3 minutes).
	stop := time.Now().Add(3 * time.Minute)
	for {
		var open int
		if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM vmcp_runs WHERE id <> $1 AND status NOT IN ('completed', 'failed', 'cancelled')`, tmpl.ID).Scan(&open); err != nil {
			return Cell{}, 0, err
		}
		if open == 0 {
			break
		}
		if time.Now().After(stop) {
			return Cell{}, 0, fmt.Errorf("%d of %d runs not finished 3 minutes after they were stored", open, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // a double application would reach the backend by now
	after, err := echoStats(b.echoSrv.Addr)
	if err != nil {
		return Cell{}, 0, err
	}
	calls := after["calls"] - before["calls"]

	var late []time.Duration
	var check error
	for _, sr := range runs {
		r, err := st.Get(ctx, sr.id)
		if err != nil {
			return Cell{}, 0, err
		}
		k := 0
		for _, ev := range r.History {
			if ev.Kind == state.EventDeadline {
				k++
				late = append(late, ev.At.Sub(sr.due))
			}
		}
		if check == nil && (k != 1 || r.Status != state.StatusCompleted || !bytes.Contains(r.Result, []byte(`"marked":"`+sr.tag+`"`))) {
			check = fmt.Errorf("run %s: %d deadline events, status %s, result %s", sr.id, k, r.Status, truncate(string(r.Result), 200))
		}
	}
	if check == nil && calls != int64(n) {
		check = fmt.Errorf("%d echo calls for %d runs' on_cancel paths", calls, n)
	}
	slices.Sort(late)
	c := cell(sc, fmt.Sprintf("%d deadlines across 3 vmcp replicas: claim after due", n), map[string]any{"runs": n, "replicas": 3, "spread_s": spread.Seconds()}, load{Lat: late, Err: check})
	c.OpsPerS = 0 // latencies of claims, not a timed window
	if len(late) > 0 {
		c.Extra = map[string]float64{"max_us": us(late[len(late)-1])}
	}
	return b.rep.addCell(c), calls, nil
}
