package postgres_test

import (
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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
	waitListening(t, a) // both listeners are up before they are counted
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

// blackhole is a TCP proxy to PostgreSQL that can stop forwarding without
// closing anything, as a network partition does.
type blackhole struct {
	ln     net.Listener
	target string
	hole   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	t.Cleanup(func() {
		_ = ln.Close()
		b.dropAll()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			b.mu.Lock()
			b.conns = append(b.conns, c, d)
			b.mu.Unlock()
			go b.pipe(c, d)
			go b.pipe(d, c)
		}
	}()
	return b
}

// pipe forwards from→to, swallowing everything while the hole is open.
func (b *blackhole) pipe(from, to net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if err != nil {
			_ = to.Close()
			return
		}
		if b.hole.Load() {
			continue
		}
		if _, err := to.Write(buf[:n]); err != nil {
			return
		}
	}
}

// dropAll closes every connection (the partition heals; what was cut
// off finds out).
func (b *blackhole) dropAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = c.Close()
	}
	b.conns = nil
}

// A listening connection cut off without a reset (a partition) is found
// out by the listener's own check, not after TCP gives up: it reconnects
// once the network is back and says hints were lost (Change{}).
func TestChangesListenerNoticesAPartition(t *testing.T) {
	postgres.SetListenCheck(t, 300*time.Millisecond)
	dsn, o := freshSchema(t)
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(pc.Host, "/") {
		t.Fatalf("this test needs PostgreSQL over TCP, not the socket %s", pc.Host)
	}
	bh := newBlackhole(t, net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port))))
	host, port, _ := net.SplitHostPort(bh.ln.Addr().String())
	ao := *o
	// The listener's DSN: the same one, through the proxy (later settings
	// win, in both DSN forms).
	if strings.Contains(dsn, "://") {
		sep := "&"
		if !strings.Contains(dsn, "?") {
			sep = "?"
		}
		ao.ListenDSN = dsn + sep + "host=" + host + "&port=" + port
	} else {
		ao.ListenDSN = dsn + " host=" + host + " port=" + port
	}
	a, b := replica(t, dsn, ao), replica(t, dsn, *o)
	waitListening(t, a)
	ctx := t.Context()
	hints := a.Changes(ctx)

	bh.hole.Store(true)
	for deadline := time.Now().Add(10 * time.Second); a.Listening(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the listener did not notice within 10s that its connection no longer answers")
		}
	}
	bh.hole.Store(false)
	bh.dropAll()
	expectHint(t, hints, state.Change{})
	waitListening(t, a)
	r := statetest.NewRun("alice", "deploy")
	if err := b.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Pause(ctx, r.ID, nil, state.Question{Step: "approve"}); err != nil {
		t.Fatal(err)
	}
	expectHint(t, hints, state.Change{RunID: r.ID, Status: state.StatusWaiting})
}
