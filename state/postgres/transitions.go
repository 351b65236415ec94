package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vmcp-dev/vmcp/state"
)

// row is a run as locked by a transition: the run, and its lease columns.
type row struct {
	run    *state.Run
	holder *string
	epoch  int64
	// set by the transition: who holds the run after it (nil: nobody),
	// and whether the epoch grows (a claim).
	nextHolder *string
	claim      bool
	checkpoint bool // Run.Checkpoint changed
	hint       bool // a waiter cares: send a change hint after commit
}

func (s *Store) claimed(id string, epoch int64) {
	s.mu.Lock()
	s.held[id] = epoch
	s.mu.Unlock()
}

func (s *Store) released(id string) {
	s.mu.Lock()
	delete(s.held, id)
	delete(s.steps, id)
	s.forgetDocLocked(id)
	s.mu.Unlock()
}

// fenced says why this replica may not write run r any more ("" if it
// may): it claimed the run at an epoch that is not the run's, or the run
// is running under another holder.
func (s *Store) fenced(r *row) string {
	s.mu.Lock()
	mine, ok := s.held[r.run.ID]
	s.mu.Unlock()
	if ok && mine != r.epoch {
		return fmt.Sprintf("this replica (%s) claimed it at epoch %d; it is at epoch %d", s.me, mine, r.epoch)
	}
	if r.run.Status == state.StatusRunning && (r.holder == nil || *r.holder != s.me) {
		h := "no replica"
		if r.holder != nil {
			h = "replica " + *r.holder
		}
		return fmt.Sprintf("it is held by %s, not this one (%s)", h, s.me)
	}
	return ""
}

// Create stores a new run, running and held by this replica (epoch 1).
func (s *Store) Create(ctx context.Context, r *state.Run) error {
	if r == nil {
		return fmt.Errorf("create run: nil run: %w", state.ErrInvalid)
	}
	id := r.ID
	if id == "" {
		id = state.NewRunID()
	}
	if err := state.CheckNewRun(id, r); err != nil {
		return err
	}
	sp := splitCheckpoint(r.Checkpoint, s.splitAbove)
	// One round trip (held.go) when the checkpoint is stored whole and
	// this replica read the database's clock recently; if the database
	// refuses the estimate, the usual two.
	if sp.at == nil && s.clock.Load() != nil {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return mapErr(fmt.Errorf("create run %s: %w", id, err))
		}
		// Estimated with the connection in hand: no wait for one after.
		now, ok := s.dbNow()
		done := false
		if ok {
			done, err = s.create(ctx, conn, id, r, sp, now)
		}
		conn.Release()
		if done || err != nil {
			return err
		}
	}
	_, err := s.create(ctx, nil, id, r, sp, time.Time{})
	return err
}

