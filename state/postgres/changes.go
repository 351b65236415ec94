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
// once and queues its hint, "status id". One goroutine sends the queued
// hints as a separate statement (never inside the state transaction:
// NOTIFY takes a global lock at commit): it waits up to notifyWindow after
// the first hint for more, then sends them packed, newline-separated, up
// to notifyPayload bytes per notification (PostgreSQL allows 8000), up to
// notifyBatch hints per statement. Each NOTIFY statement is a commit and
// a wake-up of every listening replica, which at thousands of pauses a
// second cost more CPU than the pauses' own commits (measured: about 120
// µs in PostgreSQL and 60 µs in the driver per pause, sent one by one).
// A replica hears its own hints too and ignores nothing: a hint is only a
// reason to re-read.
// Every replica holds one direct connection (Options.ListenDSN, else the
// DSN) that LISTENs on the channel and republishes what it hears; after a
// reconnect it publishes state.Change{} (re-read everything watched), since
// notifications sent while it was away are lost. Checkpoints send nothing.

const (
	// notifyBatch bounds the hints of one pg_notify statement.
	notifyBatch = 512
	// notifyPayload bounds one notification's payload.
	notifyPayload = 7900
	// notifyWindow is how long the sender waits after a first hint for
	// others to send with it: a waiter on another replica hears of a
	// change this much later, in exchange for one statement per window
	// instead of one per transition.
	notifyWindow = 2 * time.Millisecond
)

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

// notifyLoop sends queued hints with pg_notify, batched (see above).
func (s *Store) notifyLoop(ctx context.Context) {
	defer s.done.Done()
	ch := channelName(s.schema)
	window := time.NewTimer(time.Hour)
	window.Stop()
	for {
		var batch []string
		select {
		case <-ctx.Done():
			return
		case p := <-s.notifyQ:
			batch = append(batch, p)
		}
		window.Reset(notifyWindow)
	more:
		for len(batch) < notifyBatch {
			select {
			case p := <-s.notifyQ:
				batch = append(batch, p)
			case <-window.C:
				break more
			case <-ctx.Done():
				break more
			}
		}
		window.Stop()
		if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, ch, packHints(batch)); err != nil && ctx.Err() == nil {
			s.log.Warn("sending change hints to other replicas", "err", err, "runs", len(batch))
		}
	}
}

// packHints joins hints into payloads of at most notifyPayload bytes,
// newline-separated (a hint holds no newline: run ids and statuses are
// [A-Za-z0-9_-]).
func packHints(hints []string) []string {
	var out []string
	var b strings.Builder
	for _, h := range hints {
		if b.Len() > 0 && b.Len()+1+len(h) > notifyPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(h)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// unpackHints calls fn with each hint of a payload (see packHints).
func unpackHints(payload string, fn func(status, id string)) {
	for h := range strings.SplitSeq(payload, "\n") {
		if status, id, ok := strings.Cut(h, " "); ok && id != "" {
			fn(status, id)
		}
	}
}

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
		unpackHints(n.Payload, func(status, id string) {
			s.hub.Publish(state.Change{RunID: id, Status: status})
		})
	}
}

// Listening reports whether the change-hint listener is connected (for
// tests and /status).
func (s *Store) Listening() bool { return s.listening.Load() }
