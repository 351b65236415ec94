package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

// postgresState is the state block of replicas sharing one PostgreSQL
// schema of the test's own (dropped at the end).
func postgresState(t *testing.T, lease, replicaID string) string {
	t.Helper()
	cfg, _, _ := postgresStateSchema(t, lease, replicaID)
	return cfg
}

// postgresStateSchema is postgresState that also returns the DSN and the
// schema, for a test that opens the store itself.
func postgresStateSchema(t *testing.T, lease, replicaID string) (cfg, dsn, schema string) {
	t.Helper()
	dsn = statetest.PostgresDSN(t)
	schema = statetest.SchemaName(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			_, _ = conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
			_ = conn.Close(ctx)
		}
	})
	id := ""
	if replicaID != "" {
		id = ", replica_id: " + replicaID
	}
	return fmt.Sprintf("state:\n  driver: postgres\n  dsn: %q\n  postgres: {schema: %s, lease_ttl: %s, heartbeat: 200ms, sweep_interval: 200ms, max_conns: 4%s}\n", dsn, schema, lease, id), dsn, schema
}

// Two vmcp replicas on one PostgreSQL: a run paused on A is listed,
// answered and finished through B; when A is killed mid-step, B takes
// A's running run over after the lease (its in-flight step is read-only:
// B runs it again and completes the run) and A's paused runs stay
// answerable through B. (Double answers: TestPostgresDoubleAnswer.)
func TestPostgresReplicas(t *testing.T) {
	slow := newSlowBackend(t)
	cfg, _ := durableSetup(t, slow.url, slowWorkflows)
	cfg += postgresState(t, "2s", "")
	a, b := startVMCP(t, cfg), startVMCP(t, cfg)
	ca, cb := connect(t, a.URL, legacy, false), connect(t, b.URL, legacy, false)
	// /status lists the live replicas sharing the store, itself marked.
	if st := a.status(t); len(st.Replicas) != 2 || !st.Replicas[0].Live || !st.Replicas[1].Live || st.Replicas[0].Self == st.Replicas[1].Self {
		t.Errorf("/status of A: replicas %+v, want two live ones, one of them A itself", st.Replicas)
	}

	id := startPaused(t, ca)
	if _, ok := listRuns(t, cb, state.StatusWaiting, "investigate_incident")[id]; !ok {
		t.Fatalf("replica B does not list run %s paused on A", id)
	}
	code, body := apiDo(t, b, "", http.MethodPost, "/api/v1/runs/"+id+"/resume", `{"action":"accept","content":{"page":false}}`)
	if code != http.StatusOK {
		t.Fatalf("answer on B: %d %s", code, body)
	}
	completedWithTicket(t, a, id) // A sees what B did

	// Kill A with one run paused and one mid-step.
	paused := startPaused(t, ca)
	slow.hold.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		req := mcp.CallToolRequest{}
		req.Params.Name = "wf_read"
		req.Params.Arguments = json.RawMessage(`{"tag":"pg-1"}`)
		_, _ = connect(t, a.URL, legacy, false).CallTool(ctx, req)
	}()
	eventually(t, 30*time.Second, "the mid-step call to reach the slow backend", func() bool { return slow.inflight.Load() == 1 })
	time.Sleep(300 * time.Millisecond)
	running := listRuns(t, cb, state.StatusRunning, "wf_read")
	if len(running) != 1 {
		t.Fatalf("B lists %d running wf_read runs, want 1", len(running))
	}
	killed := time.Now()
	a.kill()
	<-done
	slow.hold.Store(false)
	var orphan string
	for id := range running {
		orphan = id
	}
	// B's sweep interrupts it after the lease and, its in-flight step
	// being read-only, B continues it at once: the step runs once more.
	eventually(t, 2*time.Second+200*time.Millisecond+5*time.Second, "B to take over A's running run", func() bool {
		return apiRun(t, b, orphan).Status == state.StatusCompleted
	})
	t.Logf("A's running run taken over and completed on B %v after the kill (lease 2s, sweep 200ms)", time.Since(killed).Round(10*time.Millisecond))
	v := completedWithTicket(t, b, orphan)
	if k := v.kinds(); k[state.EventInterrupted] != 1 || k[state.EventResumed] != 1 {
		t.Errorf("taken-over run %s: %s", orphan, v.historyString())
	}
	if n := slow.count("read", "pg-1"); n != 2 {
		t.Errorf("the read-only step ran %d times, want 2 (once on A, once more on B)", n)
	}
	code, body = apiDo(t, b, "", http.MethodPost, "/api/v1/runs/"+paused+"/resume", `{"action":"accept","content":{"page":false}}`)
	if code != http.StatusOK {
		t.Fatalf("answer on B of a run paused on the killed A: %d %s", code, body)
	}
	completedWithTicket(t, b, paused)
}

// durableDriver is the state driver durableSetup configures ("" is the
// default, bbolt). The e2e tests never run in parallel, so a test may
// switch it for the tests it calls.
var durableDriver string

// TestPostgresParity runs the durable-pause tests with driver: postgres
// (one replica with a stable replica_id, so a restart interrupts what the
// killed process was executing at once): every surface, the next
// question, tokens, deadlines that passed while vmcp was down, SIGKILL and
// restart. (TestDurableStartupManyRuns writes the bbolt file directly.)
func TestPostgresParity(t *testing.T) {
	durableDriver = "postgres"
	defer func() { durableDriver = "" }()
	for name, test := range map[string]func(*testing.T){
		"SameRunEverySurface": TestSameRunEverySurface,
		"SurfaceNextQuestion": TestSurfaceNextQuestion,
		"Tokens":              TestTokens,
		"DeadlineWhileDown":   TestDeadlineWhileDown,
		"KillAndRestart":      TestKillAndRestart,
		"KillAtCallArrival":   TestKillAtCallArrival,
	} {
		t.Run(name, test)
	}
}

// checkPostgresState is checkStateFile for a vmcp on PostgreSQL: it opens
// the schema of p's config (as another replica) and hands it to fn.
func checkPostgresState(t *testing.T, p *proc, fn func(state.Driver)) {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(p.dir, "vmcp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`schema: ([a-z0-9_]+),`).FindSubmatch(cfg)
	if m == nil {
		t.Fatalf("no PostgreSQL schema in %s", cfg)
	}
	st, err := postgres.Open(t.Context(), statetest.PostgresDSN(t), &postgres.Options{Schema: string(m[1]), SweepInterval: -1})
	if err != nil {
		t.Fatalf("opening the PostgreSQL state after the stop: %v", err)
	}
	defer st.Close()
	if fn != nil {
		fn(st)
	}
}
