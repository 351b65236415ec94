package state

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Get returns a run whole: document, checkpoint and definition.
func (s *Store) Get(ctx context.Context, id string) (*Run, error) {
	var out *Run
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		d, err := loadDoc(tx, id)
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		if d == nil {
			return &TransitionError{Op: "get", RunID: id, Err: ErrNotFound}
		}
		out = fullRun(tx, d)
		return nil
	})
	return out, err
}

// List returns runs matching f, newest first, a page at a time: next is
// the cursor for the following page ("" when there is none). It walks the
// index that fits the filter (owner+status, owner, status, workflow or
// creation time), so a page costs about Limit reads; filters that no index
// covers (workflow with owner or status) skip non-matching rows.
func (s *Store) List(ctx context.Context, f Filter) (runs []*RunSummary, next string, err error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultPageSize
	}
	limit = min(limit, maxPageSize)
	if f.Status != "" && !ValidStatus(f.Status) {
		return nil, "", fmt.Errorf("list runs: unknown status %q: %w", f.Status, ErrInvalid)
	}
	var after []byte // the position (stamp + id) of the last row already returned
	if f.Cursor != "" {
		after, err = base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || len(after) <= 8 || len(after) > 8+maxIDLen {
			return nil, "", ErrBadCursor
		}
	}
	// Without owner, status or workflow, walk the records themselves
	// (their summaries); otherwise the index that fits.
	bucket, prefix := bRuns, []byte(nil)
	checkWorkflow := f.Workflow != ""
	switch {
	case f.Owner != "" && f.Status != "":
		bucket, prefix = bIxOwnerStat, lp(lp(nil, f.Owner), f.Status)
	case f.Owner != "":
		bucket, prefix = bIxOwner, lp(nil, f.Owner)
	case f.Status != "":
		bucket, prefix = bIxStatus, lp(nil, f.Status)
	case f.Workflow != "":
		bucket, prefix, checkWorkflow = bIxWorkflow, lp(nil, f.Workflow), false
	}
	primary := prefix == nil
	err = s.read(ctx, func(tx *bbolt.Tx) error {
		runs, next = nil, ""
		records := tx.Bucket(bRuns)
		c := tx.Bucket(bucket).Cursor()
		var k []byte
		if after == nil {
			k = seekBefore(c, append(bytes.Clone(prefix), bytes.Repeat([]byte{0xff}, 9)...))
		} else {
			k = seekBefore(c, append(bytes.Clone(prefix), after...))
		}
		var last []byte
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
			pos := k[len(prefix):]
			if primary {
				if k[len(k)-1] != kindHead {
					continue
				}
				pos = k[:len(k)-1]
			}
			if len(pos) <= 8 {
				return fmt.Errorf("list runs: malformed key %x in %s: run Check", k, bucket)
			}
			if len(runs) == limit {
				// More rows follow: continue after the last one returned.
				next = base64.RawURLEncoding.EncodeToString(last)
				break
			}
			raw := records.Get(headKey(pos))
			if raw == nil {
				return fmt.Errorf("list runs: index entry without a run (%x): run Check", k)
			}
			h := new(RunSummary)
			if err := json.Unmarshal(raw, h); err != nil {
				return fmt.Errorf("list runs: stored summary: %w", err)
			}
			if checkWorkflow && h.Workflow != f.Workflow {
				continue
			}
			runs = append(runs, h)
			last = append(last[:0], pos...)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return runs, next, nil
}

// seekBefore positions c on the greatest key below k and returns it (nil
// if none).
func seekBefore(c *bbolt.Cursor, k []byte) []byte {
	got, _ := c.Seek(k)
	if got == nil {
		got, _ = c.Last()
		return got
	}
	got, _ = c.Prev()
	return got
}

// DueDeadlines returns up to limit waiting questions whose deadline is at
// or before now, earliest first, from the deadline index: there is no
// timer or goroutine per waiting run. Apply each with ClaimDeadline.
func (s *Store) DueDeadlines(ctx context.Context, now time.Time, limit int) ([]DueQuestion, error) {
	if limit <= 0 {
		limit = maxPageSize
	}
	var due []DueQuestion
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		due = nil
		c := tx.Bucket(bIxDeadline).Cursor()
		end := ts(now)
		for k, v := c.First(); k != nil && len(due) < limit; k, v = c.Next() {
			if len(k) <= 16 || len(v) < 8 {
				return fmt.Errorf("deadline index: malformed entry %x: run Check", k)
			}
			if bytes.Compare(k[:8], end) > 0 {
				break
			}
			due = append(due, DueQuestion{RunID: string(k[16:]), Seq: binary.BigEndian.Uint64(v),
				Step: string(v[8:]), Deadline: time.Unix(0, int64(binary.BigEndian.Uint64(k))).UTC()})
		}
		return nil
	})
	return due, err
}

