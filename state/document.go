package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// runDoc is a run as stored in bRuns: everything but the checkpoint (its
// own record beside the document) and the definition source (in
// bDefinitions, stored once for all the runs that share it).
type runDoc struct {
	V        int             `json:"v"`
	ID       string          `json:"id"`
	Workflow string          `json:"workflow"`
	Owner    string          `json:"owner"`
	Status   string          `json:"status"`
	Created  time.Time       `json:"created"`
	Updated  time.Time       `json:"updated"`
	Finished time.Time       `json:"finished,omitzero"`
	DefName  string          `json:"def_name,omitempty"`
	DefHash  string          `json:"def_hash,omitempty"`
	Params   json.RawMessage `json:"params,omitempty"`
	Seq      uint64          `json:"seq,omitempty"`
	Pending  *Question       `json:"pending,omitempty"`
	InFlight []string        `json:"in_flight,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	History  []Event         `json:"history"`
}

func (d *runDoc) head() RunSummary {
	h := RunSummary{ID: d.ID, Workflow: d.Workflow, Owner: d.Owner, Status: d.Status,
		Created: d.Created, Updated: d.Updated, Error: d.Error}
	if d.Pending != nil {
		h.PendingStep, h.PendingMessage, h.Deadline = d.Pending.Step, d.Pending.Message, d.Pending.Deadline
	}
	return h
}

// run builds the public Run; checkpoint and definition are copied in by
// the caller.
func (d *runDoc) run() *Run {
	r := &Run{ID: d.ID, Workflow: d.Workflow, Owner: d.Owner, Status: d.Status,
		Created: d.Created, Updated: d.Updated, Finished: d.Finished, FormatVersion: d.V,
		DefinitionName: d.DefName, DefinitionHash: d.DefHash, Params: d.Params, Seq: d.Seq,
		InFlight: d.InFlight, Result: d.Result, Error: d.Error, History: d.History}
	if d.Pending != nil {
		q := *d.Pending
		r.Pending = &q
	}
	return r
}

func decodeDoc(raw []byte) (*runDoc, error) {
	d := new(runDoc)
	if err := json.Unmarshal(raw, d); err != nil {
		return nil, err
	}
	return d, nil
}

// pos is where the run sorts: creation time, then id.
func (d *runDoc) pos() []byte { return cat(nil, ts(d.Created), d.ID) }

// Record keys in bRuns: pos and a kind byte that sorts below every byte an
// id may have, so that a run's records sort together and before those of
// a run whose id extends its id.
const (
	kindDoc        = 0
	kindHead       = 1
	kindCheckpoint = 2
)

func docKey(pos []byte) []byte        { return append(bytes.Clone(pos), kindDoc) }
func headKey(pos []byte) []byte       { return append(bytes.Clone(pos), kindHead) }
func checkpointKey(pos []byte) []byte { return append(bytes.Clone(pos), kindCheckpoint) }

// putCheckpoint stores a run's checkpoint beside its document (the leaf
// a transition rewrites anyway), and drops a layout-1 copy if there is
// one (a Delete of an absent key writes nothing).
func putCheckpoint(tx *bbolt.Tx, pos []byte, checkpoint json.RawMessage) error {
	if err := appendBucket(tx, bRuns).Put(checkpointKey(pos), checkpoint); err != nil {
		return err
	}
	return tx.Bucket(bCheckpoints).Delete(pos)
}

// getCheckpoint is a run's stored checkpoint (nil if none), valid for the
// life of tx: beside the document, or where layout 1 kept it.
func getCheckpoint(tx *bbolt.Tx, pos []byte) []byte {
	if v := tx.Bucket(bRuns).Get(checkpointKey(pos)); v != nil {
		return v
	}
	return tx.Bucket(bCheckpoints).Get(pos)
}

// lookup returns the position of run id (nil if there is none).
func lookup(tx *bbolt.Tx, id string) []byte {
	created := tx.Bucket(bIDs).Get([]byte(id))
	if len(created) != 8 {
		return nil
	}
	return cat(nil, created, id)
}

// loadDoc reads run id (nil, nil if there is none).
func loadDoc(tx *bbolt.Tx, id string) (*runDoc, error) {
	raw, found := rawDoc(tx, id)
	if !found {
		return nil, nil
	}
	if raw == nil {
		return nil, fmt.Errorf("run %s: id without a document: run Check", id)
	}
	d, err := decodeDoc(raw)
	if err != nil {
		return nil, fmt.Errorf("run %s: stored document: %w", id, err)
	}
	return d, nil
}

// rawDoc is run id's stored document, valid for the life of tx (found:
// the id is known; raw nil with found: an id without a document).
func rawDoc(tx *bbolt.Tx, id string) (raw []byte, found bool) {
	pos := lookup(tx, id)
	if pos == nil {
		return nil, false
	}
	return tx.Bucket(bRuns).Get(docKey(pos)), true
}

// entry is one index key (and value) a run document implies.
type entry struct {
	bucket []byte
	key    []byte
	val    []byte
}

// entries are every index entry for d.
func (d *runDoc) entries() []entry {
	pos := d.pos()
	e := []entry{
		{bIxStatus, cat(lp(nil, d.Status), pos, ""), nil},
		{bIxOwner, cat(lp(nil, d.Owner), pos, ""), nil},
		{bIxOwnerStat, cat(lp(lp(nil, d.Owner), d.Status), pos, ""), nil},
		{bIxWorkflow, cat(lp(nil, d.Workflow), pos, ""), nil},
	}
	if d.Status == StatusWaiting && d.Pending != nil && !d.Pending.Deadline.IsZero() {
		val := binary.BigEndian.AppendUint64(nil, d.Pending.Seq)
		e = append(e, entry{bIxDeadline, cat(ts(d.Pending.Deadline), pos, ""), append(val, d.Pending.Step...)})
	}
	if Finished(d.Status) {
		e = append(e, entry{bIxFinished, cat(ts(d.Finished), pos, ""), nil})
	}
	return e
}

// reindex moves index entries from old (a run's entries before the
// transition; nil for a new run) to those of after (nil for a deleted
// run), touching only what changed.
func reindex(tx *bbolt.Tx, old []entry, after *runDoc) error {
	var cur []entry
	if after != nil {
		cur = after.entries()
	}
	for _, o := range old {
		if !containsEntry(cur, o) {
			if err := tx.Bucket(o.bucket).Delete(o.key); err != nil {
				return err
			}
		}
	}
	for _, c := range cur {
		if !containsEntry(old, c) {
			if err := appendBucket(tx, c.bucket).Put(c.key, c.val); err != nil {
				return err
			}
		}
	}
	return nil
}

func containsEntry(list []entry, e entry) bool {
	for _, x := range list {
		if bytes.Equal(x.bucket, e.bucket) && bytes.Equal(x.key, e.key) && bytes.Equal(x.val, e.val) {
			return true
		}
	}
	return false
}

// appendBucket returns a bucket keyed by pos for writing. New runs go to
// the end of it, so its pages are split nearly full rather than half full
// (bbolt's default, right for random inserts): files are ~40% smaller.
// Index entries are appended too (to the end of their owner's, status's
// or workflow's part: pos grows; deadlines mostly grow), so index pages
// are filled the same way: fewer pages, and a tree level fewer for a
// pause to rewrite at some sizes (3,000 runs grown by transitions: 21.2 →
// 16.9 page runs per pause).
func appendBucket(tx *bbolt.Tx, name []byte) *bbolt.Bucket {
	b := tx.Bucket(name)
	b.FillPercent = 0.9
	return b
}

// putDoc writes d and its summary, and moves its index entries from old.
func putDoc(tx *bbolt.Tx, old []entry, d *runDoc) error {
	raw, err := encodeJSON(d)
	if err != nil {
		return fmt.Errorf("encode run %s: %w", d.ID, err)
	}
	head, err := encodeJSON(d.head())
	if err != nil {
		return fmt.Errorf("encode run %s: %w", d.ID, err)
	}
	pos := d.pos()
	runs := appendBucket(tx, bRuns)
	if err := runs.Put(docKey(pos), raw); err != nil {
		return err
	}
	if err := runs.Put(headKey(pos), head); err != nil {
		return err
	}
	return reindex(tx, old, d)
}

// insertRun stores a new run: its id, document, summary, indexes,
// checkpoint and a reference to its definition.
func insertRun(tx *bbolt.Tx, d *runDoc, checkpoint json.RawMessage, definition []byte) error {
	if err := tx.Bucket(bIDs).Put([]byte(d.ID), ts(d.Created)); err != nil {
		return err
	}
	if len(checkpoint) > 0 {
		if err := putCheckpoint(tx, d.pos(), checkpoint); err != nil {
			return err
		}
	}
	if d.DefHash != "" {
		if err := refDefinition(tx, d.DefHash, definition, 1); err != nil {
			return err
		}
	}
	return putDoc(tx, nil, d)
}

// deleteRun removes a run and everything that points to it.
func deleteRun(tx *bbolt.Tx, id string) error {
	d, err := loadDoc(tx, id)
	if err != nil {
		return err
	}
	if d == nil {
		return fmt.Errorf("delete run %s: not found: run Check", id)
	}
	if err := reindex(tx, d.entries(), nil); err != nil {
		return err
	}
	if d.DefHash != "" {
		if err := refDefinition(tx, d.DefHash, nil, -1); err != nil {
			return err
		}
	}
	pos := d.pos()
	for _, del := range []struct{ b, k []byte }{{bRuns, docKey(pos)}, {bRuns, headKey(pos)}, {bRuns, checkpointKey(pos)}, {bCheckpoints, pos}, {bIDs, []byte(id)}} {
		if err := tx.Bucket(del.b).Delete(del.k); err != nil {
			return err
		}
	}
	return nil
}

// refDefinition adds delta to the reference count of a stored definition,
// storing it (delta > 0) or deleting it (count 0) as needed.
func refDefinition(tx *bbolt.Tx, hash string, source []byte, delta int64) error {
	b := tx.Bucket(bDefinitions)
	key := []byte(hash)
	var n uint64
	cur := b.Get(key)
	if len(cur) >= 8 {
		n = binary.BigEndian.Uint64(cur)
		if source == nil {
			source = cur[8:]
		}
	}
	n = uint64(int64(n) + delta)
	if int64(n) <= 0 {
		return b.Delete(key)
	}
	val := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(source)), n)
	return b.Put(key, append(val, source...))
}

// encodeJSON is json.Marshal without HTML escaping, so that raw JSON
// (parameters, answers, results) keeps its bytes apart from whitespace.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ts is t as 8 sortable bytes (Unix nanoseconds; times before 1970 sort
// first, together).
func ts(t time.Time) []byte {
	n := t.UnixNano()
	if n < 0 {
		n = 0
	}
	return binary.BigEndian.AppendUint64(nil, uint64(n))
}

// lp appends s with a uvarint length prefix, so that no component is a
// prefix of another ("ab" and "abc" differ in the length byte) and any
// byte (NUL included) may appear in s.
func lp(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func cat(prefix, stamp []byte, id string) []byte {
	k := make([]byte, 0, len(prefix)+len(stamp)+len(id))
	k = append(k, prefix...)
	k = append(k, stamp...)
	return append(k, id...)
}