// create is Create in one round trip on conn (at now, estimated; done is
// false if the database refused the estimate, nothing written) or, with
// conn nil, in two (BEGIN with the database's clock, then the writes with
// COMMIT).
func (s *Store) create(ctx context.Context, conn *pgxpool.Conn, id string, r *state.Run, sp splitCP, now time.Time) (done bool, _ error) {
	fast := conn != nil
	var hash string
	if len(r.Definition) > 0 {
		hash = state.DefinitionHash(r.Definition)
	}
	var tx *ptx
	if !fast {
		var err error
		tx, err = s.begin(ctx, `SELECT clock_timestamp()`, nil, func(r pgx.Row) error { return r.Scan(&now) })
		if err != nil {
			tx.rollback(ctx)
			return false, mapErr(fmt.Errorf("create run %s: %w", id, err))
		}
		s.sawClock(now, time.Now())
	}
	now = now.UTC()
	created := r.Created.UTC()
	if r.Created.IsZero() {
		created = now
	}
	out := state.Run{ID: id, Workflow: r.Workflow, Owner: r.Owner, Status: state.StatusRunning,
		Created: created, Updated: now, FormatVersion: state.FormatVersion,
		DefinitionName: r.DefinitionName, DefinitionHash: hash, Params: r.Params,
		InFlight: slices.Clone(r.InFlight),
		History:  append([]state.Event{{At: created, Who: r.Owner, Kind: state.EventCreated}}, r.History...)}
	holder := &s.me
	if r.Status == state.StatusWaiting {
		// A run created waiting (its first step is a question) is held
		// by no replica, as after Pause.
		var ev state.Event
		out.Status = state.StatusWaiting
		out.Pending, ev = state.NewPause(*r.Pending, 1, now)
		out.Seq, out.History, holder = 1, append(out.History, ev), nil
	}
	w := &pgx.Batch{}
	var guard *time.Time
	if fast {
		guard = &now
	}
	doc, stepSums, err := s.queueInsert(w, &out, sp, r.Definition, holder, 1, guard)
	if err != nil {
		if tx != nil {
			tx.rollback(ctx)
		}
		return false, fmt.Errorf("create run %s: %w", id, err)
	}
	var ticket uint64
	if holder != nil { // a run created waiting is held by no replica: nothing to know
		ticket, _ = s.checkoutSteps(id, 1)
	}
	if fast {
		err = sendGuarded(ctx, conn, w)
	} else {
		err = tx.commit(ctx, w)
	}
	if errors.Is(err, errGuard) {
		return false, nil
	}
	if err != nil {
		if isUniqueViolation(err) {
			return false, &state.TransitionError{Op: "create", RunID: id, Err: state.ErrExists}
		}
		return false, mapErr(fmt.Errorf("create run %s: %w", id, err))
	}
	if fast {
		s.fastCreates.Add(1)
	}
	if holder != nil {
		s.claimed(id, 1)
		if stepSums != nil {
			s.installSteps(id, ticket, 1, stepSums)
		} else { // stored whole: the next transition can take one round trip
			s.keepDoc(id, 1, doc, &out)
		}
	}
	r.ID, r.Status, r.Created, r.Updated, r.FormatVersion, r.DefinitionHash, r.History, r.Seq, r.Pending =
		out.ID, out.Status, out.Created, out.Updated, out.FormatVersion, out.DefinitionHash, out.History, out.Seq, out.Pending
	return true, nil
}

// queueInsert queues the writes of a new run row (and its definition and
// step rows); it returns the run's document and the sums of the step rows
// (nil: none, the checkpoint is stored whole). With guard, the row is
// inserted only if *guard passes the database's clock check (held.go);
// sendGuarded reports when it does not. A guarded insert must not have
// step rows.
func (s *Store) queueInsert(w *pgx.Batch, r *state.Run, sp splitCP, def []byte, holder *string, epoch int64, guard *time.Time) ([]byte, map[string][32]byte, error) {
	if guard != nil && sp.at != nil {
		return nil, nil, errors.New("a guarded insert with step rows")
	}
	doc, summary, err := state.EncodeDocument(r)
	if err != nil {
		return nil, nil, err
	}
	var defHash *string
	if len(def) > 0 {
		h := state.DefinitionHash(def)
		defHash = &h
		// DO UPDATE (not NOTHING) locks the row, so a concurrent prune
		// cannot delete the definition before this run references it.
		w.Queue(`INSERT INTO vmcp_definitions (hash, source) VALUES ($1, $2)
			ON CONFLICT (hash) DO UPDATE SET hash = EXCLUDED.hash`, h, def)
	}
	step, deadline := pendingCols(r)
	args := []any{r.ID, []byte(r.Owner), []byte(r.Workflow), r.Status, int64(r.Seq), step, deadline, epoch, holder,
		defHash, doc, summary, sp.stored, sp.at, r.Created, r.Updated, zeroNil(r.Finished)}
	q := `INSERT INTO vmcp_runs (id, owner, workflow, status, seq, pending_step, deadline, epoch, holder,
		def_hash, doc, summary, checkpoint, steps_at, created_at, updated_at, finished_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`
	if guard != nil {
		q = `INSERT INTO vmcp_runs (id, owner, workflow, status, seq, pending_step, deadline, epoch, holder,
		def_hash, doc, summary, checkpoint, steps_at, created_at, updated_at, finished_at)
		SELECT $1::text, $2::bytea, $3::bytea, $4::text, $5::bigint, $6::bytea, $7::timestamptz, $8::bigint, $9::text,
			$10::text, $11::bytea, $12::bytea, $13::bytea, $14::int, $15::timestamptz, $16::timestamptz, $17::timestamptz
		WHERE ` + clockCheck(18)
		args = append(args, *guard, maxClockLag)
	}
	w.Queue(q, args...)
	return doc, s.queueSteps(w, r.ID, nil, nil, sp, epoch, r.Updated), nil
}

