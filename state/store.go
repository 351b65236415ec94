package state

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FormatVersion is the version of the run documents this package writes
// (the same documents the PostgreSQL driver stores).
const FormatVersion = 1

// fileLayout is the version of the bbolt file's layout, kept in the meta
// bucket; Open refuses a file with a newer one. Layout 2 keeps a run's
// checkpoint in bRuns beside its document (one leaf and one tree for a
// pause instead of two); layout 1 kept it in bCheckpoints. Open upgrades
// a layout-1 file by writing 2: its checkpoints move one by one as they
// are next written (getCheckpoint reads either place), so no open copies
// the file's checkpoints, and a layout-1 vmcp refuses the file after.
const fileLayout = 2

// DefaultBatchSize is the most concurrent transitions one commit takes
// (group commit, see Options.BatchSize); DefaultLockTimeout bounds the
// wait for the file lock.
const (
	DefaultBatchSize    = 256
	DefaultLockTimeout  = time.Second
	defaultPageSize     = 50
	maxPageSize         = 1000
	maintenanceTxnLimit = 1000 // runs per commit in Recover and Prune
)

// Options tune Open; nil is valid and every zero value means the default.
type Options struct {
	// Retention of finished runs, used by Prune with a zero cut-off
	// (0 = keep forever).
	Retention time.Duration
	// Clock stamps transitions (default time.Now).
	Clock func() time.Time
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
	// LockTimeout bounds the wait for the file lock (default 1s).
	LockTimeout time.Duration
	// BatchSize is the most transitions committed together (default
	// DefaultBatchSize). There is no batching delay: a transition that
	// finds no commit in flight commits at once; those that arrive during
	// a commit share the next one.
	BatchSize int
}

// Store keeps runs in one bbolt file. It is safe for concurrent use; only
// one process may have the file open. Nothing is kept in memory per run.
type Store struct {
	db    *bbolt.DB
	path  string
	clock func() time.Time
	log   *slog.Logger
	keep  time.Duration
	group *groupCommit
	// boltBatch commits through bbolt's own Batch (db.MaxBatchDelay)
	// instead of the group committer: for benchmarks, to compare.
	boltBatch bool

	keyMu sync.Mutex
	key   []byte

	hub Hub // change hints, published after each commit a waiter cares about
}

// Bucket names. A run's records are keyed by its position, pos = created
// (8 bytes, big-endian Unix nanoseconds) + id, so runs created close in
// time share pages: concurrent transitions of recent runs dirty a few pages
// at the tail of each tree, not one random page per run. Index keys end in
// pos, so a prefix scan walked backwards lists newest first.
var (
	bMeta        = []byte("meta")
	bIDs         = []byte("ids")         // id → created (8 bytes): finds pos
	bRuns        = []byte("runs")        // pos+0 → run document (JSON), pos+1 → RunSummary (JSON), pos+2 → checkpoint (raw JSON)
	bCheckpoints = []byte("checkpoints") // layout 1: pos → checkpoint (raw JSON); now in bRuns (pos+2), this holds only those not yet moved
	bDefinitions = []byte("definitions") // sha256 hex → refcount (8 bytes) + source
	bIxStatus    = []byte("ix_status")   // status + pos
	bIxOwner     = []byte("ix_owner")    // owner + pos
	bIxOwnerStat = []byte("ix_owner_status")
	bIxWorkflow  = []byte("ix_workflow") // workflow + pos
	bIxDeadline  = []byte("ix_deadline") // deadline + pos → seq (8 bytes) + step
	bIxFinished  = []byte("ix_finished") // finished + pos

	allBuckets = [][]byte{bMeta, bIDs, bRuns, bCheckpoints, bDefinitions,
		bIxStatus, bIxOwner, bIxOwnerStat, bIxWorkflow, bIxDeadline, bIxFinished}
	indexBuckets = [][]byte{bIxStatus, bIxOwner, bIxOwnerStat, bIxWorkflow, bIxDeadline, bIxFinished}

	kFormat = []byte("format")
	kKey    = []byte("token_key")
)

