package postgres

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vmcp-dev/vmcp/state"
)

// Get returns a run whole: document, checkpoint and definition.
func (s *Store) Get(ctx context.Context, id string) (*state.Run, error) {
	var doc, def []byte
	var cp storedCP
	err := s.pool.QueryRow(ctx, `SELECT r.doc, r.checkpoint, d.source, `+stepCols+` FROM vmcp_runs r
		LEFT JOIN vmcp_definitions d ON d.hash = r.def_hash WHERE r.id = $1`, id).Scan(append([]any{&doc, &cp.cp, &def}, cp.dest()...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &state.TransitionError{Op: "get", RunID: id, Err: state.ErrNotFound}
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("get run %s: %w", id, err))
	}
	r, err := state.DecodeDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("get run %s: %w", id, err)
	}
	if r.Checkpoint, err = cp.join(); err != nil {
		return nil, fmt.Errorf("get run %s: %w", id, err)
	}
	r.Definition = def
	return r, nil
}

// List returns runs matching f, newest first, a page at a time, through
// the index that fits the filter.
func (s *Store) List(ctx context.Context, f state.Filter) ([]*state.RunSummary, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = state.DefaultPageSize
	}
	limit = min(limit, state.MaxPageSize)
	if f.Status != "" && !state.ValidStatus(f.Status) {
		return nil, "", fmt.Errorf("list runs: unknown status %q: %w", f.Status, state.ErrInvalid)
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Owner != "" {
		where = append(where, "owner = "+arg([]byte(f.Owner)))
	}
	if f.Status != "" {
		where = append(where, "status = "+arg(f.Status))
	}
	if f.Workflow != "" {
		where = append(where, "workflow = "+arg([]byte(f.Workflow)))
	}
	if f.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || len(raw) <= 8 {
			return nil, "", state.ErrBadCursor
		}
		at := time.UnixMicro(int64(binary.BigEndian.Uint64(raw[:8]))).UTC()
		where = append(where, "(created_at, id) < ("+arg(at)+", "+arg(string(raw[8:]))+")")
	}
	q := `SELECT summary, created_at, id FROM vmcp_runs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id DESC LIMIT " + arg(limit+1)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, "", mapErr(fmt.Errorf("list runs: %w", err))
	}
	defer rows.Close()
	var out []*state.RunSummary
	var next string
	var lastAt time.Time
	var lastID string
	for rows.Next() {
		var raw []byte
		var at time.Time
		var id string
		if err := rows.Scan(&raw, &at, &id); err != nil {
			return nil, "", fmt.Errorf("list runs: %w", err)
		}
		if len(out) == limit {
			b := binary.BigEndian.AppendUint64(nil, uint64(lastAt.UnixMicro()))
			next = base64.RawURLEncoding.EncodeToString(append(b, lastID...))
			break
		}
		h := new(state.RunSummary)
		if err := json.Unmarshal(raw, h); err != nil {
			return nil, "", fmt.Errorf("list runs: stored summary of run %s: %w", id, err)
		}
		out = append(out, h)
		lastAt, lastID = at, id
	}
	if err := rows.Err(); err != nil {
		return nil, "", mapErr(fmt.Errorf("list runs: %w", err))
	}
	return out, next, nil
}

// DueDeadlines returns up to limit waiting questions due by now and by the
// database's clock (whichever is earlier), earliest first.
func (s *Store) DueDeadlines(ctx context.Context, now time.Time, limit int) ([]state.DueQuestion, error) {
	if limit <= 0 {
		limit = state.MaxPageSize
	}
	rows, err := s.pool.Query(ctx, `SELECT id, pending_step, seq, deadline FROM vmcp_runs
		WHERE status = 'waiting' AND deadline <= least($1::timestamptz, now()) ORDER BY deadline, id LIMIT $2`, now, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("due deadlines: %w", err))
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (state.DueQuestion, error) {
		var d state.DueQuestion
		var step []byte
		var seq int64
		err := r.Scan(&d.RunID, &step, &seq, &d.Deadline)
		d.Step, d.Seq, d.Deadline = string(step), uint64(seq), d.Deadline.UTC()
		return d, err
	})
}

// NextDeadline is the earliest pending deadline (ok false if none).
func (s *Store) NextDeadline(ctx context.Context) (time.Time, bool, error) {
	var at *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT min(deadline) FROM vmcp_runs WHERE status = 'waiting'`).Scan(&at); err != nil {
		return time.Time{}, false, mapErr(fmt.Errorf("next deadline: %w", err))
	}
	if at == nil {
		return time.Time{}, false, nil
	}
	return at.UTC(), true, nil
}

// Recover interrupts every running run whose holder is gone: no holder, or
// a replica whose lease expired (history "interrupted", epoch + 1, so the
// old holder is fenced). Several replicas may sweep at once: rows are
// claimed FOR UPDATE SKIP LOCKED, so each run is taken over once. It
// returns the runs it interrupted (Holder: the replica that held each);
// runs of live replicas, this one included, are left alone.
//
// Runs taken from another replica whose lease expired are handed to
// Options.OnTakeover, as the sweep's are; runs left without a holder (this
// replica's previous life, with a stable ReplicaID) are not: after a
// restart they wait for a resume, as with bbolt.
func (s *Store) Recover(ctx context.Context) ([]state.Interrupted, error) {
	all, err := s.interruptOrphans(ctx)
	var taken []string
	for _, o := range all {
		if o.Holder != "" {
			taken = append(taken, o.ID)
		}
	}
	if len(taken) > 0 && s.onTakeover != nil {
		s.onTakeover(taken)
	}
	return all, err
}