// NextDeadline is the earliest pending deadline (ok false if none): one
// timer for the nearest is all a server needs.
func (s *Store) NextDeadline(ctx context.Context) (at time.Time, ok bool, err error) {
	err = s.read(ctx, func(tx *bbolt.Tx) error {
		k, _ := tx.Bucket(bIxDeadline).Cursor().First()
		if len(k) > 8 {
			at, ok = time.Unix(0, int64(binary.BigEndian.Uint64(k))).UTC(), true
		}
		return nil
	})
	return at, ok, err
}

// Recover marks every running run interrupted (history "interrupted") and
// returns them. Call it once at startup, before this process runs
// anything: a run still marked running was executing when vmcp stopped.
// Waiting runs are untouched. Runs are moved a thousand per commit.
func (s *Store) Recover(ctx context.Context) (interrupted []Interrupted, err error) {
	now := s.now()
	for {
		if err := ctx.Err(); err != nil {
			return interrupted, err
		}
		n := 0
		var batch []Interrupted
		err := s.db.Update(func(tx *bbolt.Tx) error {
			n, batch = 0, batch[:0]
			prefix := lp(nil, StatusRunning)
			c := tx.Bucket(bIxStatus).Cursor()
			var ids []string
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(ids) < maintenanceTxnLimit; k, _ = c.Next() {
				ids = append(ids, string(k[len(prefix)+8:]))
			}
			for _, id := range ids {
				d, err := loadDoc(tx, id)
				if err != nil || d == nil {
					return fmt.Errorf("recover: index entry for run %s: %v: run Check", id, err)
				}
				old := d.entries()
				d.Status, d.Updated = StatusInterrupted, now
				detail, _ := json.Marshal(map[string][]string{"in_flight": d.InFlight})
				d.History = append(d.History, Event{At: now, Who: "vmcp", Kind: EventInterrupted, Detail: detail})
				if err := putDoc(tx, old, d); err != nil {
					return err
				}
				batch = append(batch, Interrupted{ID: id, Workflow: d.Workflow, Owner: d.Owner, InFlight: d.InFlight})
			}
			n = len(ids)
			return nil
		})
		if err = mapErr(err); err != nil {
			return interrupted, err
		}
		interrupted = append(interrupted, batch...)
		if n < maintenanceTxnLimit {
			break
		}
	}
	if len(interrupted) > 0 {
		s.log.Info("runs interrupted by the last stop", "count", len(interrupted), "path", s.path)
	}
	return interrupted, nil
}

// Prune deletes runs that finished before the cut-off (a zero before means
// now minus Options.Retention; with no retention, nothing), and returns how
// many. Waiting and interrupted runs are never pruned. Runs are deleted a
// thousand per commit.
func (s *Store) Prune(ctx context.Context, before time.Time) (int, error) {
	if before.IsZero() {
		if s.keep <= 0 {
			return 0, nil
		}
		before = s.now().Add(-s.keep)
	}
	end := ts(before)
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n := 0
		err := s.db.Update(func(tx *bbolt.Tx) error {
			n = 0
			c := tx.Bucket(bIxFinished).Cursor()
			var ids []string
			for k, _ := c.First(); k != nil && len(ids) < maintenanceTxnLimit; k, _ = c.Next() {
				if len(k) <= 16 || bytes.Compare(k[:8], end) >= 0 {
					break
				}
				ids = append(ids, string(k[16:]))
			}
			for _, id := range ids {
				if err := deleteRun(tx, id); err != nil {
					return err
				}
			}
			n = len(ids)
			return nil
		})
		if err = mapErr(err); err != nil {
			return total, err
		}
		total += n
		if n < maintenanceTxnLimit {
			break
		}
	}
	if total > 0 {
		s.log.Info("pruned finished runs", "count", total, "before", before, "path", s.path)
	}
	return total, nil
}