// Open opens (creating if needed, with its parent directories) the state
// file at path. It fails after LockTimeout with ErrLocked when another
// process holds the file, and with ErrNewerFormat when a newer vmcp wrote
// it. Call Recover next, before any run executes.
func Open(path string, opts *Options) (*Store, error) {
	if opts == nil {
		opts = &Options{}
	}
	s := &Store{path: path, clock: opts.Clock, log: opts.Logger, keep: opts.Retention}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("state file %s: %w", path, err)
		}
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:      timeout,
		FreelistType: bbolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, &wrapped{fmt.Sprintf("state file %s is in use by another vmcp process (open timed out after %v)", path, timeout), ErrLocked}
	}
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	s.group = &groupCommit{db: db, max: opts.BatchSize}
	if s.group.max <= 0 {
		s.group.max = DefaultBatchSize
	}
	db.MaxBatchSize = s.group.max
	s.db = db
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// init creates the buckets and the format version of a new file, and
// checks the version of an existing one.
func (s *Store) init() error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if meta != nil {
			raw := meta.Get(kFormat)
			v, err := strconv.Atoi(string(raw))
			if err != nil {
				return fmt.Errorf("state file %s: unreadable format version %q", s.path, raw)
			}
			if v > fileLayout {
				return &wrapped{fmt.Sprintf("state file %s has format version %d; this vmcp understands up to %d: upgrade vmcp (or use another --state file)",
					s.path, v, fileLayout), ErrNewerFormat}
			}
			if v < fileLayout {
				// Layout 1 → 2: checkpoints move lazily (see fileLayout).
				if err := meta.Put(kFormat, []byte(strconv.Itoa(fileLayout))); err != nil {
					return fmt.Errorf("state file %s: %w", s.path, err)
				}
			}
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("state file %s: %w", s.path, err)
			}
		}
		if meta == nil {
			return tx.Bucket(bMeta).Put(kFormat, []byte(strconv.Itoa(fileLayout)))
		}
		return nil
	})
}

// WriteStats counts what the store's commits did since Open, for
// benchmarks and reports.
type WriteStats struct {
	// Commits made by the group committer and the transitions they
	// carried (Transitions/Commits is the mean group size).
	Commits, Transitions uint64
	// PageWrites is bbolt's TxStats.Write: page runs written (one write
	// call each: a node with its overflow pages, the freelist, the meta
	// page), Open's own commit included. A commit's time on disk grows
	// with it.
	PageWrites int64
	// InTx is the time spent applying the transitions inside the shared
	// write transactions (serial: one commit at a time), before bbolt's
	// own commit work (spilling the tree, writing, syncing).
	InTx time.Duration
}

// WriteStats returns the counts so far.
func (s *Store) WriteStats() WriteStats {
	c, t := s.group.counts()
	st := s.db.Stats()
	return WriteStats{Commits: c, Transitions: t, PageWrites: st.TxStats.GetWrite(), InTx: time.Duration(s.group.inTx.Load())}
}

// Path is the file the store was opened on.
func (s *Store) Path() string { return s.path }

// Close releases the file. Transitions after Close return ErrClosed.
func (s *Store) Close() error {
	s.hub.Close()
	return s.db.Close()
}

// Changes streams hints about this store's transitions (in-process: one
// process holds the file). See Driver.
func (s *Store) Changes(ctx context.Context) <-chan Change { return s.hub.Subscribe(ctx) }

// changed publishes a hint after a committed transition (err == nil).
func (s *Store) changed(err error, id, status string) {
	if err == nil {
		s.hub.Publish(Change{RunID: id, Status: status})
	}
}

// now is the transition time: UTC, no monotonic reading.
func (s *Store) now() time.Time { return s.clock().UTC() }

// write runs fn as one durable commit. A lone writer commits at once;
// concurrent writers share commits (groupCommit), so fn may run more than
// once (it must derive everything from tx and reset what it reports).
func (s *Store) write(ctx context.Context, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.boltBatch {
		return mapErr(s.db.Batch(fn))
	}
	return mapErr(s.group.do(fn))
}

func (s *Store) read(ctx context.Context, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return mapErr(s.db.View(fn))
}

func mapErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Key returns the 32-byte key for sealing resume tokens, generating and
// storing it on first use. It is the same across reopen.
func (s *Store) Key(ctx context.Context) ([]byte, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if s.key == nil {
		var key []byte
		err := s.read(ctx, func(tx *bbolt.Tx) error {
			key = clone(tx.Bucket(bMeta).Get(kKey))
			return nil
		})
		if err != nil {
			return nil, err
		}
		if key == nil {
			fresh := make([]byte, 32)
			_, _ = rand.Read(fresh)
			err = s.write(ctx, func(tx *bbolt.Tx) error {
				meta := tx.Bucket(bMeta)
				if k := meta.Get(kKey); k != nil {
					key = clone(k)
					return nil
				}
				key = fresh
				return meta.Put(kKey, fresh)
			})
			if err != nil {
				return nil, err
			}
		}
		if len(key) != 32 {
			return nil, fmt.Errorf("state file %s: token key has %d bytes, want 32", s.path, len(key))
		}
		s.key = key
	}
	return clone(s.key), nil
}

// wrapped is an error with its own message that still matches err.
type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
