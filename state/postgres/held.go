package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vmcp-dev/vmcp/state"
)

// The one-round-trip path of a transition (modifyHeld) and of a create
// (Create, with queueInsert's guard).
//
// A transition of an existing run is, in general, two round trips: lock
// the row and read the run (with the database's clock), then write it
// back and commit. On this machine the second round trip is most of a
// pause's cost, in both processes (measured: a conditional UPDATE alone
// costs PostgreSQL about two thirds and the driver less than half of the
// CPU of the locked read-then-write).
//
// The runs this replica holds (running, holder = this replica, at the
// epoch of its claim) change, in the normal case, only through this
// replica's own transitions: Checkpoint, Pause, Finish, AppendHistory.
// So the replica keeps the document its last transition of such a run
// wrote, and runs the next transition against that copy, with one
// conditional UPDATE that applies only if the row still holds exactly
// those bytes, at that epoch, under this holder, with no step rows:
// precisely what the locked read would have returned. If anything else
// changed the run (a cancel from another replica, a takeover, a sweep),
// the UPDATE matches no row, writes nothing, and the transition runs the
// usual way, which sees the change.
//
// Time: a transition's time is the database's, never the replica's
// clock. The fast path has no read to take it from, so it uses the
// database clock as last read by this replica (a transition's locked read,
// a create's BEGIN or a heartbeat, every 2 s by default) advanced by this process's monotonic clock since, and the
// UPDATE itself checks it against clock_timestamp(): not after it, and at
// most maxClockLag behind it (else no row matches and the usual path
// runs). The reading is at most maxAnchorAge old.
//
// A create has no row to check, only the time: its insert is guarded by
// the same clock check (a run whose checkpoint goes to step rows takes
// the usual path).

const (
	maxClockLag  = time.Second
	maxAnchorAge = 10 * time.Second
	// maxHeldDoc bounds a kept document: a run's history grows with its
	// events, and a bigger document takes the usual path.
	maxHeldDoc = 256 << 10
	// defaultHeldBytes bounds the kept documents of all runs together
	// (Store.docBudget): past it, a run's next transition takes the usual
	// path. The decoded run kept beside each document takes about as
	// much again.
	defaultHeldBytes = 32 << 20
)

// heldDoc is the stored document of a run this replica holds, as this
// replica's last transition of it wrote it, and the run it encodes (a
// copy of its own: no slice shared with a caller's run).
type heldDoc struct {
	epoch int64
	doc   []byte
	run   state.Run
}

// dbClock maps the database's clock to this process's monotonic clock.
type dbClock struct {
	db    time.Time // clock_timestamp() as a response carried it
	local time.Time // time.Now() when the response was read
}

// sawClock records the database time t, read in a response that arrived
// at local (time.Now() after reading it, so the estimate never runs ahead
// of the database by the response's latency).
func (s *Store) sawClock(t, local time.Time) {
	s.clock.Store(&dbClock{db: t.UTC(), local: local})
}

// dbNow estimates the database's clock_timestamp() (µs, as PostgreSQL
// stores it); ok is false without a recent reading.
func (s *Store) dbNow() (time.Time, bool) {
	c := s.clock.Load()
	if c == nil {
		return time.Time{}, false
	}
	since := time.Since(c.local)
	if since < 0 || since > maxAnchorAge {
		return time.Time{}, false
	}
	return c.db.Add(since).Truncate(time.Microsecond), true
}

