package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

func replica(t *testing.T, dsn string, o postgres.Options) *postgres.Store {
	t.Helper()
	s := open(t, dsn, &o)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func pausedRun(t *testing.T, s state.Driver, deadline time.Time) *state.Run {
	t.Helper()
	r := statetest.NewRun("alice", "deploy")
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(t.Context(), r.ID, nil, state.Question{Step: "approve", Message: "ok?", Deadline: deadline}); err != nil {
		t.Fatal(err)
	}
	return r
}

// A replica whose lease expired is taken over by another's sweep; its late
// writes are fenced, whatever the run's status by then.
func TestTakeoverFencesTheOldHolder(t *testing.T) {
	dsn, o := freshSchema(t)
	o.LeaseTTL, o.Heartbeat = time.Hour, 20*time.Minute // no heartbeat during the test
	a, b := replica(t, dsn, *o), replica(t, dsn, *o)
	ctx := t.Context()
	waitListening(t, a)
	hints := a.Changes(ctx) // A hears what B's takeover did (NOTIFY)
	r := statetest.NewRun("alice", "deploy")
	if err := a.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := a.Checkpoint(ctx, r.ID, json.RawMessage(`{"n":1}`), []string{"s1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Checkpoint(ctx, r.ID, json.RawMessage(`{"n":1}`), nil); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("checkpoint by a replica that does not hold the run: %v", err)
	}
	if n, err := b.Recover(ctx); err != nil || len(n) != 0 {
		t.Fatalf("recover while the holder is live: %d, %v", len(n), err)
	}
	// A's lease lapses (as if it stopped heartbeating an hour ago).
	if _, err := b.Pool().Exec(ctx, `UPDATE vmcp_replicas SET expires_at = now() - interval '1 second' WHERE id = $1`, a.ReplicaID()); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Recover(ctx); err != nil || len(n) != 1 || n[0].ID != r.ID || n[0].Holder != a.ReplicaID() || n[0].Workflow != r.Workflow {
		t.Fatalf("recover after the lease expired: %+v, %v (want run %s taken from replica %s)", n, err, r.ID, a.ReplicaID())
	}
	// The takeover is a change like any other: waiters on every replica
	// are told (before, they saw it only at their 5 s re-read).
	expectHint(t, hints, state.Change{RunID: r.ID, Status: state.StatusInterrupted})
	for name, write := range map[string]func() error{
		"checkpoint": func() error { return a.Checkpoint(ctx, r.ID, json.RawMessage(`{"n":2}`), nil) },
		"finish":     func() error { return a.Finish(ctx, r.ID, state.StatusCompleted, nil, "") },
		"pause": func() error {
			_, err := a.Pause(ctx, r.ID, nil, state.Question{Step: "x"})
			return err
		},
	} {
		err := write()
		if !errors.Is(err, state.ErrFenced) || !strings.Contains(err.Error(), "epoch") {
			t.Fatalf("%s by the fenced replica: %v", name, err)
		}
	}
	got, _ := b.Get(ctx, r.ID)
	if got.Status != state.StatusInterrupted || string(got.Checkpoint) != `{"n":1}` {
		t.Fatalf("after fenced writes: %s %s", got.Status, got.Checkpoint)
	}
	if _, err := b.Resume(ctx, r.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := a.Checkpoint(ctx, r.ID, json.RawMessage(`{"n":3}`), nil); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("old holder after the resume elsewhere: %v", err)
	}
	if err := b.Finish(ctx, r.ID, state.StatusCompleted, json.RawMessage(`{"ok":true}`), ""); err != nil {
		t.Fatal(err)
	}
}

// A replica that dies (no more heartbeats, its row left behind) has its
// running runs interrupted by another replica's sweep after the lease.
func TestSweepTakesOverACrashedReplica(t *testing.T) {
	dsn, o := freshSchema(t)
	ao := *o
	ao.LeaseTTL, ao.Heartbeat = time.Second, 200*time.Millisecond
	a := open(t, dsn, &ao)
	ctx := t.Context()
	var ids []string
	for range 20 {
		r := statetest.NewRun("alice", "deploy")
		if err := a.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	waiting := pausedRun(t, a, time.Time{})
	a.Crash()
	bo := *o
	bo.SweepInterval = 100 * time.Millisecond
	b := replica(t, dsn, bo)
	deadline := time.Now().Add(ao.LeaseTTL + bo.SweepInterval + 5*time.Second)
	for {
		l, _, err := b.List(ctx, state.Filter{Status: state.StatusInterrupted, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(l) == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d runs interrupted", len(l), len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range ids {
		if n := statetest.CountEvents(t, b, id, state.EventInterrupted); n != 1 {
			t.Fatalf("run %s interrupted %d times", id, n)
		}
	}
	if _, err := b.Claim(ctx, waiting.ID, "approve", 1, "bob", json.RawMessage(`{}`)); err != nil {
		t.Fatalf("a paused run of the dead replica, answered on a survivor: %v", err)
	}
}

// The same question answered on two replicas at once, 1,000 times:
// exactly one answer applies each time, the other gets ErrNotWaiting.
func TestDoubleAnswerAcrossReplicas(t *testing.T) {
	dsn, o := freshSchema(t)
	a, b := replica(t, dsn, *o), replica(t, dsn, *o)
	ctx := t.Context()
	const rounds = 1000
	var applied [2]int
	for i := range rounds {
		r := pausedRun(t, a, time.Time{})
		var errs [2]error
		var wg sync.WaitGroup
		for k, s := range []*postgres.Store{a, b} {
			wg.Go(func() {
				_, errs[k] = s.Claim(ctx, r.ID, "approve", 1, fmt.Sprint("replica", k), json.RawMessage(`{"action":"accept"}`))
			})
		}
		wg.Wait()
		ok := 0
		for k, err := range errs {
			switch {
			case err == nil:
				ok++
				applied[k]++
			case !errors.Is(err, state.ErrNotWaiting):
				t.Fatalf("round %d: replica %d: %v", i, k, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d answers applied", i, ok)
		}
		if i%100 == 0 {
			if n := statetest.CountEvents(t, b, r.ID, state.EventAnswered); n != 1 {
				t.Fatalf("round %d: %d answers in the history", i, n)
			}
		}
	}
	t.Logf("answers applied: %d on A, %d on B", applied[0], applied[1])
}

// Due deadlines swept by three replicas at once: each applied once.
func TestDeadlinesOnceAcrossReplicas(t *testing.T) {
	dsn, o := freshSchema(t)
	stores := []*postgres.Store{replica(t, dsn, *o), replica(t, dsn, *o), replica(t, dsn, *o)}
	ctx := t.Context()
	const runs = 200
	for range runs {
		pausedRun(t, stores[0], time.Now().Add(-time.Second))
	}
	var applied atomic.Int64
	var wg sync.WaitGroup
	for _, s := range stores {
		wg.Go(func() {
			for {
				due, err := s.DueDeadlines(ctx, time.Now(), 50)
				if err != nil {
					t.Error(err)
					return
				}
				if len(due) == 0 {
					return
				}
				for _, d := range due {
					_, err := s.ClaimDeadline(ctx, d, json.RawMessage(`{"action":"cancel","timeout":true}`))
					switch {
					case err == nil:
						applied.Add(1)
						if err := s.Finish(ctx, d.RunID, state.StatusCancelled, nil, ""); err != nil {
							t.Error(err)
						}
					case !errors.Is(err, state.ErrNotWaiting):
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if applied.Load() != runs {
		t.Fatalf("%d deadlines applied, want %d", applied.Load(), runs)
	}
	l, _, _ := stores[1].List(ctx, state.Filter{Status: state.StatusCancelled, Limit: 1000})
	for _, r := range l {
		if n := statetest.CountEvents(t, stores[2], r.ID, state.EventDeadline); n != 1 {
			t.Fatalf("run %s: %d deadline events", r.ID, n)
		}
	}
	if len(l) != runs {
		t.Fatalf("%d cancelled runs", len(l))
	}
}

func TestKeySharedByLiveReplicas(t *testing.T) {
	dsn, o := freshSchema(t)
	stores := []*postgres.Store{replica(t, dsn, *o), replica(t, dsn, *o), replica(t, dsn, *o)}
	keys := make([][]byte, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			var err error
			if keys[i], err = s.Key(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i := range keys {
		if len(keys[i]) != 32 || string(keys[i]) != string(keys[0]) {
			t.Fatalf("replica %d has another key", i)
		}
	}
	co := *o
	co.TokenKeys = [][]byte{[]byte(strings.Repeat("k", 32))}
	if k, err := replica(t, dsn, co).Key(t.Context()); err != nil || string(k) != strings.Repeat("k", 32) {
		t.Fatalf("configured key: %q, %v", k, err)
	}
	co.TokenKeys = [][]byte{[]byte("short")}
	if _, err := postgres.Open(t.Context(), dsn, &co); err == nil || !strings.Contains(err.Error(), "token_keys[0]: 5 bytes, want 32") {
		t.Fatalf("short configured key: %v", err)
	}
}

func TestMigrations(t *testing.T) {
	dsn, o := freshSchema(t)
	no := *o
	no.NoMigrate = true
	if _, err := postgres.Open(t.Context(), dsn, &no); err == nil || !strings.Contains(err.Error(), "vmcp state migrate") {
		t.Fatalf("open of an unmigrated schema with NoMigrate: %v", err)
	}
	// Replicas starting together migrate once.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := postgres.Migrate(t.Context(), dsn, o.Schema, false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	s := replica(t, dsn, no)
	var n int
	if err := s.Pool().QueryRow(t.Context(), `SELECT count(*) FROM vmcp_migrations`).Scan(&n); err != nil || n != postgres.SchemaVersion() {
		t.Fatalf("%d migrations recorded, %v", n, err)
	}
	// Run ids compare as bytes (as bbolt orders them) whatever the
	// database's default collation (migration 3).
	var coll string
	if err := s.Pool().QueryRow(t.Context(), `SELECT coalesce(collation_name, '') FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = 'vmcp_runs' AND column_name = 'id'`, o.Schema).Scan(&coll); err != nil || coll != "C" {
		t.Errorf("vmcp_runs.id collation %q (%v), want C", coll, err)
	}
	if _, err := s.Pool().Exec(t.Context(), `INSERT INTO vmcp_migrations (version, name) VALUES (999, 'future')`); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.Open(t.Context(), dsn, o); !errors.Is(err, state.ErrNewerFormat) {
		t.Fatalf("open of a newer schema: %v", err)
	}
	if _, err := postgres.Open(t.Context(), "", o); err == nil || !strings.Contains(err.Error(), "state.dsn is empty") {
		t.Fatalf("empty dsn: %v", err)
	}
	if _, err := postgres.Open(t.Context(), "postgres://127.0.0.1:1/x?connect_timeout=2", o); err == nil || !strings.Contains(err.Error(), "state.dsn") {
		t.Fatalf("unreachable server: %v", err)
	}
}

// A restart under a stable replica id interrupts what its previous life
// held at once, not after the lease; another replica's runs are not
// touched.
func TestStableReplicaIDRecoversAtOnce(t *testing.T) {
	dsn, o := freshSchema(t)
	o.LeaseTTL, o.Heartbeat = time.Hour, 20*time.Minute
	other := replica(t, dsn, *o)
	ro := *o
	ro.ReplicaID = "pod-0"
	first := open(t, dsn, &ro)
	ctx := t.Context()
	mine := statetest.NewRun("alice", "deploy")
	if err := first.Create(ctx, mine); err != nil {
		t.Fatal(err)
	}
	theirs := statetest.NewRun("alice", "deploy")
	if err := other.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	first.Crash()
	var reported []string
	ro.OnTakeover = func(ids []string) { reported = append(reported, ids...) }
	again := replica(t, dsn, ro)
	if n, err := again.Recover(ctx); err != nil || len(n) != 1 || n[0].ID != mine.ID || n[0].Holder != "" {
		t.Fatalf("recover after the restart: %+v, %v (own runs are released at Open: no holder)", n, err)
	}
	if r, _ := again.Get(ctx, mine.ID); r.Status != state.StatusInterrupted {
		t.Fatalf("own run after the restart: %s", r.Status)
	}
	if r, _ := again.Get(ctx, theirs.ID); r.Status != state.StatusRunning {
		t.Fatalf("another replica's run: %s", r.Status)
	}
	// A restart's own runs wait for a resume; another replica's, once its
	// lease expired, are taken over (reported to OnTakeover) by Recover too.
	if len(reported) != 0 {
		t.Fatalf("Recover reported the restarted replica's own runs as taken over: %v", reported)
	}
	if _, err := again.Pool().Exec(ctx, `UPDATE vmcp_replicas SET expires_at = now() - interval '1 second' WHERE id = $1`, other.ReplicaID()); err != nil {
		t.Fatal(err)
	}
	if n, err := again.Recover(ctx); err != nil || len(n) != 1 || len(reported) != 1 || reported[0] != theirs.ID {
		t.Fatalf("recover after the other replica's lease expired: %v, %v, reported %v", n, err, reported)
	}
}

// A serving role without CREATE privileges opens a migrated schema (vmcp
// state migrate ran as the owner), and is told to migrate an outdated one.
func TestLeastPrivilegeRole(t *testing.T) {
	dsn, o := freshSchema(t)
	owner := replica(t, dsn, *o) // migrates
	ctx := t.Context()
	role := "vmcp_app_" + o.Schema[len(o.Schema)-4:]
	sch := pgx.Identifier{o.Schema}.Sanitize()
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT USAGE ON SCHEMA ` + sch + ` TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ` + sch + ` TO ` + role,
	} {
		if _, err := owner.Pool().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = owner.Pool().Exec(context.Background(), `DROP OWNED BY `+role)
		_, _ = owner.Pool().Exec(context.Background(), `DROP ROLE `+role)
	})
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	app := fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslmode=disable", cfg.Host, cfg.Port, cfg.Database, role)
	s := replica(t, app, *o)
	r := statetest.NewRun("alice", "deploy")
	if err := s.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Key(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Pool().Exec(ctx, `DELETE FROM vmcp_migrations`); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.Open(ctx, app, o); err == nil || !strings.Contains(err.Error(), "run `vmcp state migrate` as a user that may") {
		t.Fatalf("open of an outdated schema without privileges: %v", err)
	}
}

// The sweep hands the runs it interrupted to OnTakeover: with two
// replicas sweeping, each orphan is reported once, by the replica that
// interrupted it; and only one replica's Resume (the continuation's claim)
// applies, at a new epoch that fences the other.
func TestOnTakeoverReportsEachOrphanOnce(t *testing.T) {
	dsn, o := freshSchema(t)
	ao := *o
	ao.LeaseTTL, ao.Heartbeat = time.Second, 200*time.Millisecond
	a := open(t, dsn, &ao)
	ctx := t.Context()
	want := map[string]bool{}
	for range 30 {
		r := statetest.NewRun("alice", "deploy")
		if err := a.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		want[r.ID] = true
	}
	a.Crash()
	var mu sync.Mutex
	got := map[string][]string{} // run → replicas that reported it
	sweepers := make([]*postgres.Store, 2)
	for i := range sweepers {
		so := *o
		so.SweepInterval = 50 * time.Millisecond
		var me atomic.Pointer[string]
		so.OnTakeover = func(ids []string) {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				got[id] = append(got[id], *me.Load())
			}
		}
		s := replica(t, dsn, so)
		id := s.ReplicaID()
		me.Store(&id)
		sweepers[i] = s
	}
	deadline := time.Now().Add(ao.LeaseTTL + 5*time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d orphans reported to OnTakeover", n, len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a few more sweeps report nothing more
	mu.Lock()
	defer mu.Unlock()
	for id, by := range got {
		if !want[id] || len(by) != 1 {
			t.Fatalf("run %s reported %v", id, by)
		}
		// Both replicas try to continue it: one claim applies.
		var ok atomic.Int32
		var wg sync.WaitGroup
		for _, s := range sweepers {
			wg.Go(func() {
				if _, err := s.Resume(ctx, id, "vmcp"); err == nil {
					ok.Add(1)
				} else if !errors.Is(err, state.ErrNotInterrupted) {
					t.Errorf("the losing continuation of %s: %v", id, err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 {
			t.Fatalf("run %s claimed by %d continuations", id, ok.Load())
		}
	}
}

// Release gives a run this replica dropped (self-fenced) back to the
// sweep although this replica stays live: it is interrupted and can be
// taken over, and the releasing replica's late writes are fenced.
func TestReleaseHandsARunToTheSweep(t *testing.T) {
	dsn, o := freshSchema(t)
	o.SweepInterval = -1
	a, b := replica(t, dsn, *o), replica(t, dsn, *o)
	ctx := t.Context()
	r := statetest.NewRun("alice", "deploy")
	if err := a.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Recover(ctx); err != nil || len(n) != 0 {
		t.Fatalf("recover while A holds the run: %v, %v", n, err)
	}
	if held, err := a.Holds(ctx, r.ID); err != nil || !held {
		t.Fatalf("A holds its new run: %v %v", held, err)
	}
	if held, _ := b.Holds(ctx, r.ID); held {
		t.Fatal("B says it holds A's run")
	}
	epoch, ok := a.HeldEpoch(r.ID)
	if !ok {
		t.Fatal("A does not know the epoch of its new run")
	}
	if err := a.Release(ctx, r.ID, epoch); err != nil {
		t.Fatal(err)
	}
	if held, err := a.Holds(ctx, r.ID); err != nil || held {
		t.Fatalf("A still holds the run it released: %v %v", held, err)
	}
	if err := a.Checkpoint(ctx, r.ID, json.RawMessage(`{"n":1}`), nil); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("checkpoint after the release: %v, want fenced", err)
	}
	if n, err := b.Recover(ctx); err != nil || len(n) != 1 {
		t.Fatalf("recover after A released the run: %v, %v", n, err)
	}
	if _, err := b.Resume(ctx, r.ID, "vmcp"); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, r.ID, epoch); err != nil { // nothing to release any more
		t.Fatal(err)
	}
	if err := b.Finish(ctx, r.ID, state.StatusCompleted, nil, ""); err != nil {
		t.Fatalf("B finishes the run it took over after A's second release: %v", err)
	}
}

// Release gives up only the claim it names: a run this replica stopped
// executing at one epoch and claimed again since (answered here) keeps its
// later claim.
func TestReleaseSparesALaterClaim(t *testing.T) {
	dsn, o := freshSchema(t)
	o.SweepInterval = -1
	a := replica(t, dsn, *o)
	ctx := t.Context()
	r := statetest.NewRun("alice", "deploy")
	if err := a.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	old, ok := a.HeldEpoch(r.ID)
	if !ok {
		t.Fatal("A does not know the epoch of its new run")
	}
	seq, err := a.Pause(ctx, r.ID, nil, state.Question{Step: "approve"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.HeldEpoch(r.ID); ok {
		t.Fatal("A still holds the run it paused")
	}
	if _, err := a.Claim(ctx, r.ID, "approve", seq, "alice", json.RawMessage(`{"action":"accept"}`)); err != nil {
		t.Fatal(err)
	}
	if now, _ := a.HeldEpoch(r.ID); now == old {
		t.Fatalf("the claim did not move the epoch (%d)", now)
	}
	if err := a.Release(ctx, r.ID, old); err != nil {
		t.Fatal(err)
	}
	if held, err := a.Holds(ctx, r.ID); err != nil || !held {
		t.Fatalf("A lost its later claim to the release of an earlier one: %v %v", held, err)
	}
	if err := a.Checkpoint(ctx, r.ID, json.RawMessage(`{"n":2}`), nil); err != nil {
		t.Fatalf("checkpoint under the later claim: %v", err)
	}
}
