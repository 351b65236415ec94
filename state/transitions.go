package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"
)

// Every exported method here is one transition: one durable commit, or a
// refusal (*TransitionError) that changes nothing. Concurrent transitions
// share commits; the closures handed to write may run more than once, so
// each derives everything from the transaction and resets what it reports.

const maxIDLen = 200

// Create stores a new run, status running, and records "created". On
// success it fills in r.ID (when empty), Status, Created (when zero),
// Updated, FormatVersion and DefinitionHash, and puts the created event
// first in r.History. Params and Checkpoint, when set, must be valid JSON.
func (s *Store) Create(ctx context.Context, r *Run) error {
	if r == nil {
		return fmt.Errorf("create run: nil run: %w", ErrInvalid)
	}
	id := r.ID
	if id == "" {
		id = NewRunID()
	}
	if why := createArgs(id, r); why != "" {
		return invalid("create", id, why)
	}
	now := s.now()
	created := r.Created
	if created.IsZero() {
		created = now
	}
	created = created.UTC()
	var hash string
	if len(r.Definition) > 0 {
		hash = hashHex(r.Definition)
	}
	history := append([]Event{{At: created, Who: r.Owner, Kind: EventCreated}}, r.History...)
	d := &runDoc{V: FormatVersion, ID: id, Workflow: r.Workflow, Owner: r.Owner, Status: StatusRunning,
		Created: created, Updated: now, DefName: r.DefinitionName, DefHash: hash,
		Params: r.Params, InFlight: slices.Clone(r.InFlight), History: history}
	if r.Status == StatusWaiting {
		var ev Event
		d.Pending, ev = NewPause(*r.Pending, 1, now)
		d.Status, d.Seq, d.History = StatusWaiting, 1, append(d.History, ev)
		history = d.History
	}
	var refused error
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		refused = nil
		if lookup(tx, id) != nil {
			refused = &TransitionError{Op: "create", RunID: id, Err: ErrExists}
			return nil
		}
		return insertRun(tx, d, r.Checkpoint, r.Definition)
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return err
	}
	r.ID, r.Status, r.Created, r.Updated, r.FormatVersion, r.DefinitionHash, r.History, r.Seq, r.Pending =
		id, d.Status, created, now, FormatVersion, hash, history, d.Seq, d.Pending
	return nil
}

// NewPause is the pending question and the "paused" event of pause number
// seq at now (every driver's Pause, and Create of a waiting run).
func NewPause(q Question, seq uint64, now time.Time) (*Question, Event) {
	if !q.Deadline.IsZero() {
		q.Deadline = q.Deadline.UTC()
	}
	q.Seq = seq
	detail, _ := json.Marshal(struct {
		Seq      uint64    `json:"seq"`
		Deadline time.Time `json:"deadline,omitzero"`
	}{q.Seq, q.Deadline})
	return &q, Event{At: now, Kind: EventPaused, Step: q.Step, Detail: detail}
}

func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// createArgs says what is wrong with a new run ("" if nothing).
func createArgs(id string, r *Run) string {
	switch {
	case !validID(id):
		return fmt.Sprintf("id must be 1 to %d characters of A-Z a-z 0-9 _ -", maxIDLen)
	case r.Workflow == "":
		return "empty workflow"
	case r.Owner == "":
		return "empty owner"
	case r.Status != "" && r.Status != StatusRunning && r.Status != StatusWaiting:
		return fmt.Sprintf("a new run is running or waiting, not %s", r.Status)
	case r.Status == StatusWaiting && (r.Pending == nil || r.Pending.Step == ""):
		return "a new waiting run needs its question's step"
	case r.Status == StatusWaiting && len(r.InFlight) > 0:
		return "a new waiting run has no steps in flight"
	case r.Status != StatusWaiting && r.Pending != nil:
		return "only a new waiting run has a question"
	case r.Result != nil || r.Error != "" || r.Seq != 0 || !r.Finished.IsZero():
		return "a new run has no result or error"
	case len(r.Definition) == 0 && r.DefinitionHash != "":
		return "definition hash without the definition"
	case len(r.Definition) > 0 && r.DefinitionHash != "" && r.DefinitionHash != hashHex(r.Definition):
		return "definition hash does not match the definition"
	}
	if err := validJSON("params", r.Params, true); err != nil {
		return err.Error()
	}
	if err := validJSON("checkpoint", r.Checkpoint, true); err != nil {
		return err.Error()
	}
	if r.Pending != nil {
		if err := validJSON("question schema", r.Pending.Schema, true); err != nil {
			return err.Error()
		}
	}
	for _, ev := range r.History {
		if err := validJSON("history detail", ev.Detail, true); err != nil {
			return err.Error()
		}
	}
	return ""
}

func hashHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// validJSON checks an optional (empty ok when optional) raw JSON value.
func validJSON(what string, raw json.RawMessage, optional bool) error {
	if len(raw) == 0 {
		if optional {
			return nil
		}
		return fmt.Errorf("empty %s", what)
	}
	if !json.Valid(raw) {
		return fmt.Errorf("%s is not valid JSON", what)
	}
	return nil
}

// refusal builds the *TransitionError for a run in the wrong status.
func refusal(op string, d *runDoc, err error, detail string) error {
	return &TransitionError{Op: op, RunID: d.ID, Status: d.Status, Err: err, Detail: detail}
}

// modify is one transition of an existing run: fn checks the freshly
// decoded document and refuses (returning a *TransitionError, having
// written nothing) or changes it and makes any other writes; modify then
// stores the document and moves its index entries. now is read inside the
// commit, so a run's history is in time order.
//
// The document is decoded before the commit, outside the write lock, and
// used inside it only if the stored bytes are still the same (else it is
// decoded again there): concurrent transitions share a commit whose
// closures run one after another, so their decoding is taken out of that
// serial part and done while the previous commit syncs.
func (s *Store) modify(ctx context.Context, op, id string, fn func(tx *bbolt.Tx, d *runDoc, now time.Time) error) error {
	pre := s.predecode(id)
	var refused error
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		refused = nil
		now := s.now()
		d, err := pre.load(tx, id)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if d == nil {
			refused = &TransitionError{Op: op, RunID: id, Err: ErrNotFound}
			return nil
		}
		old := d.entries()
		if err := fn(tx, d, now); err != nil {
			if te := (*TransitionError)(nil); errors.As(err, &te) {
				refused = err
				return nil
			}
			return err
		}
		return putDoc(tx, old, d)
	})
	if err != nil {
		return err
	}
	return refused
}

// predecoded is a run document read and decoded before a commit.
type predecoded struct {
	raw []byte
	d   *runDoc
}

// predecode reads and decodes run id in a read transaction (nil if it is
// not there or does not decode: the commit then reads it itself).
func (s *Store) predecode(id string) *predecoded {
	var p *predecoded
	_ = s.db.View(func(tx *bbolt.Tx) error {
		raw, _ := rawDoc(tx, id)
		if raw == nil {
			return nil
		}
		if d, err := decodeDoc(raw); err == nil {
			p = &predecoded{raw: clone(raw), d: d}
		}
		return nil
	})
	return p
}

// load is loadDoc in the commit, using the predecoded document (once: a
// closure that runs again decodes afresh) when the stored bytes are the
// ones it was decoded from.
func (p *predecoded) load(tx *bbolt.Tx, id string) (*runDoc, error) {
	if p != nil && p.d != nil {
		d := p.d
		p.d = nil
		raw, found := rawDoc(tx, id)
		if found && bytes.Equal(raw, p.raw) {
			return d, nil
		}
	}
	return loadDoc(tx, id)
}

func invalid(op, id, why string) error {
	return fmt.Errorf("%s run %s: %s: %w", op, id, why, ErrInvalid)
}

// Checkpoint stores a running run's checkpoint and the steps in flight.
func (s *Store) Checkpoint(ctx context.Context, id string, checkpoint json.RawMessage, inFlight []string) error {
	if err := validJSON("checkpoint", checkpoint, false); err != nil {
		return invalid("checkpoint", id, err.Error())
	}
	inFlight = slices.Clone(inFlight)
	return s.modify(ctx, "checkpoint", id, func(tx *bbolt.Tx, d *runDoc, now time.Time) error {
		if d.Status != StatusRunning {
			return refusal("checkpoint", d, ErrNotRunning, "")
		}
		d.InFlight, d.Updated = inFlight, now
		return putCheckpoint(tx, d.pos(), checkpoint)
	})
}

