package dsl

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadConfigStateDriver(t *testing.T) {
	l := newTestLoader(t)
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	cfg, ds := l.LoadConfig("c.yaml", []byte(`state:
  driver: postgres
  dsn: ${DSN}
  postgres: {schema: vmcp_a, max_conns: 4, lease_ttl: 6s, heartbeat: 1s, sweep_interval: 500ms, statement_timeout: 3s, token_keys: ["${KEY}"]}
`), env(map[string]string{"DSN": "postgres://vmcp@db/vmcp", "KEY": key}))
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	st := cfg.State
	if st.Driver.Value != DriverPostgres || st.DSN.Value != "postgres://vmcp@db/vmcp" || st.Path.Value != "" ||
		st.Postgres.Schema.Value != "vmcp_a" || st.Postgres.MaxConns.Value != 4 || st.Postgres.LeaseTTL.Value != 6*time.Second ||
		st.Postgres.SweepInterval.Value != 500*time.Millisecond || len(st.Postgres.TokenKeys) != 1 {
		t.Fatalf("state: %+v", st)
	}
	if k, err := DecodeTokenKey(st.Postgres.TokenKeys[0].Value); err != nil || k[31] != 31 {
		t.Fatalf("token key: %v %v", k, err)
	}
	cfg, ds = l.LoadConfig("c.yaml", []byte("backends: []\n"), env(nil))
	if len(ds) > 0 || cfg.State.Driver.Value != DriverBbolt || cfg.State.Path.Value != DefaultStatePath {
		t.Fatalf("defaults: %+v %v", cfg.State, ds)
	}

	tests := []struct {
		name, src string
		want      []string
	}{
		{"postgres without dsn", "state: {driver: postgres}\n",
			[]string{`c.yaml:1:17: state.driver is postgres but state.dsn is not set: give the PostgreSQL connection string (e.g. dsn: ${VMCP_STATE_DSN})`}},
		{"unknown driver", "state: {driver: sqlite}\n",
			[]string{`c.yaml:1:17: "state.driver" must be one of bbolt, postgres, got "sqlite"`}},
		{"dsn with bbolt", "state: {dsn: 'postgres://x'}\n",
			[]string{`c.yaml:1:14: state.dsn is set but state.driver is "bbolt": dsn is for driver postgres (set driver: postgres, or remove dsn)`}},
		{"path with postgres", "state: {driver: postgres, dsn: 'postgres://x', path: a.db}\n",
			[]string{`c.yaml:1:54: state.path is for driver bbolt; with driver postgres the runs are in the database (remove path)`}},
		{"postgres block with bbolt", "state: {postgres: {schema: x}}\n",
			[]string{`c.yaml:1:19: state.postgres is set but state.driver is "bbolt": the postgres settings need driver: postgres`}},
		{"unknown postgres key", "state: {driver: postgres, dsn: 'postgres://x', postgres: {lease: 5s}}\n",
			[]string{`c.yaml:1:59: unknown key "lease" in "state.postgres"; did you mean "lease_ttl"?`}},
		{"heartbeat over a third of the lease", "state: {driver: postgres, dsn: 'postgres://x', postgres: {lease_ttl: 2s, heartbeat: 2s}}\n",
			[]string{`c.yaml:1:85: state.postgres.heartbeat 2s must be at most a third of lease_ttl 2s (a replica stops calling backends when its last heartbeat is half a lease old)`}},
		{"short token key", "state: {driver: postgres, dsn: 'postgres://x', postgres: {token_keys: [AAEC]}}\n",
			[]string{`c.yaml:1:72: state.postgres.token_keys[0]: decodes to 3 bytes, want 32 (generate one with: head -c 32 /dev/urandom | base64)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ds := l.LoadConfig("c.yaml", []byte(tt.src), env(nil))
			if diff := cmp.Diff(tt.want, diagStrings(ds)); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s", diff)
			}
		})
	}
}