// interruptOrphans is Recover without the OnTakeover hand-over: it
// returns the runs it interrupted (committed, even when a later batch
// fails), each announced as a change hint.
func (s *Store) interruptOrphans(ctx context.Context) ([]state.Interrupted, error) {
	var total []state.Interrupted
	for {
		n := 0
		var done []state.Interrupted
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			n, done = 0, done[:0]
			rows, err := tx.Query(ctx, `SELECT r.id, r.doc, clock_timestamp(), coalesce(r.holder, '') FROM vmcp_runs r
				WHERE r.status = 'running' AND (r.holder IS NULL OR NOT EXISTS
				  (SELECT 1 FROM vmcp_replicas p WHERE p.id = r.holder AND p.expires_at > now()))
				LIMIT $1 FOR UPDATE OF r SKIP LOCKED`, maintenanceBatch)
			if err != nil {
				return err
			}
			type orphan struct {
				id     string
				doc    []byte
				at     time.Time
				holder string
			}
			orphans, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (orphan, error) {
				var o orphan
				err := r.Scan(&o.id, &o.doc, &o.at, &o.holder)
				return o, err
			})
			if err != nil {
				return err
			}
			batch := &pgx.Batch{}
			for _, o := range orphans {
				r, err := state.DecodeDocument(o.doc)
				if err != nil {
					// Skipped, not fatal: one unreadable run must not
					// stop every takeover.
					s.log.Error("recover: skipping a run that cannot be read", "run_id", o.id, "err", err)
					continue
				}
				now := o.at.UTC()
				if now.Before(r.Updated) {
					now = r.Updated
				}
				r.Status, r.Updated = state.StatusInterrupted, now
				detail, _ := json.Marshal(map[string][]string{"in_flight": r.InFlight})
				r.History = append(r.History, state.Event{At: now, Who: "vmcp", Kind: state.EventInterrupted, Detail: detail})
				doc, summary, err := state.EncodeDocument(r)
				if err != nil {
					return err
				}
				batch.Queue(`UPDATE vmcp_runs SET status = 'interrupted', holder = NULL, epoch = epoch + 1, doc = $2, summary = $3, updated_at = $4
					WHERE id = $1`, o.id, doc, summary, now)
				done = append(done, state.Interrupted{ID: o.id, Workflow: r.Workflow, Owner: r.Owner, InFlight: r.InFlight, Holder: o.holder})
			}
			if len(orphans) > 0 {
				if err := tx.SendBatch(ctx, batch).Close(); err != nil {
					return err
				}
			}
			n = len(orphans)
			return nil
		})
		if err != nil {
			return total, mapErr(fmt.Errorf("recover runs: %w", err))
		}
		for _, o := range done {
			s.changed(o.ID, state.StatusInterrupted) // committed: waiters re-read
		}
		total = append(total, done...)
		if n < maintenanceBatch {
			return total, nil
		}
	}
}

// Prune deletes runs that finished before the cut-off (zero: now minus
// Options.Retention by the database clock; no retention, nothing), a
// thousand per commit, one replica at a time (an advisory lock), and the
// definitions no run uses any more.
func (s *Store) Prune(ctx context.Context, before time.Time) (int, error) {
	if before.IsZero() && s.keep <= 0 {
		return 0, nil
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, mapErr(fmt.Errorf("prune runs: %w", err))
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, pruneLockKey).Scan(&got); err != nil {
		return 0, fmt.Errorf("prune runs: %w", err)
	}
	if !got {
		return 0, nil // another replica is pruning
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, pruneLockKey) //nolint:errcheck
	var cut any = before
	if before.IsZero() {
		cut = nil
	}
	total := 0
	for {
		tag, err := conn.Exec(ctx, `DELETE FROM vmcp_runs WHERE id IN (SELECT id FROM vmcp_runs
			WHERE finished_at < coalesce($1::timestamptz, now() - $2::interval) ORDER BY finished_at LIMIT $3)`,
			cut, s.keep, maintenanceBatch)
		if err != nil {
			return total, mapErr(fmt.Errorf("prune runs: %w", err))
		}
		total += int(tag.RowsAffected())
		if tag.RowsAffected() < maintenanceBatch {
			break
		}
	}
	if total > 0 {
		_, err := conn.Exec(ctx, `DELETE FROM vmcp_definitions d WHERE NOT EXISTS (SELECT 1 FROM vmcp_runs r WHERE r.def_hash = d.hash)`)
		var pe *pgconn.PgError
		if err != nil && !(errors.As(err, &pe) && pe.Code == "23503") { // a run created meanwhile uses one: next time
			return total, mapErr(fmt.Errorf("prune definitions: %w", err))
		}
		s.log.Info("pruned finished runs", "count", total)
	}
	return total, nil
}
