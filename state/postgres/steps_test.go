package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

// stepRow is one vmcp_steps row as the database has it: xmin is the
// transaction that wrote this version of the row, so a row rewritten
// (even with the same bytes) gets a new one.
type stepRow struct {
	xmin   uint32
	epoch  int64
	output string
}

func stepRows(t *testing.T, s *postgres.Store, id string) map[string]stepRow {
	t.Helper()
	rows, err := s.Pool().Query(t.Context(), `SELECT step, xmin::text::bigint, epoch, output FROM vmcp_steps WHERE run_id = $1`, id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]stepRow{}
	for rows.Next() {
		var step string
		var xmin int64
		var r stepRow
		var b []byte
		if err := rows.Scan(&step, &xmin, &r.epoch, &b); err != nil {
			t.Fatal(err)
		}
		r.xmin, r.output = uint32(xmin), string(b)
		out[step] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// rewritten lists the steps whose rows differ between two snapshots
// (written again, added or removed).
func rewritten(before, after map[string]stepRow) []string {
	var out []string
	for id, a := range after {
		if b, ok := before[id]; !ok || b != a {
			out = append(out, id)
		}
	}
	for id := range before {
		if _, ok := after[id]; !ok {
			out = append(out, "-"+id)
		}
	}
	return out
}

// bigSteps are n steps of size bytes each.
func bigSteps(n, size int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("step_%02d", i)] = statetest.StepState(i, size)
	}
	return m
}