// runWrite encodes changed run r for its row's UPDATE: the SET list of
// the columns every transition writes, over parameters $2 to $10 ($1 is
// the run's id), their values (args[0] is id), and the document.
func runWrite(id string, r *state.Run, holder *string) (set string, args []any, doc []byte, err error) {
	doc, summary, err := state.EncodeDocument(r)
	if err != nil {
		return "", nil, nil, err
	}
	step, deadline := pendingCols(r)
	return `status = $2, seq = $3, pending_step = $4, deadline = $5, holder = $6, doc = $7, summary = $8, updated_at = $9, finished_at = $10`,
		[]any{id, r.Status, int64(r.Seq), step, deadline, holder, doc, summary, r.Updated, zeroNil(r.Finished)}, doc, nil
}

// written records, after the commit of a transition of run id (now r, at
// epoch), what this replica holds: a claim, a release, and the document
// it keeps for the next transition (only for a run it still holds whose
// checkpoint is stored whole).
func (s *Store) written(id string, r *state.Run, rw *row, epoch int64, doc []byte, whole bool) {
	switch {
	case rw.claim:
		s.claimed(id, epoch)
	case r.Status != state.StatusRunning:
		s.released(id)
	}
	if r.Status == state.StatusRunning && rw.nextHolder != nil && *rw.nextHolder == s.me && whole {
		s.keepDoc(id, epoch, doc, r) // the next transition can take one round trip
	} else {
		s.dropDoc(id)
	}
}

