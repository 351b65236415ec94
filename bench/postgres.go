package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.etcd.io/bbolt"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
)

// storeCheckpoint is a 2 KiB checkpoint, about what a run with a few
// finished steps writes (the same as state's and statetest's benchmarks).
var storeCheckpoint = checkpointOf(2000)

func checkpointOf(n int) json.RawMessage {
	return json.RawMessage(`{"version":1,"steps":{"plan":{"status":"completed","output":"` + strings.Repeat("x", n) + `"}}}`)
}

// stepsCheckpoint is an engine checkpoint (encoding/json's form) with n
// finished steps of size bytes of output each, plus one of last bytes
// (none if 0). spaced puts a space inside the steps object, a form the
// PostgreSQL driver stores whole, in the run's row, as it stored every
// checkpoint before step rows (migration 4): the same bytes, both ways.
func stepsCheckpoint(n, size, last int, spaced bool) json.RawMessage {
	var b strings.Builder
	b.WriteString(`{"version":1,"run_id":"r","workflow":"deploy","params":{"env":"prod"},"steps":{`)
	if spaced {
		b.WriteByte(' ')
	}
	step := func(i, size int) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"step_%02d":{"status":"completed","output":{"n":%d,"text":"%s"},"attempts":1}`, i, i, strings.Repeat("x", size))
	}
	for i := range n {
		step(i, size)
	}
	if last > 0 {
		step(n, last)
	}
	b.WriteString(`},"elapsed":1500000}`)
	return json.RawMessage(b.String())
}

// storeStepPauses measures, at concurrency 1 and alternately, a pause that
// adds a 200 B step to a run holding ten 3 KiB steps: split into step
// rows (only the new step's row is written) and stored whole (the whole
// 31 KiB again, as before step rows). The runs are created with their ten
// steps beforehand, untimed.
func storeStepPauses(ctx context.Context, st state.Driver, n int) (split, whole load) {
	const steps, size, last = 10, 3 << 10, 200
	var ids [2][]string
	for k, spaced := range []bool{false, true} {
		var err error
		if ids[k], err = createRunningWith(ctx, st, n, stepsCheckpoint(steps, size, 0, spaced)); err != nil {
			return load{Err: err}, load{Err: err}
		}
	}
	cps := [2]json.RawMessage{stepsCheckpoint(steps, size, last, false), stepsCheckpoint(steps, size, last, true)}
	lat := [2][]time.Duration{make([]time.Duration, 0, n), make([]time.Duration, 0, n)}
	t0 := time.Now()
	for i := range n {
		for k := range 2 {
			if ctx.Err() != nil {
				return load{Err: ctx.Err()}, load{Err: ctx.Err()}
			}
			s := time.Now()
			q := storeQuestion
			q.Deadline = s.Add(time.Hour)
			if _, err := st.Pause(ctx, ids[k][i], cps[k], q); err != nil {
				return load{Err: err}, load{Err: err}
			}
			lat[k] = append(lat[k], time.Since(s))
		}
	}
	el := time.Since(t0)
	slices.Sort(lat[0])
	slices.Sort(lat[1])
	return load{Lat: lat[0], Elapsed: el}, load{Lat: lat[1], Elapsed: el}
}

var storeQuestion = state.Question{Step: "approve", Message: "Deploy 3 services to prod?",
	Schema: json.RawMessage(`{"type":"object","properties":{"approve":{"type":"boolean"}},"required":["approve"]}`)}

// storePauses measures a driver's own pause transition, in this process:
// conc workers pause distinct running runs (created beforehand, untimed)
// for dur, at most n in all. Each latency is one Pause call: the commit
// the server waits for before it delivers a question.
func storePauses(ctx context.Context, st state.Driver, conc, n int, dur time.Duration, checkpoint json.RawMessage) load {
	ids, err := createRunning(ctx, st, n)
	if err != nil {
		return load{Err: err}
	}
	var next atomic.Int64
	return runLoad(ctx, conc, 0, dur, 0, n, func(ctx context.Context, _ int) error {
		i := int(next.Add(1)) - 1
		if i >= len(ids) {
			return fmt.Errorf("ran out of prepared runs (%d)", len(ids))
		}
		q := storeQuestion
		q.Deadline = time.Now().Add(time.Hour)
		seq, err := st.Pause(ctx, ids[i], checkpoint, q)
		if err == nil && seq != 1 {
			err = fmt.Errorf("run %s: pause number %d, want 1", ids[i], seq)
		}
		return err
	})
}

// storePausesBeside is storePauses at concurrency 1 with a bbolt commit
// of the floor's kind (one small key, a file in dir) after each pause:
// the two latencies measured side by side, under the same load from
// whatever else shares the machine.
// With other, a third operation is timed after each commit (nil: none).
func storePausesBeside(ctx context.Context, st state.Driver, dir string, n int, other func(context.Context) error) (pauses, commits, others load) {
	ids, err := createRunning(ctx, st, n)
	if err != nil {
		return load{Err: err}, load{Err: err}, load{Err: err}
	}
	_ = os.MkdirAll(dir, 0o755)
	path := filepath.Join(dir, "commit.beside.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		return load{Err: err}, load{Err: err}, load{Err: err}
	}
	defer os.Remove(path)
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		return load{Err: err}, load{Err: err}, load{Err: err}
	}
	pl, cl, ol := make([]time.Duration, 0, n), make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	t0 := time.Now()
	for i, id := range ids {
		if ctx.Err() != nil {
			return load{Err: ctx.Err()}, load{Err: ctx.Err()}, load{Err: ctx.Err()}
		}
		s := time.Now()
		q := storeQuestion
		q.Deadline = s.Add(time.Hour)
		if _, err := st.Pause(ctx, id, storeCheckpoint, q); err != nil {
			return load{Err: err}, load{Err: err}, load{Err: err}
		}
		m := time.Now()
		err := db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%d", i%1000), []byte("a small value"))
		})
		if err != nil {
			return load{Err: err}, load{Err: err}, load{Err: err}
		}
		pl, cl = append(pl, m.Sub(s)), append(cl, time.Since(m))
		if other != nil {
			o := time.Now()
			if err := other(ctx); err != nil {
				return load{Err: err}, load{Err: err}, load{Err: err}
			}
			ol = append(ol, time.Since(o))
		}
	}
	el := time.Since(t0)
	slices.Sort(pl)
	slices.Sort(cl)
	slices.Sort(ol)
	return load{Lat: pl, Elapsed: el}, load{Lat: cl, Elapsed: el}, load{Lat: ol, Elapsed: el}
}

// createRunning creates n running runs, 16 at a time.
func createRunning(ctx context.Context, st state.Driver, n int) ([]string, error) {
	return createRunningWith(ctx, st, n, nil)
}

// createRunningWith is createRunning with a first checkpoint.
func createRunningWith(ctx context.Context, st state.Driver, n int, checkpoint json.RawMessage) ([]string, error) {
	ids := make([]string, n)
	var next atomic.Int64
	var first error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				r := &state.Run{Workflow: "deploy", Owner: "bench", Params: json.RawMessage(`{"tag":"x"}`),
					Definition: []byte("name: deploy\nsteps: []\n"), DefinitionName: "deploy.yaml", Checkpoint: checkpoint}
				if err := st.Create(ctx, r); err != nil {
					mu.Lock()
					first = errors.Join(first, err)
					mu.Unlock()
					return
				}
				ids[i] = r.ID
			}
		})
	}
	wg.Wait()
	return ids, first
}

// postgresDSN finds a PostgreSQL for the scenario: VMCP_TEST_POSTGRES_DSN,
// else a private server started with .ci/postgres.sh when initdb is
// installed (stop, non-nil, stops it), else why not.
func (b *bench) postgresDSN() (dsn string, stop func(), why string) {
	if dsn := os.Getenv("VMCP_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn, nil, ""
	}
	initdb, _ := exec.LookPath("initdb")
	if initdb == "" {
		m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
		if len(m) == 0 {
			return "", nil, "no PostgreSQL: VMCP_TEST_POSTGRES_DSN is unset and initdb is not installed"
		}
	}
	script := filepath.Join(b.root, ".ci", "postgres.sh")
	out, err := exec.Command(script, "start").Output()
	if err != nil {
		return "", nil, fmt.Sprintf("no PostgreSQL: .ci/postgres.sh start failed: %v", err)
	}
	var dir string
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, "'")
		switch k {
		case "VMCP_TEST_POSTGRES_DSN":
			dsn = v
		case "VMCP_TEST_POSTGRES_DIR":
			dir = v
		}
	}
	stop = func() { _ = exec.Command(script, "stop", dir).Run() }
	if dsn == "" {
		stop()
		return "", nil, "no PostgreSQL: .ci/postgres.sh start printed no DSN"
	}
	return dsn, stop, ""
}

// pgTargets are issue #9's PostgreSQL lines, in the targets table.
var pgTargets = []struct{ what, target string }{
	{"PostgreSQL: pause persisted p50 at concurrency 1", "≤ 2 × one bbolt commit"},
	{"PostgreSQL: pauses/s at concurrency 8", "≥ 2,500 pauses/s"},
	{"PostgreSQL: restart to ready with 100,000 stored runs", "≤ 1 s"},
	{"PostgreSQL: a page of 50 runs by owner and status at 100,000 runs", "≤ 5 ms"},
}

// postgresScenario is issue #9's numbers, in the same run as the bbolt
// figures: the PostgreSQL driver's pause (at concurrency 1, against the
// bbolt commit floor, and 8), vmcp serve's restart to ready with 100,000
// stored runs, and a page of 50 runs by owner and status among them.
func (b *bench) postgresScenario(ctx context.Context) error {
	const sc = "postgres"
	dsn, stopPG, why := b.postgresDSN()
	if why != "" {
		for _, t := range append(pgTargets, deadlineTarget) {
			b.rep.target("9 postgres", t.what, t.target, "not run: "+why, nil, "")
		}
		b.rep.addSection(sc, "Scenario 9: PostgreSQL state driver", "Not run: "+why+".\n")
		return nil
	}
	if stopPG != nil {
		defer stopPG()
	}
	schema := fmt.Sprintf("bench_%d_%d", os.Getpid(), time.Now().Unix())
	st, err := postgres.Open(ctx, dsn, &postgres.Options{Schema: schema, SweepInterval: -1, StatementTimeout: time.Minute})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer func() {
		_, _ = st.Pool().Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
		st.Close()
	}()
	var version string
	_ = st.Pool().QueryRow(ctx, `SHOW server_version`).Scan(&version)

	// 100,000 stored runs first, so that every measurement below runs on
	// a table of that size.
	const stored = 100_000
	t0 := time.Now()
	if err := fillRuns(ctx, st, stored); err != nil {
		return fmt.Errorf("storing %d runs: %w", stored, err)
	}
	fillTook := time.Since(t0)

	d := b.dur(time.Second, 3*time.Second)
	commit := us(b.floor.commit)
	// PostgreSQL's own floor: one autocommit UPDATE of a small row (one
	// round trip, one WAL flush).
	if _, err := st.Pool().Exec(ctx, `CREATE TABLE bench_floor (k int PRIMARY KEY, v text); INSERT INTO bench_floor VALUES (1, '')`); err != nil {
		return err
	}
	pl, cl, ol := storePausesBeside(ctx, st, filepath.Join(b.work, "postgres"), b.n(1000, 3000), func(ctx context.Context) error {
		_, err := st.Pool().Exec(ctx, `UPDATE bench_floor SET v = $1 WHERE k = 1`, time.Now().String())
		return err
	})
	p1 := b.rep.addCell(cell(sc, "PostgreSQL pause (2 KiB checkpoint), c=1", map[string]any{"concurrency": 1}, pl))
	bolt := b.rep.addCell(cell(sc, "bbolt commit (one small key), alternating with those pauses", map[string]any{"concurrency": 1}, cl))
	pgCommit := b.rep.addCell(cell(sc, "PostgreSQL commit floor (autocommit UPDATE of one small row), alternating with those pauses", nil, ol))
	fast0 := st.FastTransitions()
	p8 := b.rep.addCell(cell(sc, "PostgreSQL pause (2 KiB checkpoint), c=8", map[string]any{"concurrency": 8}, storePauses(ctx, st, 8, b.n(6000, 20000), d, storeCheckpoint)))
	fast8 := st.FastTransitions() - fast0
	small := b.rep.addCell(cell(sc, "PostgreSQL pause (200 B checkpoint), c=1", map[string]any{"concurrency": 1, "checkpoint": 200}, storePauses(ctx, st, 1, b.n(2000, 6000), d, checkpointOf(100))))
	big := b.rep.addCell(cell(sc, "PostgreSQL pause (32 KiB checkpoint), c=1", map[string]any{"concurrency": 1, "checkpoint": 32000}, storePauses(ctx, st, 1, b.n(2000, 6000), d, checkpointOf(32000))))
	sl, wl := storeStepPauses(ctx, st, b.n(1000, 3000))
	afterSteps := b.rep.addCell(cell(sc, "PostgreSQL pause adding a 200 B step to ten 3 KiB steps (step rows: one written), c=1", map[string]any{"concurrency": 1, "steps": 10, "step_bytes": 3072, "new_step_bytes": 200}, sl))
	afterWhole := b.rep.addCell(cell(sc, "PostgreSQL pause of the same 31 KiB checkpoint stored whole (as before step rows), alternating, c=1", map[string]any{"concurrency": 1, "steps": 10, "step_bytes": 3072, "new_step_bytes": 200, "whole": true}, wl))

	// A page of 50 by owner and status, first and next, among the runs.
	f := state.Filter{Owner: "owner3", Status: state.StatusWaiting, Limit: 50}
	var next string
	page := func(cursor string) load {
		f := f
		f.Cursor = cursor
		return timeN(ctx, 5, b.n(200, 1000), func(ctx context.Context) error {
			l, nx, err := st.List(ctx, f)
			if err == nil && (len(l) != 50 || nx == "") {
				err = fmt.Errorf("page of %d runs (next %q), want 50 and more", len(l), nx)
			}
			for _, r := range l {
				if err == nil && (r.Owner != f.Owner || r.Status != f.Status) {
					err = fmt.Errorf("run %s of %s, %s in a page of %s, %s", r.ID, r.Owner, r.Status, f.Owner, f.Status)
				}
			}
			next = nx
			return err
		})
	}
	first := b.rep.addCell(cell(sc, "PostgreSQL list: first page of 50 by owner and status, 100,000 runs", nil, page("")))
	second := b.rep.addCell(cell(sc, "PostgreSQL list: next page of 50 by owner and status, 100,000 runs", nil, page(next)))

	// vmcp serve on that schema: exec until /readyz answers 200.
	cfg := pauseConfig(b.echoURL(0)) + fmt.Sprintf("state:\n  driver: postgres\n  dsn: %q\n  postgres:\n    schema: %s\n", dsn, schema)
	var ready []time.Duration
	var readyErr error
	for range b.n(2, 3) {
		v, err := b.vmcp("postgres", cfg)
		if err != nil {
			readyErr = err
			break
		}
		ready = append(ready, v.ReadyIn)
		b.stopVMCP(v)
	}
	rl := timeSorted(ready)
	rl.Err = readyErr
	rc := b.rep.addCell(cell(sc, "vmcp serve with driver postgres: restart to ready, 100,000 stored runs", map[string]any{"stored": stored}, rl))

	// 10,000 deadlines across three replicas, on a schema of their own.
	dlSchema := schema + "_dl"
	dl, dlCalls, dlErr := b.pgDeadlines(ctx, dsn, dlSchema)
	_, _ = st.Pool().Exec(context.Background(), `DROP SCHEMA IF EXISTS `+dlSchema+` CASCADE`)
	if dlErr != nil {
		dl = b.rep.addCell(Cell{Scenario: sc, Name: "deadlines across 3 vmcp replicas", Error: oneLine(dlErr.Error())})
	}

	pp := func(c Cell) string {
		if !c.Valid {
			return "INVALID: " + c.Error
		}
		return fmtUS(c.P50US) + " / " + fmtUS(c.P99US)
	}
	rows := [][]string{
		{"pause, 2 KiB checkpoint, c=1 (alternating with the next two)", pp(p1), fmt.Sprintf("%.1f × commit (%.1f × the bbolt commit beside it)", p1.P50US/commit, p1.P50US/bolt.P50US), ""},
		{"bbolt commit of the floor's kind, beside", pp(bolt), fmt.Sprintf("%.1f × commit", bolt.P50US/commit), ""},
		{"PostgreSQL commit floor (autocommit UPDATE of one small row), beside", pp(pgCommit), fmt.Sprintf("%.1f × commit", pgCommit.P50US/commit), ""},
		{"pause, 2 KiB checkpoint, c=8", pp(p8), fmt.Sprintf("%.1f × commit", p8.P50US/commit), fmt.Sprintf("%.0f/s", p8.OpsPerS)},
		{"pause, 200 B checkpoint, c=1", pp(small), fmt.Sprintf("%.1f × commit", small.P50US/commit), fmt.Sprintf("%.0f/s", small.OpsPerS)},
		{"pause, 32 KiB checkpoint, c=1", pp(big), fmt.Sprintf("%.1f × commit", big.P50US/commit), fmt.Sprintf("%.0f/s", big.OpsPerS)},
		{"pause adding a 200 B step to ten 3 KiB steps, c=1 (one step row written)", pp(afterSteps), fmt.Sprintf("%.1f × commit (%.2f × the whole write beside it)", afterSteps.P50US/commit, afterSteps.P50US/afterWhole.P50US), ""},
		{"the same pause, checkpoint stored whole (before step rows), alternating", pp(afterWhole), fmt.Sprintf("%.1f × commit", afterWhole.P50US/commit), ""},
		{"list, first page of 50 by owner and status", pp(first), "", ""},
		{"list, next page of 50 by owner and status", pp(second), "", ""},
		{"vmcp serve: exec → /readyz 200", pp(rc), "", ""},
		{fmt.Sprintf("%d deadlines across 3 vmcp replicas: claimed after due", dl.N), pp(dl), "", fmt.Sprintf("max %s", fmtUS(dl.Extra["max_us"]))},
	}
	body := mdTable([]string{"operation (100,000 runs stored)", "p50 / p99", "p50 ÷ one bbolt commit", "rate"}, rows)
	body += fmt.Sprintf("\nPostgreSQL %s on loopback (%s), its own schema; %d runs stored first with COPY (10 owners; waiting, completed, failed, cancelled, 100 running without a holder) in %s. "+
		"*Pause* is the driver's own transition, called in the bench process (`state/postgres` Pause of a running run this replica holds: one transaction, row locked, fencing checked, document, checkpoint and question written; `synchronous_commit` as the server has it), "+
		"the commit vmcp waits for before it delivers a question. One bbolt commit in this run: %s. The 200 B and 32 KiB rows show what the checkpoint's size costs; the two rows of ten steps, measured alternately, what writing only the new step's row (vmcp_steps) saves over writing the whole checkpoint again.\n",
		version, dsnHost(dsn), stored, fillTook.Round(100*time.Millisecond), fmtD(b.floor.commit))
	b.rep.addSection(sc, "Scenario 9: PostgreSQL state driver", body)

	if p1.Valid && bolt.Valid {
		r := p1.P50US / bolt.P50US
		b.rep.target("9 postgres", pgTargets[0].what, pgTargets[0].target, fmt.Sprintf("%s = %.1f × bbolt commit (%s, measured alternately; floor %s)", fmtUS(p1.P50US), r, fmtUS(bolt.P50US), fmtD(b.floor.commit)), ptr(r <= 2),
			fmt.Sprintf("the driver's Pause (2 KiB checkpoint) in the bench process, on a table of 100,000 runs; PostgreSQL's own commit floor beside it: %s", fmtUS(pgCommit.P50US)))
	}
	if p8.Valid {
		b.rep.target("9 postgres", pgTargets[1].what, pgTargets[1].target, fmt.Sprintf("%.0f pauses/s (p50 %s)", p8.OpsPerS, fmtUS(p8.P50US)), ptr(p8.OpsPerS >= 2500),
			fmt.Sprintf("8 concurrent Pause transitions of distinct runs, 2 KiB checkpoints; %d of %d in one round trip (the replica holds the run and wrote its document last: docs/durability.md)", fast8, p8.N))
	}
	if rc.Valid {
		b.rep.target("9 postgres", pgTargets[2].what, pgTargets[2].target, fmtUS(rc.P50US)+" (exec of vmcp serve → /readyz)", ptr(rc.P50US <= 1e6),
			"migrations checked, replica registered, runs without a live holder interrupted, key loaded")
	}
	if first.Valid && second.Valid {
		worst := max(first.P50US, second.P50US)
		b.rep.target("9 postgres", pgTargets[3].what, pgTargets[3].target, fmt.Sprintf("first page %s, next page %s (p50)", fmtUS(first.P50US), fmtUS(second.P50US)), ptr(worst <= 5000),
			"index vmcp_runs_owner_status, keyset cursor")
	}
	if dl.Valid {
		// The replicas run with the default sweep interval (1 s).
		bound := us(postgres.DefaultSweepInterval + time.Second)
		b.rep.target("9 postgres", deadlineTarget.what, deadlineTarget.target,
			fmt.Sprintf("%d on_cancel applications for %d runs (echo calls counted at the backend; one deadline event and the run's own tag in each result); claimed p50 %s, p99 %s, max %s after due", dlCalls, dl.N, fmtUS(dl.P50US), fmtUS(dl.P99US), fmtUS(dl.Extra["max_us"])),
			dlMet(b.quick, dl.N >= 10_000 && dlCalls == int64(dl.N) && dl.Extra["max_us"] <= bound),
			"three vmcp serve replicas (default PostgreSQL settings: sweep every 1 s, 32 continuations at once each); copies of a real paused run stored through the driver, each due 2 s after it was stored, within a 10 s window")
	} else {
		b.rep.target("9 postgres", deadlineTarget.what, deadlineTarget.target, "INVALID: "+dl.Error, ptr(false), "")
	}
	return errors.Join(cellErr(dl), cellErr(p1), cellErr(bolt), cellErr(pgCommit), cellErr(p8), cellErr(afterSteps), cellErr(afterWhole), cellErr(first), cellErr(second), cellErr(rc))
}

// dlMet is the deadline line's status: none in quick mode (2,000 runs,
// not the target's 10,000).
func dlMet(quick, met bool) *bool {
	if quick {
		return nil
	}
	return ptr(met)
}

func cellErr(c Cell) error {
	if c.Valid {
		return nil
	}
	return fmt.Errorf("%s: %s", c.Name, c.Error)
}

func dsnHost(dsn string) string {
	if _, rest, ok := strings.Cut(dsn, "@"); ok {
		h, _, _ := strings.Cut(rest, "/")
		return h
	}
	return "local socket"
}

// fillRuns stores n runs with COPY: copies of a run document, 10 owners,
// each with statuses cycling waiting (deadline in a day), completed, failed,
// cancelled, and 100 running runs without a holder (left by a dead
// replica: a starting replica interrupts them).
func fillRuns(ctx context.Context, st *postgres.Store, n int) error {
	var now time.Time
	if err := st.Pool().QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return err
	}
	fillCheckpoint := []byte(checkpointOf(100))
	statuses := []string{state.StatusWaiting, state.StatusCompleted, state.StatusFailed, state.StatusCancelled}
	rows := make([][]any, n)
	for i := range rows {
		created := now.Add(-time.Duration(n-i) * time.Second).UTC().Truncate(time.Microsecond)
		status := statuses[(i/10)%len(statuses)]
		if i < 100 {
			status = state.StatusRunning
		}
		r := &state.Run{ID: fmt.Sprintf("r_fill%06d", i), Workflow: "deploy", Owner: fmt.Sprintf("owner%d", i%10), Status: status,
			Created: created, Updated: created, FormatVersion: state.FormatVersion, Params: json.RawMessage(`{"tag":"fill"}`),
			History: []state.Event{{At: created, Who: "bench", Kind: state.EventCreated}}}
		var seq any
		var step, deadline, finished any
		switch {
		case status == state.StatusWaiting:
			dl := now.Add(24 * time.Hour).UTC().Truncate(time.Microsecond)
			r.Seq, r.Pending = 1, &state.Question{Step: "approve", Message: "Deploy?", Deadline: dl, Seq: 1}
			seq, step, deadline = int64(1), []byte("approve"), dl
		case state.Finished(status):
			r.Finished, finished = created, created
		}
		if seq == nil {
			seq = int64(0)
		}
		doc, summary, err := state.EncodeDocument(r)
		if err != nil {
			return err
		}
		rows[i] = []any{r.ID, []byte(r.Owner), []byte(r.Workflow), status, seq, step, deadline, doc, summary, fillCheckpoint, created, created, finished}
	}
	if _, err := st.Pool().CopyFrom(ctx, pgx.Identifier{"vmcp_runs"},
		[]string{"id", "owner", "workflow", "status", "seq", "pending_step", "deadline", "doc", "summary", "checkpoint", "created_at", "updated_at", "finished_at"},
		pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	_, err := st.Pool().Exec(ctx, `ANALYZE vmcp_runs`)
	return err
}
