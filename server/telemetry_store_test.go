package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
	"github.com/vmcp-dev/vmcp/telemetry"
)

// A run held by a replica that stopped is taken over when another starts
// on the same PostgreSQL schema: one run.taken_over line naming the dead
// replica, then one run.interrupted, both after the commit; the takeover
// is counted in vmcp_state_takeovers_total{driver="postgres"} and the
// commit in vmcp_state_commit_seconds{op="recover"}.
func TestAuditTakeoverPostgres(t *testing.T) {
	if os.Getenv(statetest.DSNEnv) == "" && os.Getenv("CI") != "true" {
		t.Skipf("%s is not set (source /tmp/pg_env); in CI this test runs", statetest.DSNEnv)
	}
	dsn := statetest.PostgresDSN(t)
	schema := statetest.SchemaName(t)
	dead, err := postgres.Open(t.Context(), dsn, &postgres.Options{Schema: schema, ReplicaID: "replica-gone", SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	r := statetest.NewRun("alice", "deploy")
	if err := dead.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := dead.Checkpoint(t.Context(), r.ID, json.RawMessage(`{"version":1}`), []string{"call_api"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = dead.Pool().Exec(t.Context(), `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
		_ = dead.Close()
	})
	// The replica stops without releasing its run (its row goes, the run
	// keeps naming it as holder).
	if _, err := dead.Pool().Exec(t.Context(), `DELETE FROM `+schema+`.vmcp_replicas WHERE id = 'replica-gone'`); err != nil {
		t.Fatal(err)
	}

	tel, audit := fullTelemetry(t)
	echo := newMetaBackend(t)
	cfg := observedConfig(t, echo.url, false)
	cfg.State.Driver.Value = "postgres"
	cfg.State.DSN.Value = dsn
	cfg.State.Postgres.Schema.Value = schema
	g, url := startObserved(t, cfg, filepath.Join(t.TempDir(), "unused.db"), tel)

	var took, interrupted []map[string]any
	for _, l := range audit.lines() {
		switch l["event"] {
		case telemetry.AuditRunTakenOver:
			took = append(took, l)
		case telemetry.AuditRunInterrupted:
			interrupted = append(interrupted, l)
		}
	}
	if len(took) != 1 || len(interrupted) != 1 {
		t.Fatalf("%d run.taken_over and %d run.interrupted lines, want 1 each:\n%s", len(took), len(interrupted), audit.String())
	}
	d, _ := took[0]["detail"].(map[string]any)
	tg, _ := took[0]["target"].(map[string]any)
	if tg["run"] != r.ID || d["from_replica"] != "replica-gone" || d["replica"] != storeReplica(g.runs.base) || d["replica"] == "" {
		t.Errorf("run.taken_over: %v", took[0])
	}
	// The telemetry wrapper must not hide the driver's optional
	// capabilities: shared sessions, release and lease lapses.
	if _, wrapped := g.runs.store.(*observedStore); !wrapped {
		t.Error("the state driver is not timed by telemetry (observedStore)")
	}
	if g.sess.shared() == nil {
		t.Error("sessions are not shared through PostgreSQL when telemetry is on")
	}
	if _, ok := g.runs.base.(releaser); !ok {
		t.Error("the driver's Release is hidden from the takeover code when telemetry is on")
	}
	if _, ok := g.runs.base.(lapser); !ok {
		t.Error("the driver's lease lapses are hidden from the takeover code when telemetry is on")
	}
	if run, err := g.runs.store.Get(t.Context(), r.ID); err != nil || run.Status != state.StatusInterrupted {
		t.Errorf("the run after the takeover: %v %v", run, err)
	}
	fams := scrape(t, url)
	var n float64
	for _, m := range fams["vmcp_state_takeovers_total"].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == "driver" && l.GetValue() == "postgres" {
				n += m.GetCounter().GetValue()
			}
		}
	}
	if n != 1 {
		t.Errorf("vmcp_state_takeovers_total{driver=\"postgres\"} = %v, want 1", n)
	}
	if ms := fams["vmcp_replicas"].GetMetric(); len(ms) != 1 || ms[0].GetGauge().GetValue() != 1 {
		t.Errorf("vmcp_replicas: %v, want one series = 1 (this replica; the dead one's row is gone)", ms)
	}
	recovered := false
	for _, m := range fams["vmcp_state_commit_seconds"].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == "op" && l.GetValue() == "recover" {
				recovered = true
			}
		}
	}
	if !recovered {
		t.Error("no vmcp_state_commit_seconds{op=\"recover\"} series")
	}
}
