package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

func TestMain(m *testing.M) { statetest.PostgresMain(m) }

func TestStateMigrateAndCopy(t *testing.T) {
	dsn := statetest.PostgresDSN(t)
	schema := statetest.SchemaName(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			_, _ = conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
			_ = conn.Close(ctx)
		}
	})
	out, _ := mustCLI(t, exitOK, "", "state", "migrate", "--dsn", dsn, "--schema", schema)
	if !strings.Contains(out, fmt.Sprintf("is at version %d", postgres.SchemaVersion())) {
		t.Fatalf("migrate: %s", out)
	}
	mustCLI(t, exitOK, "", "state", "migrate", "--dsn", dsn, "--schema", schema) // again: nothing to do

	// A bbolt file with runs in every status.
	path := filepath.Join(t.TempDir(), "state.db")
	src, err := state.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const n = 60
	for i := range n {
		r := statetest.NewRun("alice", "deploy")
		r.Params = json.RawMessage(`{"i":` + strings.Repeat("1", i%5+1) + `,"x":1.50}`)
		if err := src.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 1:
			cp := json.RawMessage(`{"cp":` + strings.Repeat("2", i%4+1) + `}`)
			if i%2 == 1 { // the engine's form, over 8 KiB of steps: stored as step rows in PostgreSQL
				cp = statetest.Checkpoint(map[string]string{"a": statetest.StepState(i, 9<<10), "b": `{"status":"completed","output":1.0}`}, "")
			}
			if _, err := src.Pause(ctx, r.ID, cp, state.Question{Step: "ok", Message: "ok?", Deadline: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
		case 2:
			if err := src.Finish(ctx, r.ID, state.StatusCompleted, json.RawMessage(`{"done":true}`), ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	key, _ := src.Key(ctx)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	out, _ = mustCLI(t, exitOK, "", "state", "copy", "--from", "bbolt:"+path, "--to", "postgres:"+dsn, "--schema", schema)
	if !strings.Contains(out, "copied 60 runs (0 already there)") || !strings.Contains(out, "verified: counts and checksums are equal") {
		t.Fatalf("copy: %s", out)
	}
	// Again: everything is there already, nothing is overwritten.
	out, _ = mustCLI(t, exitOK, "", "state", "copy", "--from", "bbolt:"+path, "--to", "postgres:"+dsn, "--schema", schema)
	if !strings.Contains(out, "copied 0 runs (60 already there)") {
		t.Fatalf("second copy: %s", out)
	}
	dst, err := postgres.Open(ctx, dsn, &postgres.Options{Schema: schema, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	// The checksums cover the step rows: one byte changed in one of them
	// and the copy refuses that run.
	var steps int
	if err := dst.Pool().QueryRow(ctx, `SELECT count(*) FROM vmcp_steps`).Scan(&steps); err != nil || steps != 2*10 {
		t.Fatalf("%d step rows (%v), want 20 (10 paused runs with 2 steps)", steps, err)
	}
	if _, err := dst.Pool().Exec(ctx, `UPDATE vmcp_steps SET output = convert_to(replace(convert_from(output, 'UTF8'), '1.0', '1.5'), 'UTF8')
		WHERE (run_id, step) IN (SELECT run_id, step FROM vmcp_steps WHERE step = 'b' LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	_, errs := mustCLI(t, exitFailure, "", "state", "copy", "--from", "bbolt:"+path, "--to", "postgres:"+dsn, "--schema", schema)
	if !strings.Contains(errs, "already in the database with other contents") {
		t.Fatalf("copy over a changed step row: %s", errs)
	}
	if _, err := dst.Pool().Exec(ctx, `UPDATE vmcp_steps SET output = convert_to(replace(convert_from(output, 'UTF8'), '1.5', '1.0'), 'UTF8') WHERE step = 'b'`); err != nil {
		t.Fatal(err)
	}
	if k, err := dst.Key(ctx); err != nil || string(k) != string(key) {
		t.Fatalf("token key not copied: %v", err)
	}
	waiting, _, err := dst.List(ctx, state.Filter{Status: state.StatusWaiting, Limit: 1000})
	if err != nil || len(waiting) != n/3 {
		t.Fatalf("%d waiting runs in PostgreSQL, %v", len(waiting), err)
	}
	if _, err := dst.Claim(ctx, waiting[0].ID, "ok", 1, "bob", json.RawMessage(`{}`)); err != nil {
		t.Fatalf("answering a copied run: %v", err)
	}

	_, errs = mustCLI(t, exitUsage, "", "state", "copy", "--from", path, "--to", "postgres:"+dsn)
	if !strings.Contains(errs, `--from must be bbolt:PATH`) {
		t.Fatalf("bad --from: %s", errs)
	}
	_, errs = mustCLI(t, exitUsage, "", "state", "migrate", "--dsn", "")
	if !strings.Contains(errs, "--dsn is required") {
		t.Fatalf("no dsn: %s", errs)
	}
}
