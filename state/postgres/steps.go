package postgres

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Step results as their own rows (migration 4, design §5.2). The engine's
// checkpoint is one JSON object whose "steps" member maps step ids to each
// step's state; after the first few steps that map is nearly all of it.
// A split checkpoint is stored as
//
//   - vmcp_runs.checkpoint: the checkpoint with the steps object replaced
//     by {} (the skeleton), and steps_at: the byte offset of that {};
//   - one vmcp_steps row per entry: the step id and the entry's value, byte
//     for byte.
//
// Reassembly puts the entries back, sorted by id, as encoding/json writes
// a map: a checkpoint is split only when that gives back its exact bytes
// (checked when splitting), so Get returns what was written, byte for byte,
// and a copy's checksums compare real bytes. Anything else (not an object,
// no steps object, whitespace or unsorted or duplicate keys in it, a step
// id PostgreSQL text cannot hold) is stored whole, as every checkpoint was
// before migration 4; both forms are read.
//
// A transition writes only the step rows whose bytes changed: the replica
// keeps the SHA-256 of each stored step of the runs it holds (stepCache),
// and without them (the first write after another replica's claim) it
// upserts every step with a WHERE that skips unchanged rows.

// splitCP is a checkpoint ready to store.
type splitCP struct {
	stored []byte // the checkpoint column: skeleton (split) or whole
	at     *int32 // steps_at; nil: stored whole
	ids    []string
	vals   [][]byte // vals[i] is step ids[i]'s state
}

// splitCheckpoint splits cp if its steps take more than above bytes
// (negative: whatever their size) and reassembly gives back its bytes
// exactly.
// It scans cp once without decoding the step states (they stay slices of
// cp); whatever it makes of cp, a split is kept only if joining it gives
// cp back byte for byte.
func splitCheckpoint(cp []byte, above int) splitCP {
	whole := splitCP{stored: nilIfEmpty(cp)}
	start, end, ok := stepsSpan(cp)
	if !ok || cp[start] != '{' || start > 1<<31-3 || (above >= 0 && end-start <= above) {
		return whole
	}
	var ids []string
	var vals [][]byte
	obj := cp[start:end]
	ok = members(obj, func(id string, vs, ve int) bool {
		if !utf8.ValidString(id) || strings.IndexByte(id, 0) >= 0 {
			return false // not a PostgreSQL text value
		}
		if len(ids) > 0 && id <= ids[len(ids)-1] {
			return false // unsorted or duplicate
		}
		ids, vals = append(ids, id), append(vals, obj[vs:ve:ve])
		return true
	})
	if !ok || !bytes.Equal(stepsObject(ids, vals), cp[start:end]) {
		return whole // whitespace, key order, escapes: keep its bytes
	}
	skel := make([]byte, 0, len(cp)-(end-start)+2)
	skel = append(append(append(skel, cp[:start]...), "{}"...), cp[end:]...)
	at := int32(start)
	return splitCP{stored: skel, at: &at, ids: ids, vals: vals}
}

// stepsSpan finds the value of the top-level "steps" member of the JSON
// object cp: cp[start:end]. ok is false if cp is not an object or has no
// steps member or more than one.
func stepsSpan(cp []byte) (start, end int, ok bool) {
	found := false
	if !members(cp, func(key string, vs, ve int) bool {
		if key != "steps" {
			return true
		}
		if found {
			return false
		}
		found, start, end = true, vs, ve
		return true
	}) {
		return 0, 0, false
	}
	return start, end, found && start < end
}