func pendingCols(r *state.Run) (step []byte, deadline *time.Time) {
	if r.Status == state.StatusWaiting && r.Pending != nil {
		step = []byte(r.Pending.Step)
		if !r.Pending.Deadline.IsZero() {
			d := r.Pending.Deadline
			deadline = &d
		}
	}
	return step, deadline
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func zeroNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// lock modes for modify.
const (
	wait = iota // FOR UPDATE: wait for a concurrent transition, then see its result
	skip        // FOR UPDATE SKIP LOCKED: another replica is at it; refuse
)

// modify is one transition of an existing run, in one transaction: lock
// the row, decode the run, let fn check it (returning a
// *state.TransitionError refuses, writing nothing) and change it, then
// write it back. now is the database's clock, never before the run's last
// update, so a run's history is in time order. With full, the run's
// checkpoint and definition are loaded too (else both are empty, and
// the stored checkpoint stays unless fn sets row.checkpoint).
func (s *Store) modify(ctx context.Context, op, id string, mode int, full bool, fn func(r *row, now time.Time) error) (*state.Run, error) {
	if mode == wait && !full {
		if r, ok, err := s.modifyHeld(ctx, op, id, fn); ok {
			return r, err
		}
	}
	// Only a transition that returns the run whole reads the checkpoint
	// (no 2 KiB+ read per pause or checkpoint).
	// The step rows are read only with the checkpoint.
	q := `SELECT r.doc, r.checkpoint, r.holder, r.epoch, clock_timestamp(), d.source, ` + stepCols + ` FROM vmcp_runs r LEFT JOIN vmcp_definitions d ON d.hash = r.def_hash WHERE r.id = $1 FOR UPDATE OF r`
	if !full {
		q = `SELECT r.doc, NULL::bytea, r.holder, r.epoch, clock_timestamp(), NULL::bytea, r.steps_at, NULL::text[], NULL::bytea[] FROM vmcp_runs r WHERE r.id = $1 FOR UPDATE`
	}
	if mode == skip {
		q += ` SKIP LOCKED`
	}
	var doc, def []byte
	var cp storedCP
	var now time.Time
	rw := &row{}
	tx, err := s.begin(ctx, q, []any{id}, func(r pgx.Row) error {
		return r.Scan(append([]any{&doc, &cp.cp, &rw.holder, &rw.epoch, &now, &def}, cp.dest()...)...)
	})
	fail := func(err error) (*state.Run, error) {
		tx.rollback(ctx)
		return nil, mapErr(fmt.Errorf("%s run %s: %w", op, id, err))
	}
	refuse := func(err error) (*state.Run, error) {
		tx.rollback(ctx)
		return nil, err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		if mode == skip {
			var exists bool
			if err := tx.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM vmcp_runs WHERE id = $1)`, id).Scan(&exists); err != nil {
				return fail(err)
			}
			if exists {
				return refuse(&state.TransitionError{Op: op, RunID: id, Err: state.ErrNotWaiting, Detail: "another replica is changing it"})
			}
		}
		return refuse(&state.TransitionError{Op: op, RunID: id, Err: state.ErrNotFound})
	}
	if err != nil {
		return fail(err)
	}
	s.sawClock(now, time.Now())
	// The row is locked: what this replica knows of its step rows is
	// taken out until this transition's outcome is known.
	ticket, known := s.checkoutSteps(id, rw.epoch)
	refuse = func(err error) (*state.Run, error) {
		tx.rollback(ctx)
		if known != nil {
			s.installSteps(id, ticket, rw.epoch, known) // nothing changed
		}
		return nil, err
	}
	r, err := state.DecodeDocument(doc)
	if err != nil {
		return fail(err)
	}
	if full {
		if r.Checkpoint, err = cp.join(); err != nil {
			return fail(err)
		}
	}
	r.Definition = def
	rw.run = r
	now = now.UTC()
	if now.Before(r.Updated) {
		now = r.Updated
	}
	rw.nextHolder = rw.holder
	if err := fn(rw, now); err != nil {
		var te *state.TransitionError
		if errors.As(err, &te) {
			if state.Finished(r.Status) {
				s.released(id) // e.g. cancelled while this replica ran it
			}
			return refuse(err)
		}
		return fail(err)
	}
	epoch := rw.epoch
	if rw.claim {
		epoch++
	}
	set, args, newDoc, err := runWrite(id, r, rw.nextHolder)
	if err != nil {
		return fail(err)
	}
	set += `, epoch = $11`
	args = append(args, epoch)
	var sp splitCP
	if rw.checkpoint {
		sp = splitCheckpoint(r.Checkpoint, s.splitAbove)
		set += `, checkpoint = $12, steps_at = $13`
		args = append(args, sp.stored, sp.at)
	}
	w := &pgx.Batch{}
	w.Queue(`UPDATE vmcp_runs SET `+set+` WHERE id = $1`, args...)
	after := known // the step rows' sums after the commit (nil: unknown)
	if rw.checkpoint {
		// Queued after the run's row: a refused transition (fenced) never
		// gets here, and a failed one rolls back with it.
		after = s.queueSteps(w, id, cp.at, known, sp, epoch, now)
	}
	if err := tx.commit(ctx, w); err != nil {
		return nil, mapErr(fmt.Errorf("%s run %s: %w", op, id, err))
	}
	stepsAt := cp.at // the run's step rows after the commit
	if rw.checkpoint {
		stepsAt = sp.at
	}
	s.written(id, r, rw, epoch, newDoc, stepsAt == nil)
	if r.Status == state.StatusRunning && rw.nextHolder != nil && *rw.nextHolder == s.me {
		if !rw.checkpoint && full && cp.at != nil {
			after = sums(cp.ids, cp.vals) // the rows read whole under the lock, hashed after it
		}
		if after != nil {
			s.installSteps(id, ticket, epoch, after)
		}
	}
	if rw.hint {
		s.changed(id, r.Status)
	}
	return r, nil
}

// ptx is a transaction in two round trips: BEGIN with its first
// statement, then its writes with COMMIT.
type ptx struct {
	conn *pgxpool.Conn
}

// begin acquires a connection and sends BEGIN and q together; scan reads
// q's row (pgx.ErrNoRows is returned with the transaction open). On any
// other error the transaction is already rolled back.
func (s *Store) begin(ctx context.Context, q string, args []any, scan func(pgx.Row) error) (*ptx, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return &ptx{}, err
	}
	tx := &ptx{conn: conn}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(q, args...)
	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	if err == nil {
		err = scan(br.QueryRow())
	}
	if cerr := br.Close(); cerr != nil && (err == nil || errors.Is(err, pgx.ErrNoRows)) {
		err = cerr
	}
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		tx.rollback(ctx)
	}
	return tx, err
}

// commit sends w's statements and COMMIT together, and releases the
// connection; on an error the transaction is rolled back.
func (tx *ptx) commit(ctx context.Context, w *pgx.Batch) error {
	if tx.conn == nil {
		return errors.New("transaction already ended")
	}
	w.Queue("COMMIT")
	br := tx.conn.SendBatch(ctx, w)
	var err error
	for range w.Len() {
		if _, err = br.Exec(); err != nil {
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tx.rollback(ctx)
		return err
	}
	tx.conn.Release()
	tx.conn = nil
	return nil
}

// rollback ends the transaction (if still open) and releases the
// connection. A connection left in a transaction is closed by the pool.
func (tx *ptx) rollback(ctx context.Context) {
	if tx.conn == nil {
		return
	}
	if tx.conn.Conn().PgConn().TxStatus() != 'I' {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, _ = tx.conn.Exec(rctx, "ROLLBACK")
		cancel()
	}
	tx.conn.Release()
	tx.conn = nil
}

func refusal(op string, r *state.Run, err error, detail string) error {
	return &state.TransitionError{Op: op, RunID: r.ID, Status: r.Status, Err: err, Detail: detail}
}

// Checkpoint stores a running run's checkpoint and the steps in flight;
// only the replica holding the run at its epoch may (else state.ErrFenced).
func (s *Store) Checkpoint(ctx context.Context, id string, checkpoint json.RawMessage, inFlight []string) error {
	if err := state.ValidJSON("checkpoint", checkpoint, false); err != nil {
		return state.Invalid("checkpoint", id, err.Error())
	}
	inFlight = slices.Clone(inFlight)
	_, err := s.modify(ctx, "checkpoint", id, wait, false, func(rw *row, now time.Time) error {
		r := rw.run
		if why := s.fenced(rw); why != "" {
			return refusal("checkpoint", r, state.ErrFenced, why)
		}
		if r.Status != state.StatusRunning {
			return refusal("checkpoint", r, state.ErrNotRunning, "")
		}
		r.InFlight, r.Updated, r.Checkpoint, rw.checkpoint = inFlight, now, checkpoint, true
		return nil
	})
	return err
}

// Pause makes a running (or interrupted) run wait on q and releases it.
func (s *Store) Pause(ctx context.Context, id string, checkpoint json.RawMessage, q state.Question) (uint64, error) {
	if err := state.ValidJSON("checkpoint", checkpoint, true); err != nil {
		return 0, state.Invalid("pause", id, err.Error())
	}
	if q.Step == "" {
		return 0, state.Invalid("pause", id, "question without a step")
	}
	if err := state.ValidJSON("question schema", q.Schema, true); err != nil {
		return 0, state.Invalid("pause", id, err.Error())
	}
	if !q.Deadline.IsZero() {
		q.Deadline = q.Deadline.UTC()
	}
	out, err := s.modify(ctx, "pause", id, wait, false, func(rw *row, now time.Time) error {
		r := rw.run
		if why := s.fenced(rw); why != "" {
			return refusal("pause", r, state.ErrFenced, why)
		}
		if r.Status != state.StatusRunning && r.Status != state.StatusInterrupted {
			return refusal("pause", r, state.ErrNotRunning, "")
		}
		if len(checkpoint) > 0 {
			r.Checkpoint, rw.checkpoint = checkpoint, true
		}
		pending, ev := state.NewPause(q, r.Seq+1, now)
		r.Seq, r.Pending, r.Status, r.InFlight, r.Updated = pending.Seq, pending, state.StatusWaiting, nil, now
		r.History = append(r.History, ev)
		rw.nextHolder, rw.hint = nil, true
		return nil
	})
	if err != nil {
		return 0, err
	}
	return out.Seq, nil
}

// Claim is the answer transition, one conditional update: the run must
// wait on step at pause seq. Of concurrent answers, on any replicas,
// exactly one applies; the others get state.ErrNotWaiting (or
// ErrStaleAnswer). The answering replica holds the run afterwards.
func (s *Store) Claim(ctx context.Context, id, step string, seq uint64, who string, answer json.RawMessage) (*state.Run, error) {
	return s.claim(ctx, "claim", id, step, seq, who, state.EventAnswered, answer, false)
}

// ClaimDeadline applies the time-out answer of a due question, once across
// replicas: a run another replica is changing is skipped (SKIP LOCKED) and
// refused with ErrNotWaiting. Due means before the database's now().
func (s *Store) ClaimDeadline(ctx context.Context, due state.DueQuestion, answer json.RawMessage) (*state.Run, error) {
	return s.claim(ctx, "claim deadline of", due.RunID, due.Step, due.Seq, "vmcp", state.EventDeadline, answer, true)
}

func (s *Store) claim(ctx context.Context, op, id, step string, seq uint64, who, kind string, answer json.RawMessage, due bool) (*state.Run, error) {
	if err := state.ValidJSON("answer", answer, false); err != nil {
		return nil, state.Invalid(op, id, err.Error())
	}
	mode := wait
	if due {
		mode = skip
	}
	return s.modify(ctx, op, id, mode, true, func(rw *row, now time.Time) error {
		r := rw.run
		if r.Status != state.StatusWaiting || r.Pending == nil {
			return refusal(op, r, state.ErrNotWaiting, "")
		}
		if p := r.Pending; p.Step != step || p.Seq != seq {
			return refusal(op, r, state.ErrStaleAnswer, fmt.Sprintf("the answer is for step %q (pause %d); the run waits on step %q (pause %d)",
				step, seq, p.Step, p.Seq))
		}
		if due && (r.Pending.Deadline.IsZero() || now.Before(r.Pending.Deadline)) {
			return refusal(op, r, state.ErrNotDue, "")
		}
		r.Status, r.Pending, r.InFlight, r.Updated = state.StatusRunning, nil, nil, now
		r.History = append(r.History, state.Event{At: now, Who: who, Kind: kind, Step: step, Detail: answer})
		rw.nextHolder, rw.claim, rw.hint = &s.me, true, true
		return nil
	})
}

// Resume makes an interrupted run running again, held by this replica.
func (s *Store) Resume(ctx context.Context, id, who string) (*state.Run, error) {
	return s.modify(ctx, "resume", id, wait, true, func(rw *row, now time.Time) error {
		r := rw.run
		if r.Status != state.StatusInterrupted {
			return refusal("resume", r, state.ErrNotInterrupted, "")
		}
		r.Status, r.Updated = state.StatusRunning, now
		r.History = append(r.History, state.Event{At: now, Who: who, Kind: state.EventResumed})
		rw.nextHolder, rw.claim, rw.hint = &s.me, true, true
		return nil
	})
}

// Finish ends a running (held by this replica) or interrupted run.
func (s *Store) Finish(ctx context.Context, id, status string, result json.RawMessage, errMsg string) error {
	if !state.Finished(status) {
		return state.Invalid("finish", id, fmt.Sprintf("%q is not a final status", status))
	}
	if err := state.ValidJSON("result", result, true); err != nil {
		return state.Invalid("finish", id, err.Error())
	}
	var detail json.RawMessage
	if errMsg != "" {
		detail, _ = json.Marshal(map[string]string{"error": errMsg})
	}
	_, err := s.modify(ctx, "finish", id, wait, false, func(rw *row, now time.Time) error {
		r := rw.run
		if why := s.fenced(rw); why != "" {
			return refusal("finish", r, state.ErrFenced, why)
		}
		if r.Status != state.StatusRunning && r.Status != state.StatusInterrupted {
			return refusal("finish", r, state.ErrNotRunning, "")
		}
		r.Status, r.Result, r.Error, r.Pending, r.InFlight = status, result, errMsg, nil, nil
		r.Updated, r.Finished = now, now
		r.History = append(r.History, state.Event{At: now, Kind: status, Detail: detail})
		rw.nextHolder, rw.hint = nil, true
		return nil
	})
	return err
}

// Cancel ends a waiting, interrupted or running run as cancelled, from
// any replica. A running run's holder hears the change hint (LISTEN, or
// its next write, which is refused) and cancels the run's context; the
// cancel is the run's one final transition.
func (s *Store) Cancel(ctx context.Context, id, who string) error {
	_, err := s.modify(ctx, "cancel", id, wait, false, func(rw *row, now time.Time) error {
		r := rw.run
		if r.Status != state.StatusWaiting && r.Status != state.StatusInterrupted && r.Status != state.StatusRunning {
			return refusal("cancel", r, state.ErrNotCancellable, "")
		}
		step := ""
		if r.Pending != nil {
			step = r.Pending.Step
		}
		r.Status, r.Pending, r.InFlight, r.Updated, r.Finished = state.StatusCancelled, nil, nil, now, now
		r.History = append(r.History, state.Event{At: now, Who: who, Kind: state.EventCancelled, Step: step})
		rw.nextHolder, rw.hint = nil, true
		return nil
	})
	return err
}

// AppendHistory adds ev to a run's history (At defaults to now).
func (s *Store) AppendHistory(ctx context.Context, id string, ev state.Event) error {
	if ev.Kind == "" {
		return state.Invalid("append history to", id, "event without a kind")
	}
	if err := state.ValidJSON("event detail", ev.Detail, true); err != nil {
		return state.Invalid("append history to", id, err.Error())
	}
	at := ev.At.UTC()
	_, err := s.modify(ctx, "append history to", id, wait, false, func(rw *row, now time.Time) error {
		e := ev
		if e.At = at; at.IsZero() {
			e.At = now
		}
		rw.run.History = append(rw.run.History, e)
		rw.run.Updated = now
		return nil
	})
	return err
}

// Import stores a run exactly as given (a copy from another store): its
// document, checkpoint and definition. A running run is stored without a
// holder, so the sweep interrupts it, as Recover would have.
func (s *Store) Import(ctx context.Context, r *state.Run) error {
	if r == nil || r.ID == "" {
		return fmt.Errorf("import run: no run or no id: %w", state.ErrInvalid)
	}
	w := &pgx.Batch{}
	if _, _, err := s.queueInsert(w, r, splitCheckpoint(r.Checkpoint, s.splitAbove), r.Definition, nil, 0, nil); err != nil {
		return fmt.Errorf("import run %s: %w", r.ID, err)
	}
	err := s.pool.SendBatch(ctx, w).Close() // one implicit transaction
	if isUniqueViolation(err) {
		return &state.TransitionError{Op: "import", RunID: r.ID, Err: state.ErrExists}
	}
	return mapErr(err)
}

// ClaimDue claims up to max questions due by now and by the database's
// clock, in one transaction: rows another replica is claiming are skipped
// (FOR UPDATE SKIP LOCKED), so replicas sweeping together apply each
// deadline once. Each claimed run is held by this replica.
func (s *Store) ClaimDue(ctx context.Context, now time.Time, max int, answer json.RawMessage) ([]*state.Run, error) {
	if err := state.ValidJSON("answer", answer, false); err != nil {
		return nil, state.Invalid("claim due", "", err.Error())
	}
	if max <= 0 {
		max = state.MaxPageSize
	}
	var out []*state.Run
	var epochs []int64
	var stored []storedCP // the runs' step rows, hashed after the commit
	var tickets []uint64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out, epochs, stored, tickets = nil, nil, nil, nil
		rows, err := tx.Query(ctx, `SELECT r.doc, r.checkpoint, d.source, r.epoch, clock_timestamp(), `+stepCols+`
			FROM vmcp_runs r LEFT JOIN vmcp_definitions d ON d.hash = r.def_hash
			WHERE r.status = 'waiting' AND r.deadline <= least($1::timestamptz, now())
			ORDER BY r.deadline LIMIT $2 FOR UPDATE OF r SKIP LOCKED`, now, max)
		if err != nil {
			return err
		}
		type due struct {
			doc, def []byte
			cp       storedCP
			epoch    int64
			at       time.Time
		}
		list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (due, error) {
			var d due
			err := r.Scan(append([]any{&d.doc, &d.cp.cp, &d.def, &d.epoch, &d.at}, d.cp.dest()...)...)
			return d, err
		})
		if err != nil {
			return err
		}
		batch := &pgx.Batch{}
		for _, d := range list {
			r, err := state.DecodeDocument(d.doc)
			if err != nil {
				// One unreadable run (a newer format during an upgrade)
				// must not stop every other deadline: skip it.
				s.log.Error("claim due: skipping a run that cannot be read", "err", err)
				continue
			}
			if r.Pending == nil {
				s.log.Error("claim due: skipping a run waiting without a question", "run_id", r.ID)
				continue
			}
			cp, err := d.cp.join()
			if err != nil {
				s.log.Error("claim due: skipping a run whose checkpoint cannot be read", "run_id", r.ID, "err", err)
				continue
			}
			at := d.at.UTC()
			if at.Before(r.Updated) {
				at = r.Updated
			}
			step := r.Pending.Step
			r.Status, r.Pending, r.InFlight, r.Updated = state.StatusRunning, nil, nil, at
			r.History = append(r.History, state.Event{At: at, Who: "vmcp", Kind: state.EventDeadline, Step: step, Detail: answer})
			doc, summary, err := state.EncodeDocument(r)
			if err != nil {
				return err
			}
			batch.Queue(`UPDATE vmcp_runs SET status = 'running', pending_step = NULL, deadline = NULL, epoch = epoch + 1,
				holder = $2, doc = $3, summary = $4, updated_at = $5 WHERE id = $1`, r.ID, s.me, doc, summary, at)
			r.Checkpoint, r.Definition = cp, d.def
			out = append(out, r)
			epochs = append(epochs, d.epoch+1)
			// Taken out while the row is locked (see stepCache).
			ticket, _ := s.checkoutSteps(r.ID, d.epoch)
			stored, tickets = append(stored, d.cp), append(tickets, ticket)
		}
		if len(list) == 0 {
			return nil
		}
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("claim due questions: %w", err))
	}
	for i, r := range out {
		s.claimed(r.ID, epochs[i])
		if c := stored[i]; c.at != nil {
			s.installSteps(r.ID, tickets[i], epochs[i], sums(c.ids, c.vals))
		}
		s.changed(r.ID, state.StatusRunning)
	}
	return out, nil
}
