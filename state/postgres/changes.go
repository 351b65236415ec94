package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vmcp-dev/vmcp/state"
)

// Change hints between replicas (design §5.4): after a transition a waiter
// cares about commits, the replica publishes it to its own subscribers at
// once and queues `SELECT pg_notify(channel, 'status id')`, sent by one
// goroutine as a separate statement (never inside the state transaction:
// NOTIFY takes a global lock at commit), up to 100 ids per statement.
// Every replica holds one direct connection (Options.ListenDSN, else the
// DSN) that LISTENs on the channel and republishes what it hears; after a
// reconnect it publishes state.Change{} (re-read everything watched), since
// notifications sent while it was away are lost. Checkpoints send nothing.

// notifyBatch bounds the ids of one pg_notify statement.
const notifyBatch = 100

// listenCheck is how long the listener waits quietly before checking that
// its connection still answers (a ping bounded by min(listenCheck, 10s)):
// a connection cut off without a reset (a partition) would otherwise look
// alive until TCP gives up, for many minutes, its hints lost without the
// Change{} that a reconnect publishes. Nanoseconds; tests shorten it.
var listenCheck atomic.Int64

func init() { listenCheck.Store(int64(30 * time.Second)) }

// channelName is the NOTIFY channel of a schema (several vmcp schemas may
// share one database), at most 63 bytes like every identifier.
func channelName(schema string) string {
	c := "vmcp_runs." + schema
	if len(c) > 63 {
		c = c[:63]
	}
	return c
}

// changed publishes a committed transition locally and queues its NOTIFY.
func (s *Store) changed(id, status string) {
	s.hub.Publish(state.Change{RunID: id, Status: status})
	select {
	case s.notifyQ <- status + " " + id:
	default:
		// The queue is full (the database is slow or gone): other
		// replicas find out by polling their waiters.
		s.log.Debug("change hint not sent to other replicas (queue full)", "run_id", id)
	}
}

// Changes streams hints about transitions of any replica sharing the
// database (see state.Driver).
func (s *Store) Changes(ctx context.Context) <-chan state.Change { return s.hub.Subscribe(ctx) }

// notifyLoop sends queued hints with pg_notify, batched.
func (s *Store) notifyLoop(ctx context.Context) {
	defer s.done.Done()
	ch := channelName(s.schema)
	for {
		var batch []string
		select {
		case <-ctx.Done():
			return
		case p := <-s.notifyQ:
			batch = append(batch, p)
		}
	more:
		for len(batch) < notifyBatch {
			select {
			case p := <-s.notifyQ:
				batch = append(batch, p)
			default:
				break more
			}
		}
		if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, ch, batch); err != nil && ctx.Err() == nil {
			s.log.Warn("sending change hints to other replicas", "err", err, "runs", len(batch))
		}
	}
}

// listenLoop keeps one connection LISTENing and republishes what it hears.
func (s *Store) listenLoop(ctx context.Context, dsn string) {
	defer s.done.Done()
	ch := channelName(s.schema)
	backoff := 100 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, dsn, ch, func() {
			backoff = 100 * time.Millisecond
			if !first {
				// Hints sent while the connection was down are lost.
				s.hub.Publish(state.Change{})
			}
			first = false
			s.listening.Store(true)
		})
		s.listening.Store(false)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("change-hint listener lost its connection; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context, dsn, ch string, up func()) error {
	// Parsed as the pool parses it: a DSN may carry the pool's own
	// settings (pool_max_conns, ...), which PostgreSQL would refuse as
	// unknown startup parameters.
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, cfg.ConnConfig)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
		return err
	}
	up()
	for {
		quiet := time.Duration(listenCheck.Load())
		wctx, cancel := context.WithTimeout(ctx, quiet)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && wctx.Err() != nil {
			// Quiet for a while (a timeout leaves the connection usable):
			// check that the database still answers on it.
			pctx, cancel := context.WithTimeout(ctx, min(quiet, 10*time.Second))
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("the listening connection does not answer: %w", err)
			}
			continue
		}
		if err != nil {
			return err
		}
		status, id, ok := strings.Cut(n.Payload, " ")
		if !ok || id == "" {
			continue
		}
		s.hub.Publish(state.Change{RunID: id, Status: status})
	}
}

// Listening reports whether the change-hint listener is connected (for
// tests and /status).
func (s *Store) Listening() bool { return s.listening.Load() }