// members calls fn with each member of the JSON object obj (key decoded,
// value obj[vs:ve]) until fn returns false. It reports whether obj
// is one object, alone but for spaces around it, and fn accepted every
// member. It checks structure, not every detail of the grammar: callers
// keep a split only if it joins back to the same bytes.
func members(obj []byte, fn func(key string, vs, ve int) bool) bool {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return false
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return skipSpace(obj, i+1) == len(obj)
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return false
		}
		ke := skipString(obj, i)
		if ke < 0 {
			return false
		}
		raw := obj[i:ke]
		var key string
		if bytes.IndexByte(raw, '\\') < 0 {
			key = string(raw[1 : len(raw)-1])
		} else if err := json.Unmarshal(raw, &key); err != nil {
			return false
		}
		i = skipSpace(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return false
		}
		vs := skipSpace(obj, i+1)
		ve := skipValue(obj, vs)
		if ve < 0 || !fn(key, vs, ve) {
			return false
		}
		i = skipSpace(obj, ve)
		if i >= len(obj) {
			return false
		}
		switch obj[i] {
		case ',':
			i = skipSpace(obj, i+1)
		case '}':
			return skipSpace(obj, i+1) == len(obj)
		default:
			return false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] ('"'),
// or -1.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			return -1
		}
		j += q
		n := 0 // backslashes right before it: an odd count escapes it
		for k := j - 1; k > i && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return j + 1
		}
		j++
	}
	return -1
}