// keepDoc remembers doc, the encoding of r, as run id's stored document
// at epoch, if this replica holds the run at that epoch (else forgets any
// copy).
func (s *Store) keepDoc(id string, epoch int64, doc []byte, r *state.Run) {
	h := heldDoc{epoch: epoch, doc: doc, run: *r}
	h.run.Checkpoint, h.run.Definition = nil, nil // not in the document
	h.run.History, h.run.InFlight = slices.Clone(r.History), slices.Clone(r.InFlight)
	if r.Pending != nil {
		q := *r.Pending
		h.run.Pending = &q
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetDocLocked(id)
	if mine, ok := s.held[id]; !ok || mine != epoch || len(doc) > maxHeldDoc || s.docBytes+len(doc) > s.docBudget {
		return
	}
	s.docs[id] = h
	s.docBytes += len(doc)
}

// forgetDocLocked drops run id's kept document; s.mu is held.
func (s *Store) forgetDocLocked(id string) {
	if h, ok := s.docs[id]; ok {
		s.docBytes -= len(h.doc)
		delete(s.docs, id)
	}
}

// copyRun is a kept run for a transition to change: a copy whose slices
// grow into arrays of their own (transitions append and assign, never
// write into a shared element).
func copyRun(h *heldDoc) *state.Run {
	r := h.run
	r.History, r.InFlight = slices.Clip(r.History), slices.Clip(r.InFlight)
	if r.Pending != nil {
		q := *r.Pending
		r.Pending = &q
	}
	return &r
}

func (s *Store) dropDoc(id string) {
	s.mu.Lock()
	s.forgetDocLocked(id)
	s.mu.Unlock()
}

// clockCheck is the SQL condition that time parameter $n (an estimate
// of the database's clock) is not after clock_timestamp() and at most
// parameter $n+1 (an interval: maxClockLag) behind it.
func clockCheck(n int) string {
	return fmt.Sprintf(`$%d::timestamptz <= clock_timestamp() AND $%d::timestamptz > clock_timestamp() - $%d::interval`, n, n, n+1)
}

// errGuard: a guarded write (sendGuarded) was refused by its clock check.
var errGuard = errors.New("the database refused this replica's estimate of its clock")

// sendGuarded sends w on conn, whose last statement is a guarded insert of one
// row, as one implicit transaction; errGuard if that inserted no row.
// What the statements before it did stays (queueInsert: the definition's
// upsert, which the usual path repeats).
func sendGuarded(ctx context.Context, conn *pgxpool.Conn, w *pgx.Batch) error {
	br := conn.SendBatch(ctx, w)
	var err error
	var tag pgconn.CommandTag
	for range w.Len() {
		if tag, err = br.Exec(); err != nil {
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && tag.RowsAffected() != 1 {
		err = errGuard
	}
	return err
}

// FastTransitions counts the transitions of existing runs this replica
// applied in one round trip (modifyHeld), and FastCreates its creates in
// one round trip, for tests and benchmarks.
func (s *Store) FastTransitions() uint64 { return s.fastWrites.Load() }

// FastCreates: see FastTransitions.
func (s *Store) FastCreates() uint64 { return s.fastCreates.Load() }

// modifyHeld runs transition fn (see modify) in one round trip against the
// kept document of a run this replica holds. ok is false when it does not
// apply (no copy, fn refused or claimed, a checkpoint that goes to step
// rows) or its conditional UPDATE matched no row; nothing is written then,
// and the caller runs the transition the usual way. A refusal is never
// decided from the copy: the usual path decides it from the row.
func (s *Store) modifyHeld(ctx context.Context, op, id string, fn func(r *row, now time.Time) error) (_ *state.Run, ok bool, _ error) {
	s.mu.Lock()
	h, kept := s.docs[id]
	mine, held := s.held[id]
	s.mu.Unlock()
	if !kept || !held || h.epoch != mine {
		return nil, false, nil
	}
	// The connection first: the time is estimated just before it is sent,
	// not before a wait for a free connection.
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, nil // the usual path reports it
	}
	defer conn.Release()
	now, ok := s.dbNow()
	if !ok {
		return nil, false, nil
	}
	r := copyRun(&h)
	if r.Status != state.StatusRunning {
		return nil, false, nil
	}
	if now.Before(r.Updated) {
		now = r.Updated
	}
	me := s.me
	rw := &row{run: r, holder: &me, epoch: h.epoch, nextHolder: &me}
	if err := fn(rw, now); err != nil || rw.claim {
		return nil, false, nil
	}
	var sp splitCP
	if rw.checkpoint {
		if sp = splitCheckpoint(r.Checkpoint, s.splitAbove); sp.at != nil {
			return nil, false, nil
		}
	}
	set, args, newDoc, err := runWrite(id, r, rw.nextHolder)
	if err != nil {
		return nil, false, nil
	}
	args = append(args, h.epoch, me, h.doc, now, maxClockLag)
	if rw.checkpoint {
		set += `, checkpoint = $16`
		args = append(args, sp.stored)
	}
	tag, err := conn.Exec(ctx, `UPDATE vmcp_runs SET `+set+`
		WHERE id = $1 AND epoch = $11 AND holder = $12 AND doc = $13 AND steps_at IS NULL AND `+clockCheck(14), args...)
	if err != nil {
		// As a failed COMMIT on the usual path: the outcome is unknown
		// to this replica, so its copy is too.
		s.dropDoc(id)
		return nil, true, mapErr(fmt.Errorf("%s run %s: %w", op, id, err))
	}
	if tag.RowsAffected() != 1 {
		s.dropDoc(id)
		return nil, false, nil
	}
	s.fastWrites.Add(1)
	s.written(id, r, rw, h.epoch, newDoc, true)
	if rw.hint {
		s.changed(id, r.Status)
	}
	return r, true, nil
}
