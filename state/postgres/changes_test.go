package postgres_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

func waitListening(t *testing.T, s *postgres.Store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !s.Listening(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the change-hint listener did not connect within 10s")
		}
	}
}

// expectHint waits for a hint matching want (other hints are skipped) and
// returns when it came.
func expectHint(t *testing.T, hints <-chan state.Change, want state.Change) time.Time {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case c, ok := <-hints:
			if !ok {
				t.Fatalf("hints closed waiting for %+v", want)
			}
			if c == want {
				return time.Now()
			}
		case <-timeout:
			t.Fatalf("no hint %+v within 10s", want)
		}
	}
}

// A transition on replica A reaches a subscriber on replica B (NOTIFY
// after commit, LISTEN on B); checkpoints send nothing.
func TestChangesReachOtherReplicas(t *testing.T) {
	dsn, o := freshSchema(t)
	a, b := replica(t, dsn, *o), replica(t, dsn, *o)
	waitListening(t, b)
	ctx := t.Context()
	hints := b.Changes(ctx)
	var lat []time.Duration
	for range 20 {
		r := statetest.NewRun("alice", "deploy")
		if err := a.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := a.Pause(ctx, r.ID, nil, state.Question{Step: "approve"}); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, expectHint(t, hints, state.Change{RunID: r.ID, Status: state.StatusWaiting}).Sub(start))
		if _, err := a.Claim(ctx, r.ID, "approve", 1, "bob", json.RawMessage(`{}`)); err != nil {
			t.Fatal(err)
		}
		expectHint(t, hints, state.Change{RunID: r.ID, Status: state.StatusRunning})
		if err := a.Cancel(ctx, r.ID, "bob"); err != nil {
			t.Fatal(err)
		}
		expectHint(t, hints, state.Change{RunID: r.ID, Status: state.StatusCancelled})
	}
	slices.Sort(lat)
	t.Logf("pause on A → hint on B (commit + NOTIFY + LISTEN): p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
}

// A listener that loses its connection reconnects, says so with
// Change{} (hints may have been lost), and hears later hints again.
func TestChangesListenerReconnects(t *testing.T) {
	dsn, o := freshSchema(t)
	a, b := replica(t, dsn, *o), replica(t, dsn, *o)
	waitListening(t, b)
	ctx := t.Context()
	hints := b.Changes(ctx)
	tag, err := a.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE pid <> pg_backend_pid() AND query = 'LISTEN ' || quote_ident($1)`, postgres.ChannelName(o.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != 2 {
		t.Fatalf("terminated %d listeners, want 2 (one per replica)", tag.RowsAffected())
	}
	expectHint(t, hints, state.Change{})
	waitListening(t, b)
	r := statetest.NewRun("alice", "deploy")
	if err := a.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Pause(ctx, r.ID, nil, state.Question{Step: "approve"}); err != nil {
		t.Fatal(err)
	}
	expectHint(t, hints, state.Change{RunID: r.ID, Status: state.StatusWaiting})
}

// The change-hint listener connects with a DSN that carries the pool's
// own settings (pool_max_conns and the like, which the pool accepts and
// PostgreSQL would refuse as unknown startup parameters).
func TestChangesListenerWithPoolSettingsInTheDSN(t *testing.T) {
	dsn, o := freshSchema(t)
	sep := " "
	if strings.Contains(dsn, "://") {
		sep = "&"
		if !strings.Contains(dsn, "?") {
			sep = "?"
		}
	}
	a := replica(t, dsn+sep+"pool_max_conn_lifetime=1h", *o)
	waitListening(t, a)
}

// A listen_dsn that does not parse is a clear error at Open, not a
// listener warning forever.
func TestBadListenDSN(t *testing.T) {
	dsn, o := freshSchema(t)
	o.ListenDSN = "postgres://vmcp@db:notaport/x"
	s, err := postgres.Open(t.Context(), dsn, o)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open accepted a listen_dsn that does not parse")
	}
	if !strings.Contains(err.Error(), "listen_dsn") {
		t.Fatalf("error %q does not name listen_dsn", err)
	}
}