// A checkpoint that adds one step to a run with ten 3 KiB steps writes one
// step row, on the replica that created the run and on one that claimed
// it from a pause; a change and a removal write those rows only.
func TestCheckpointWritesOnlyChangedSteps(t *testing.T) {
	dsn, o := freshSchema(t)
	a, b := replica(t, dsn, *o), replica(t, dsn, *o)
	ctx := t.Context()
	steps := bigSteps(10, 3<<10)
	r := statetest.NewRun("alice", "deploy")
	r.Checkpoint = statetest.Checkpoint(steps, "")
	if err := a.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	before := stepRows(t, a, r.ID)
	if len(before) != 10 {
		t.Fatalf("%d step rows after create, want 10", len(before))
	}
	var skeleton []byte
	if err := a.Pool().QueryRow(ctx, `SELECT checkpoint FROM vmcp_runs WHERE id = $1`, r.ID).Scan(&skeleton); err != nil || len(skeleton) > 200 {
		t.Fatalf("the run row keeps %d bytes of checkpoint (%v), want the steps out of it: %s", len(skeleton), err, skeleton)
	}
	step := func(s *postgres.Store, what string, write func() error, want ...string) {
		t.Helper()
		n := s.StepWrites()
		if err := write(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		after := stepRows(t, s, r.ID)
		got := rewritten(before, after)
		if fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(want)) {
			t.Fatalf("%s: rows written %v, want %v", what, got, want)
		}
		if sent := s.StepWrites() - n; sent != uint64(len(want)) {
			t.Fatalf("%s: %d step rows sent, want %d", what, sent, len(want))
		}
		before = after
		if got, err := s.Get(ctx, r.ID); err != nil || string(got.Checkpoint) != string(statetest.Checkpoint(steps, "")) {
			t.Fatalf("%s: checkpoint read back differs (%v)", what, err)
		}
	}
	steps["step_10"] = statetest.StepState(10, 200)
	step(a, "checkpoint adding a step", func() error {
		return a.Checkpoint(ctx, r.ID, statetest.Checkpoint(steps, ""), []string{"step_11"})
	}, "step_10")
	steps["step_11"] = statetest.StepState(11, 200)
	var seq uint64
	step(a, "pause adding a step", func() (err error) {
		seq, err = a.Pause(ctx, r.ID, statetest.Checkpoint(steps, ""), state.Question{Step: "approve", Message: "ok?"})
		return err
	}, "step_11")
	step(a, "pause without a checkpoint", func() error { return nil })
	// Replica B answers: it read the steps under the claim and knows them.
	if _, err := b.Claim(ctx, r.ID, "approve", seq, "bob", json.RawMessage(`{"action":"accept"}`)); err != nil {
		t.Fatal(err)
	}
	steps["approve"] = `{"status":"completed","action":"accept","content":{}}`
	step(b, "checkpoint on the replica that claimed it", func() error {
		return b.Checkpoint(ctx, r.ID, statetest.Checkpoint(steps, ""), nil)
	}, "approve")
	steps["step_03"] = `{"status":"failed","error":"retried"}`
	delete(steps, "step_07")
	step(b, "a step changed and one removed", func() error {
		return b.Checkpoint(ctx, r.ID, statetest.Checkpoint(steps, ""), nil)
	}, "step_03", "-step_07")
	step(b, "the same checkpoint again", func() error {
		return b.Checkpoint(ctx, r.ID, statetest.Checkpoint(steps, ""), nil)
	})
	step(b, "history only", func() error {
		return b.AppendHistory(ctx, r.ID, state.Event{Kind: "note"})
	})
	steps["step_12"] = statetest.StepState(12, 10)
	step(b, "checkpoint after the history event", func() error {
		return b.Checkpoint(ctx, r.ID, statetest.Checkpoint(steps, ""), nil)
	}, "step_12")
	if err := b.Finish(ctx, r.ID, state.StatusCompleted, nil, ""); err != nil {
		t.Fatal(err)
	}
	// Pruned with its run.
	if n, err := b.Prune(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("prune: %d, %v", n, err)
	}
	if rows := stepRows(t, b, r.ID); len(rows) != 0 {
		t.Fatalf("%d step rows left after the run was pruned", len(rows))
	}
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

// A replica that does not know what is stored (it pauses a run another
// replica was running) sends every step, but the rows whose bytes did not
// change are not written again.
func TestUnknownStepsAreNotRewritten(t *testing.T) {
	dsn, o := freshSchema(t)
	a, b := replica(t, dsn, *o), replica(t, dsn, *o)
	ctx := t.Context()
	steps := bigSteps(10, 3<<10)
	r := statetest.NewRun("alice", "deploy")
	r.Checkpoint = statetest.Checkpoint(steps, "")
	if err := a.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	epoch, _ := a.HeldEpoch(r.ID)
	if err := a.Release(ctx, r.ID, epoch); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Recover(ctx); err != nil || len(n) != 1 {
		t.Fatalf("recover: %v, %v", n, err)
	}
	before := stepRows(t, b, r.ID)
	steps["step_10"] = statetest.StepState(10, 200)
	n := b.StepWrites()
	if _, err := b.Pause(ctx, r.ID, statetest.Checkpoint(steps, ""), state.Question{Step: "approve"}); err != nil {
		t.Fatal(err)
	}
	after := stepRows(t, b, r.ID)
	if got := rewritten(before, after); fmt.Sprint(got) != "[step_10]" {
		t.Fatalf("rows written %v, want [step_10]", got)
	}
	if sent := b.StepWrites() - n; sent != 11 {
		t.Fatalf("%d steps sent, want all 11 (B never read them)", sent)
	}
	if after["step_10"].epoch != 2 || after["step_00"].epoch != 1 {
		t.Fatalf("epochs: new step %d, old step %d; want 2 and 1", after["step_10"].epoch, after["step_00"].epoch)
	}
	if got, err := a.Get(ctx, r.ID); err != nil || string(got.Checkpoint) != string(statetest.Checkpoint(steps, "")) {
		t.Fatalf("checkpoint read back on A differs (%v)", err)
	}
}

// A fenced replica's checkpoint or pause changes no step row.
func TestFencedWriteChangesNoStepRow(t *testing.T) {
	dsn, o := freshSchema(t)
	o.LeaseTTL, o.Heartbeat = time.Hour, 20*time.Minute // no heartbeat during the test
	a, b := replica(t, dsn, *o), replica(t, dsn, *o)
	ctx := t.Context()
	steps := bigSteps(5, 100)
	r := statetest.NewRun("alice", "deploy")
	r.Checkpoint = statetest.Checkpoint(steps, "")
	if err := a.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Pool().Exec(ctx, `UPDATE vmcp_replicas SET expires_at = now() - interval '1 second' WHERE id = $1`, a.ReplicaID()); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Recover(ctx); err != nil || len(n) != 1 {
		t.Fatalf("takeover: %v, %v", n, err)
	}
	if _, err := b.Resume(ctx, r.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	before := stepRows(t, b, r.ID)
	late := maps.Clone(steps)
	late["step_01"] = `{"status":"failed","error":"late"}`
	late["step_09"] = `{"status":"completed"}`
	delete(late, "step_02")
	for name, write := range map[string]func() error{
		"checkpoint": func() error { return a.Checkpoint(ctx, r.ID, statetest.Checkpoint(late, ""), nil) },
		"pause": func() error {
			_, err := a.Pause(ctx, r.ID, statetest.Checkpoint(late, ""), state.Question{Step: "x"})
			return err
		},
	} {
		if err := write(); !errors.Is(err, state.ErrFenced) {
			t.Fatalf("%s by the old holder: %v", name, err)
		}
		if got := rewritten(before, stepRows(t, b, r.ID)); len(got) != 0 {
			t.Fatalf("fenced %s changed step rows %v", name, got)
		}
	}
	if got, err := b.Get(ctx, r.ID); err != nil || string(got.Checkpoint) != string(statetest.Checkpoint(steps, "")) {
		t.Fatalf("checkpoint after fenced writes differs (%v)", err)
	}
}

// Runs written before migration 4 keep their whole checkpoint in the run
// row: they read as before, and their next checkpoint is split.
func TestCheckpointFromBeforeStepRows(t *testing.T) {
	dsn, o := freshSchema(t)
	ctx := t.Context()
	if err := postgres.Migrate(ctx, dsn, o.Schema, false); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sch := pgx.Identifier{o.Schema}.Sanitize()
	// Back to version 3, as an older vmcp left it.
	for _, q := range []string{`DROP TABLE ` + sch + `.vmcp_steps`, `ALTER TABLE ` + sch + `.vmcp_runs DROP COLUMN steps_at`,
		`DELETE FROM ` + sch + `.vmcp_migrations WHERE version = 4`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	steps := bigSteps(4, 500)
	whole := statetest.Checkpoint(steps, "")
	now := time.Now().UTC().Truncate(time.Microsecond)
	r := &state.Run{ID: "r_0000000000000000000old", Workflow: "deploy", Owner: "alice", Status: state.StatusRunning,
		Created: now, Updated: now, FormatVersion: state.FormatVersion, Params: json.RawMessage(`{}`),
		History: []state.Event{{At: now, Who: "alice", Kind: state.EventCreated}}}
	doc, summary, err := state.EncodeDocument(r)
	if err != nil {
		t.Fatal(err)
	}
	// The INSERT of migration 3's driver.
	if _, err := conn.Exec(ctx, `INSERT INTO `+sch+`.vmcp_runs (id, owner, workflow, status, seq, epoch, holder, doc, summary, checkpoint, created_at, updated_at)
		VALUES ($1, $2, $3, 'running', 0, 1, NULL, $4, $5, $6, $7, $7)`, r.ID, []byte(r.Owner), []byte(r.Workflow), doc, summary, []byte(whole), now); err != nil {
		t.Fatal(err)
	}
	s := replica(t, dsn, *o) // migrates to 4
	got, err := s.Get(ctx, r.ID)
	if err != nil || string(got.Checkpoint) != string(whole) {
		t.Fatalf("old run read back: %v\n%s", err, got.Checkpoint)
	}
	if _, err := s.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	run, err := s.Resume(ctx, r.ID, "alice")
	if err != nil || string(run.Checkpoint) != string(whole) {
		t.Fatalf("old run resumed: %v\n%s", err, run.Checkpoint)
	}
	if rows := stepRows(t, s, r.ID); len(rows) != 0 {
		t.Fatalf("%d step rows before the first checkpoint", len(rows))
	}
	steps["step_04"] = statetest.StepState(4, 10)
	next := statetest.Checkpoint(steps, "")
	if err := s.Checkpoint(ctx, r.ID, next, nil); err != nil {
		t.Fatal(err)
	}
	if rows := stepRows(t, s, r.ID); len(rows) != 5 {
		t.Fatalf("%d step rows after the first checkpoint, want 5", len(rows))
	}
	if got, err := s.Get(ctx, r.ID); err != nil || string(got.Checkpoint) != string(next) {
		t.Fatalf("split checkpoint read back: %v\n%s", err, got.Checkpoint)
	}
	// And back to whole: the rows go.
	odd := json.RawMessage(`{"steps":{"b":1,"a":1}}`) // unsorted
	if err := s.Checkpoint(ctx, r.ID, odd, nil); err != nil {
		t.Fatal(err)
	}
	if rows := stepRows(t, s, r.ID); len(rows) != 0 {
		t.Fatalf("%d step rows left under a checkpoint stored whole", len(rows))
	}
	if got, err := s.Get(ctx, r.ID); err != nil || string(got.Checkpoint) != string(odd) {
		t.Fatalf("whole checkpoint read back: %v\n%s", err, got.Checkpoint)
	}
}

// With the default threshold, a run's checkpoint stays whole in its row
// while its steps are small, moves to step rows once they take more than
// DefaultStepRowsAbove bytes, and reads back byte for byte both ways.
func TestStepRowsAboveThreshold(t *testing.T) {
	dsn, o := freshSchema(t)
	o.StepRowsAbove = 0 // the default
	s := open(t, dsn, o)
	ctx := t.Context()
	steps := bigSteps(2, 1<<10)
	r := statetest.NewRun("alice", "deploy")
	r.Checkpoint = statetest.Checkpoint(steps, "")
	if err := s.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	check := func(what string, wantRows int) {
		t.Helper()
		if n := len(stepRows(t, s, r.ID)); n != wantRows {
			t.Fatalf("%s: %d step rows, want %d", what, n, wantRows)
		}
		got, err := s.Get(ctx, r.ID)
		if err != nil || string(got.Checkpoint) != string(statetest.Checkpoint(steps, "")) {
			t.Fatalf("%s: checkpoint read back differs (%v)", what, err)
		}
	}
	check("two 1 KiB steps", 0)
	for i := 2; i < 12; i++ {
		steps[fmt.Sprintf("step_%02d", i)] = statetest.StepState(i, 1<<10)
	}
	if err := s.Checkpoint(ctx, r.ID, statetest.Checkpoint(steps, ""), nil); err != nil {
		t.Fatal(err)
	}
	check("twelve 1 KiB steps", 12)
	n := s.StepWrites()
	steps["step_12"] = statetest.StepState(12, 100)
	if err := s.Checkpoint(ctx, r.ID, statetest.Checkpoint(steps, ""), nil); err != nil {
		t.Fatal(err)
	}
	check("a step added", 13)
	if sent := s.StepWrites() - n; sent != 1 {
		t.Fatalf("%d step rows sent for one new step", sent)
	}
}