// skipValue returns the index after the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				e := skipString(b, i)
				if e < 0 {
					return -1
				}
				i = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && !bytes.ContainsRune([]byte(",}] \t\n\r"), rune(b[j])) {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// stepsObject writes the steps object as encoding/json writes a map of
// raw values whose keys are sorted.
func stepsObject(ids []string, vals [][]byte) []byte {
	n := 2
	for i := range ids {
		n += len(ids[i]) + len(vals[i]) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(id) // a string never fails
		b = append(append(append(b, k...), ':'), vals[i]...)
	}
	return append(b, '}')
}

// joinCheckpoint reassembles a stored checkpoint: stored itself when at is
// nil (whole), else the skeleton with the steps rows put back.
func joinCheckpoint(stored []byte, at *int32, ids []string, vals [][]byte) ([]byte, error) {
	if at == nil {
		return stored, nil
	}
	i := int(*at)
	if i < 0 || i+2 > len(stored) || string(stored[i:i+2]) != "{}" {
		return nil, fmt.Errorf("stored checkpoint: steps_at %d does not mark the steps object", i)
	}
	if len(ids) != len(vals) {
		return nil, fmt.Errorf("stored checkpoint: %d step ids, %d step states", len(ids), len(vals))
	}
	if !slices.IsSorted(ids) {
		// The query sorts them (COLLATE "C": byte order); never rely on it.
		idx := make([]int, len(ids))
		for k := range idx {
			idx[k] = k
		}
		slices.SortFunc(idx, func(a, b int) int { return strings.Compare(ids[a], ids[b]) })
		sid, sval := make([]string, len(ids)), make([][]byte, len(ids))
		for k, j := range idx {
			sid[k], sval[k] = ids[j], vals[j]
		}
		ids, vals = sid, sval
	}
	obj := stepsObject(ids, vals)
	out := make([]byte, 0, len(stored)-2+len(obj))
	return append(append(append(out, stored[:i]...), obj...), stored[i+2:]...), nil
}

// stepCols are the select-list expressions that read a run's step rows
// (ids and states, in id order) next to vmcp_runs r.
const stepCols = `r.steps_at,
	CASE WHEN r.steps_at IS NOT NULL THEN (SELECT array_agg(s.step ORDER BY s.step) FROM vmcp_steps s WHERE s.run_id = r.id) END,
	CASE WHEN r.steps_at IS NOT NULL THEN (SELECT array_agg(s.output ORDER BY s.step) FROM vmcp_steps s WHERE s.run_id = r.id) END`

// storedCP is a checkpoint as read: the column, steps_at and step rows.
type storedCP struct {
	cp   []byte
	at   *int32
	ids  []string
	vals [][]byte
}

// dest returns the scan destinations for stepCols.
func (c *storedCP) dest() []any { return []any{&c.at, &c.ids, &c.vals} }

func (c *storedCP) join() ([]byte, error) { return joinCheckpoint(c.cp, c.at, c.ids, c.vals) }

// sums are the SHA-256 of each step's stored bytes.
func sums(ids []string, vals [][]byte) map[string][32]byte {
	m := make(map[string][32]byte, len(ids))
	for i, id := range ids {
		m[id] = sha256.Sum256(vals[i])
	}
	return m
}

// stepCache is what this replica knows is stored as a held run's step
// rows. An entry is valid only as the result of the latest write or read
// of the run made by this replica under the run's row lock: every
// transition takes it out (checkout, which also advances seq) while it
// holds the lock and puts the new state back after its commit (install)
// only if no later transition took it out meanwhile.
type stepCache struct {
	seq   uint64
	epoch int64
	sums  map[string][32]byte // nil: unknown
}

// checkoutSteps invalidates run id's entry and returns the ticket for
// installing the next one and the sums it held for epoch (nil: unknown).
func (s *Store) checkoutSteps(id string, epoch int64) (ticket uint64, known map[string][32]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stepSeq++
	e := s.steps[id]
	if e == nil {
		e = &stepCache{}
		s.steps[id] = e
	}
	if e.sums != nil && e.epoch == epoch {
		known = e.sums
	}
	e.seq, e.sums = s.stepSeq, nil
	return s.stepSeq, known
}

// installSteps records sums (not nil) as run id's stored steps at epoch,
// unless a later transition took the entry out since ticket.
func (s *Store) installSteps(id string, ticket uint64, epoch int64, m map[string][32]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.steps[id]; e != nil && e.seq == ticket {
		e.epoch, e.sums = epoch, m
	}
}

// StepWrites counts step rows this replica's transitions sent for
// writing (upserted or deleted), for tests and benchmarks.
func (s *Store) StepWrites() uint64 { return s.stepWrites.Load() }

const upsertSteps = `INSERT INTO vmcp_steps (run_id, step, output, epoch, at)
	SELECT $1, u.step, u.output, $4, $5 FROM unnest($2::text[], $3::bytea[]) AS u(step, output)
	ON CONFLICT (run_id, step) DO UPDATE SET output = EXCLUDED.output, epoch = EXCLUDED.epoch, at = EXCLUDED.at
	WHERE vmcp_steps.output IS DISTINCT FROM EXCLUDED.output`

// queueSteps queues the step-row writes that take run id from what is
// stored (oldAt: its steps_at before the transition; known: the sums of
// its stored steps, nil if unknown) to sp, at epoch and time at. It
// returns the sums of sp's steps (nil when sp is stored whole).
func (s *Store) queueSteps(w *pgx.Batch, id string, oldAt *int32, known map[string][32]byte, sp splitCP, epoch int64, at time.Time) map[string][32]byte {
	if sp.at == nil {
		if oldAt != nil {
			w.Queue(`DELETE FROM vmcp_steps WHERE run_id = $1`, id)
		}
		return nil
	}
	now := sums(sp.ids, sp.vals)
	if oldAt == nil || known == nil {
		// Unknown: send every step; unchanged rows are not rewritten.
		if oldAt != nil {
			w.Queue(`DELETE FROM vmcp_steps WHERE run_id = $1 AND step <> ALL($2::text[])`, id, sp.ids)
		}
		if len(sp.ids) > 0 {
			w.Queue(upsertSteps, id, sp.ids, sp.vals, epoch, at)
			s.stepWrites.Add(uint64(len(sp.ids)))
		}
		return now
	}
	var gone []string
	for old := range known {
		if _, ok := now[old]; !ok {
			gone = append(gone, old)
		}
	}
	if len(gone) > 0 {
		slices.Sort(gone)
		w.Queue(`DELETE FROM vmcp_steps WHERE run_id = $1 AND step = ANY($2::text[])`, id, gone)
		s.stepWrites.Add(uint64(len(gone)))
	}
	var ids []string
	var vals [][]byte
	for i, sid := range sp.ids {
		if h, ok := known[sid]; !ok || h != now[sid] {
			ids, vals = append(ids, sid), append(vals, sp.vals[i])
		}
	}
	if len(ids) > 0 {
		w.Queue(upsertSteps, id, ids, vals, epoch, at)
		s.stepWrites.Add(uint64(len(ids)))
	}
	return now
}