// Pause makes a running (or interrupted) run wait on q: it stores the
// checkpoint (nil keeps the stored one), sets Pending with the next
// sequence number and records "paused". It returns that sequence number,
// which a resume token binds.
func (s *Store) Pause(ctx context.Context, id string, checkpoint json.RawMessage, q Question) (uint64, error) {
	if err := validJSON("checkpoint", checkpoint, true); err != nil {
		return 0, invalid("pause", id, err.Error())
	}
	if q.Step == "" {
		return 0, invalid("pause", id, "question without a step")
	}
	if err := validJSON("question schema", q.Schema, true); err != nil {
		return 0, invalid("pause", id, err.Error())
	}
	if !q.Deadline.IsZero() {
		q.Deadline = q.Deadline.UTC()
	}
	var seq uint64
	err := s.modify(ctx, "pause", id, func(tx *bbolt.Tx, d *runDoc, now time.Time) error {
		seq = 0
		if d.Status != StatusRunning && d.Status != StatusInterrupted {
			return refusal("pause", d, ErrNotRunning, "")
		}
		if len(checkpoint) > 0 {
			if err := putCheckpoint(tx, d.pos(), checkpoint); err != nil {
				return err
			}
		}
		pending, ev := NewPause(q, d.Seq+1, now)
		d.Seq, d.Pending, d.Status, d.InFlight, d.Updated = pending.Seq, pending, StatusWaiting, nil, now
		d.History = append(d.History, ev)
		seq = pending.Seq
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.changed(nil, id, StatusWaiting)
	return seq, nil
}

// Claim is the answer transition: a run waiting on step at pause seq
// becomes running, its question is cleared, and "answered" is recorded with
// who, when and the answer (raw JSON). It returns the run as it is now,
// checkpoint and definition included, for the caller to resume. Exactly one
// of several concurrent answers to the same question succeeds; the others
// get ErrNotWaiting, or ErrStaleAnswer when the run has paused again since.
// Checking that who may answer is the caller's job.
func (s *Store) Claim(ctx context.Context, id, step string, seq uint64, who string, answer json.RawMessage) (*Run, error) {
	return s.claim(ctx, "claim", id, step, seq, who, EventAnswered, answer, false)
}

// ClaimDeadline is Claim for a question whose deadline has passed (see
// DueDeadlines): it records "deadline" (who "vmcp") with the answer the
// caller applies on time-out, and refuses with ErrNotDue before the
// deadline. Like Claim it applies once.
func (s *Store) ClaimDeadline(ctx context.Context, due DueQuestion, answer json.RawMessage) (*Run, error) {
	return s.claim(ctx, "claim deadline of", due.RunID, due.Step, due.Seq, "vmcp", EventDeadline, answer, true)
}

func (s *Store) claim(ctx context.Context, op, id, step string, seq uint64, who, kind string, answer json.RawMessage, due bool) (*Run, error) {
	if err := validJSON("answer", answer, false); err != nil {
		return nil, invalid(op, id, err.Error())
	}
	var out *Run
	err := s.modify(ctx, op, id, func(tx *bbolt.Tx, d *runDoc, now time.Time) error {
		out = nil
		if d.Status != StatusWaiting || d.Pending == nil {
			return refusal(op, d, ErrNotWaiting, "")
		}
		if p := d.Pending; p.Step != step || p.Seq != seq {
			return refusal(op, d, ErrStaleAnswer, fmt.Sprintf("the answer is for step %q (pause %d); the run waits on step %q (pause %d)",
				step, seq, p.Step, p.Seq))
		}
		if due && (d.Pending.Deadline.IsZero() || now.Before(d.Pending.Deadline)) {
			return refusal(op, d, ErrNotDue, "")
		}
		d.Status, d.Pending, d.InFlight, d.Updated = StatusRunning, nil, nil, now
		d.History = append(d.History, Event{At: now, Who: who, Kind: kind, Step: step, Detail: answer})
		out = fullRun(tx, d)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.changed(nil, id, StatusRunning)
	return out, nil
}

// fullRun is d with its checkpoint and definition, copied out of tx.
func fullRun(tx *bbolt.Tx, d *runDoc) *Run {
	r := d.run()
	r.Checkpoint = clone(getCheckpoint(tx, d.pos()))
	if d.DefHash != "" {
		if v := tx.Bucket(bDefinitions).Get([]byte(d.DefHash)); len(v) >= 8 {
			r.Definition = clone(v[8:])
		}
	}
	return r
}

// Resume makes an interrupted run running again (history "resumed", by
// who) and returns it whole. Which in-flight steps may run again is the
// caller's decision (SPEC §5).
func (s *Store) Resume(ctx context.Context, id, who string) (*Run, error) {
	var out *Run
	err := s.modify(ctx, "resume", id, func(tx *bbolt.Tx, d *runDoc, now time.Time) error {
		out = nil
		if d.Status != StatusInterrupted {
			return refusal("resume", d, ErrNotInterrupted, "")
		}
		d.Status, d.Updated = StatusRunning, now
		d.History = append(d.History, Event{At: now, Who: who, Kind: EventResumed})
		out = fullRun(tx, d)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.changed(nil, id, StatusRunning)
	return out, nil
}

// Finish ends a running (or interrupted) run with status completed, failed
// or cancelled, its result (raw JSON, may be nil) and error message.
func (s *Store) Finish(ctx context.Context, id, status string, result json.RawMessage, errMsg string) error {
	if !Finished(status) {
		return invalid("finish", id, fmt.Sprintf("%q is not a final status", status))
	}
	if err := validJSON("result", result, true); err != nil {
		return invalid("finish", id, err.Error())
	}
	var detail json.RawMessage
	if errMsg != "" {
		detail, _ = json.Marshal(map[string]string{"error": errMsg})
	}
	err := s.modify(ctx, "finish", id, func(tx *bbolt.Tx, d *runDoc, now time.Time) error {
		if d.Status != StatusRunning && d.Status != StatusInterrupted {
			return refusal("finish", d, ErrNotRunning, "")
		}
		d.Status, d.Result, d.Error, d.Pending, d.InFlight = status, result, errMsg, nil, nil
		d.Updated, d.Finished = now, now
		d.History = append(d.History, Event{At: now, Kind: status, Detail: detail})
		return nil
	})
	s.changed(err, id, status)
	return err
}

// Cancel ends a waiting, interrupted or running run as cancelled, by who;
// finished runs are refused with ErrNotCancellable. A running run's
// executor learns it from the change hint (and from its next transition,
// which is refused): it cancels the run's context, so its backend calls
// stop, and records nothing more.
func (s *Store) Cancel(ctx context.Context, id, who string) error {
	err := s.modify(ctx, "cancel", id, func(tx *bbolt.Tx, d *runDoc, now time.Time) error {
		if d.Status != StatusWaiting && d.Status != StatusInterrupted && d.Status != StatusRunning {
			return refusal("cancel", d, ErrNotCancellable, "")
		}
		step := ""
		if d.Pending != nil {
			step = d.Pending.Step
		}
		d.Status, d.Pending, d.InFlight, d.Updated, d.Finished = StatusCancelled, nil, nil, now, now
		d.History = append(d.History, Event{At: now, Who: who, Kind: EventCancelled, Step: step})
		return nil
	})
	s.changed(err, id, StatusCancelled)
	return err
}

// AppendHistory adds ev to a run's history (At defaults to now). The
// history is append-only.
func (s *Store) AppendHistory(ctx context.Context, id string, ev Event) error {
	if ev.Kind == "" {
		return invalid("append history to", id, "event without a kind")
	}
	if err := validJSON("event detail", ev.Detail, true); err != nil {
		return invalid("append history to", id, err.Error())
	}
	at := ev.At.UTC()
	return s.modify(ctx, "append history to", id, func(tx *bbolt.Tx, d *runDoc, now time.Time) error {
		e := ev
		if e.At = at; at.IsZero() {
			e.At = now
		}
		d.History = append(d.History, e)
		d.Updated = now
		return nil
	})
}

// ClaimDue claims up to max questions due by now (earliest first) with the
// time-out answer, in one commit: each becomes running with a "deadline"
// event by "vmcp", as ClaimDeadline would, and is returned whole.
func (s *Store) ClaimDue(ctx context.Context, now time.Time, max int, answer json.RawMessage) ([]*Run, error) {
	if err := validJSON("answer", answer, false); err != nil {
		return nil, invalid("claim due", "", err.Error())
	}
	if max <= 0 {
		max = maxPageSize
	}
	end := ts(now)
	// Nothing due (the sweep's usual answer, once a second): no write
	// transaction, whose commit would sync the file for nothing.
	if at, ok, err := s.NextDeadline(ctx); err != nil || !ok || at.After(now) {
		return nil, err
	}
	var out []*Run
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		out = nil
		at := s.now()
		c := tx.Bucket(bIxDeadline).Cursor()
		var ids []string
		for k, _ := c.First(); k != nil && len(ids) < max; k, _ = c.Next() {
			if len(k) <= 16 {
				return fmt.Errorf("deadline index: malformed entry %x: run Check", k)
			}
			if bytes.Compare(k[:8], end) > 0 {
				break
			}
			ids = append(ids, string(k[16:]))
		}
		for _, id := range ids {
			d, err := loadDoc(tx, id)
			if err != nil || d == nil {
				return fmt.Errorf("claim due: index entry for run %s: %v: run Check", id, err)
			}
			if d.Status != StatusWaiting || d.Pending == nil || d.Pending.Deadline.IsZero() || d.Pending.Deadline.After(now) {
				continue
			}
			old := d.entries()
			step := d.Pending.Step
			d.Status, d.Pending, d.InFlight, d.Updated = StatusRunning, nil, nil, at
			d.History = append(d.History, Event{At: at, Who: "vmcp", Kind: EventDeadline, Step: step, Detail: answer})
			if err := putDoc(tx, old, d); err != nil {
				return err
			}
			out = append(out, fullRun(tx, d))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, r := range out {
		s.changed(nil, r.ID, StatusRunning)
	}
	return out, nil
}
