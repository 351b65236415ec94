package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"go.etcd.io/bbolt"
)

const maxProblems = 20

// Check verifies the file: bbolt's own consistency check (pages,
// freelist), then the store's invariants: every run document decodes and
// is well-formed, every index entry and summary matches a document and
// none is missing, every checkpoint belongs to a run, and definition
// reference counts are right. It returns every problem found (up to 20),
// joined, or nil. It holds the write lock while it runs, so use it offline
// or in tests, not on a busy server.
func (s *Store) Check() error {
	tx, err := s.db.Begin(true) // bbolt's check is safe against writers only in a write transaction
	if err != nil {
		return mapErr(err)
	}
	defer func() { _ = tx.Rollback() }()
	var probs problems
	for err := range tx.Check() {
		probs.add("bbolt: %v", err)
	}
	checkStore(tx, &probs)
	return probs.err(s.path)
}

type problems struct {
	list []string
	more int
}

func (p *problems) add(format string, args ...any) {
	if len(p.list) == maxProblems {
		p.more++
		return
	}
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

func (p *problems) err(path string) error {
	if len(p.list) == 0 {
		return nil
	}
	errs := []error{fmt.Errorf("state file %s is inconsistent:", path)}
	for _, s := range p.list {
		errs = append(errs, errors.New("  "+s))
	}
	if p.more > 0 {
		errs = append(errs, fmt.Errorf("  and %d more problems", p.more))
	}
	return errors.Join(errs...)
}

func checkStore(tx *bbolt.Tx, p *problems) {
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			p.add("bucket %s is missing", name)
			return
		}
	}
	if v, err := strconv.Atoi(string(tx.Bucket(bMeta).Get(kFormat))); err != nil || v < 1 || v > fileLayout {
		p.add("format version %q is not one this vmcp writes", tx.Bucket(bMeta).Get(kFormat))
	}
	if k := tx.Bucket(bMeta).Get(kKey); k != nil && len(k) != 32 {
		p.add("token key has %d bytes, want 32", len(k))
	}

	expect := map[string]map[string][]byte{} // bucket → key → value
	for _, b := range indexBuckets {
		expect[string(b)] = map[string][]byte{}
	}
	defRefs := map[string]uint64{}
	runs, ids := tx.Bucket(bRuns), tx.Bucket(bIDs)

	_ = runs.ForEach(func(k, v []byte) error {
		if len(k) <= 9 {
			p.add("runs: malformed key %x", k)
			return nil
		}
		pos, kind := k[:len(k)-1], k[len(k)-1]
		switch kind {
		case kindHead:
			if runs.Get(docKey(pos)) == nil {
				p.add("runs: summary %x without a document", k)
			}
			return nil
		case kindCheckpoint:
			if runs.Get(docKey(pos)) == nil {
				p.add("runs: checkpoint %x without a document", k)
			}
			if tx.Bucket(bCheckpoints).Get(pos) != nil {
				p.add("runs: checkpoint %x is also stored in the old place (bucket %s)", k, bCheckpoints)
			}
			return nil
		case kindDoc:
		default:
			p.add("runs: key %x of unknown kind", k)
			return nil
		}
		id := string(pos[8:])
		d, err := decodeDoc(v)
		if err != nil {
			p.add("run %s: document does not decode: %v", id, err)
			return nil
		}
		checkDoc(id, d, p)
		if !bytes.Equal(d.pos(), pos) {
			p.add("run %s: stored at %x, belongs at %x", id, pos, d.pos())
		}
		if c := ids.Get([]byte(id)); !bytes.Equal(c, pos[:8]) {
			p.add("run %s: id entry %x, want %x", id, c, pos[:8])
		}
		for _, e := range d.entries() {
			expect[string(e.bucket)][string(e.key)] = e.val
		}
		if d.DefHash != "" {
			defRefs[d.DefHash]++
		}
		head, err := encodeJSON(d.head())
		if err != nil {
			p.add("run %s: summary does not encode: %v", id, err)
		} else if got := runs.Get(headKey(pos)); !bytes.Equal(got, head) {
			p.add("run %s: summary %s does not match the document (%s)", id, got, head)
		}
		return nil
	})
	for name, entries := range expect {
		_ = tx.Bucket([]byte(name)).ForEach(func(k, v []byte) error {
			val, ok := entries[string(k)]
			switch {
			case !ok:
				p.add("%s: entry %x matches no run", name, k)
			case !bytes.Equal(val, v):
				p.add("%s: entry %x has value %x, want %x", name, k, v, val)
			}
			delete(entries, string(k))
			return nil
		})
		for k := range entries {
			p.add("%s: entry %x is missing", name, k)
		}
	}
	_ = ids.ForEach(func(k, v []byte) error {
		if len(v) != 8 || runs.Get(docKey(cat(v, nil, string(k)))) == nil {
			p.add("id %s has no run", k)
		}
		return nil
	})
	_ = tx.Bucket(bCheckpoints).ForEach(func(k, _ []byte) error {
		if runs.Get(docKey(k)) == nil {
			p.add("checkpoint %x has no run", k)
		}
		return nil
	})
	_ = tx.Bucket(bDefinitions).ForEach(func(k, v []byte) error {
		if len(v) < 8 {
			p.add("definition %s: malformed", k)
			return nil
		}
		if n := binary.BigEndian.Uint64(v); n != defRefs[string(k)] {
			p.add("definition %s: reference count %d, used by %d runs", k, n, defRefs[string(k)])
		}
		if hashHex(v[8:]) != string(k) {
			p.add("definition %s: source does not match its hash", k)
		}
		delete(defRefs, string(k))
		return nil
	})
	for h := range defRefs {
		p.add("definition %s is used but missing", h)
	}
}

func checkDoc(key string, d *runDoc, p *problems) {
	switch {
	case d.ID != key:
		p.add("run %s: document names run %s", key, d.ID)
	case d.V < 1 || d.V > FormatVersion:
		p.add("run %s: format version %d", key, d.V)
	case !ValidStatus(d.Status):
		p.add("run %s: unknown status %q", key, d.Status)
	case d.Workflow == "" || d.Owner == "":
		p.add("run %s: no workflow or owner", key)
	case d.Created.IsZero() || d.Updated.IsZero():
		p.add("run %s: no creation or update time", key)
	case (d.Status == StatusWaiting) != (d.Pending != nil):
		p.add("run %s: status %s with pending question %v", key, d.Status, d.Pending != nil)
	case d.Pending != nil && (d.Pending.Seq != d.Seq || d.Pending.Step == ""):
		p.add("run %s: pending question seq %d, run seq %d", key, d.Pending.Seq, d.Seq)
	case Finished(d.Status) == d.Finished.IsZero():
		p.add("run %s: status %s with finished time %v", key, d.Status, d.Finished)
	case len(d.History) == 0 || d.History[0].Kind != EventCreated:
		p.add("run %s: history does not start with %q", key, EventCreated)
	}
}
