// Package postgres is the PostgreSQL state driver: several vmcp replicas
// share runs, leases and the resume-token key through one database. It
// implements state.Driver with the same transitions as the bbolt store,
// each one PostgreSQL transaction, and stores the same run documents byte
// for byte (bytea).
//
// Every replica (every Open) has a random id, a row in vmcp_replicas and a
// heartbeat that extends its lease. A run being executed has holder = the
// replica and an epoch that grows at every claim (create, answer, resume,
// takeover); the holder's later writes of that run are accepted only at
// that epoch, so a replica that was taken over is fenced (state.ErrFenced).
// The sweep (every SweepInterval, on every replica) interrupts running runs
// whose holder's lease expired, with FOR UPDATE SKIP LOCKED so that each is
// taken over once. All times are the database's.
package postgres

import (
	"cmp"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vmcp-dev/vmcp/state"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Defaults (configuration reference: state.postgres.*).
const (
	DefaultSchema        = "vmcp"
	DefaultMaxConns      = 8
	DefaultLeaseTTL      = 10 * time.Second
	DefaultHeartbeat     = 2 * time.Second
	DefaultSweepInterval = time.Second
	// DefaultStepRowsAbove: see Options.StepRowsAbove. Measured here
	// (bench scenario 9): a pause whose 2 KiB checkpoint became one step
	// row ran 16 % fewer pauses/s at concurrency 8 than the same pause
	// stored whole (the step row is a second row and index entry to
	// write); a pause adding a step to ten 3 KiB steps took 0.93 × the
	// whole write.
	DefaultStepRowsAbove    = 8 << 10
	DefaultStatementTimeout = 5 * time.Second
	maintenanceBatch        = 1000
	migrateLockKey          = 0x766d6370 // "vmcp"
	pruneLockKey            = 0x766d6371
)

// Options tune Open; nil is valid and every zero value means the default.
type Options struct {
	// Schema holds vmcp's tables (created if missing).
	Schema string
	// MaxConns is the connection pool size.
	MaxConns int32
	// StepRowsAbove: a checkpoint whose steps take more than this many
	// bytes is stored as step rows (vmcp_steps, one per step, only the
	// changed ones written); a smaller one is stored whole in the run's
	// row, where one row write costs less than a row per step. 0:
	// DefaultStepRowsAbove; negative: always as step rows.
	StepRowsAbove int
	// LeaseTTL: a replica whose heartbeat is older than this is presumed
	// dead and its running runs are taken over.
	LeaseTTL time.Duration
	// Heartbeat is how often the replica extends its lease.
	Heartbeat time.Duration
	// SweepInterval is how often this replica looks for orphaned runs
	// (negative: never; Recover still works).
	SweepInterval time.Duration
	// StatementTimeout bounds every statement (and idle transactions), so
	// a hung replica cannot hold row locks.
	StatementTimeout time.Duration
	// Retention of finished runs, for Prune with a zero cut-off.
	Retention time.Duration
	// ListenDSN is the direct connection (not through a transaction
	// pooler such as PgBouncer) that LISTENs for other replicas' change
	// hints; default: the DSN.
	ListenDSN string
	// TokenKeys, when set, are the resume-token keys (32 bytes each; the
	// first seals); otherwise a key is generated once into vmcp_keys.
	TokenKeys [][]byte
	// NoMigrate refuses a database whose schema is older than this vmcp
	// (run `vmcp state migrate`) instead of migrating it.
	NoMigrate bool
	// ReplicaID names this replica (default: random, so every start is a
	// new replica). A stable id (a pod name) makes a restart recognise the
	// runs its previous life held: Open releases them, and Recover then
	// interrupts them at once instead of after the lease. Two live
	// processes must never share an id.
	ReplicaID string
	Version   string
	Address   string
	Logger    *slog.Logger
	// OnTakeover, when set, is called after the sweep (or Recover) has
	// interrupted runs of replicas that stopped, with those runs' ids:
	// this replica took them over and may continue them (claiming each
	// with Resume, which only one replica's claim passes). Runs this
	// replica's own previous life held (stable ReplicaID) are reported by
	// the sweep but not by Recover (see Recover). It runs on the caller's
	// goroutine and must not block.
	OnTakeover func(ids []string)
	// OnSweep receives the runs a background sweep interrupted (taken
	// over from replicas whose lease expired), after the commit.
	OnSweep func(context.Context, []state.Interrupted)
}

// Store is a state driver on PostgreSQL. It is safe for concurrent use, by
// any number of processes on one database.
type Store struct {
	splitAbove int // Options.StepRowsAbove
	pool       *pgxpool.Pool
	schema     string
	me         string
	ttl        time.Duration
	keep       time.Duration
	keys       [][]byte
	log        *slog.Logger
	// onSweep: Options.OnSweep.
	onSweep func(context.Context, []state.Interrupted)

	mu   sync.Mutex
	held map[string]int64 // runs this replica claimed → epoch of the claim
	key  []byte
	// steps: the stored step rows of runs this replica holds (steps.go).
	steps      map[string]*stepCache
	stepSeq    uint64
	stepWrites atomic.Uint64
	// docs: the stored documents of runs this replica holds, for
	// transitions in one round trip (held.go); clock: the database's
	// clock as last read.
	docs        map[string]heldDoc
	docBytes    int // the kept documents' bytes, at most docBudget
	docBudget   int
	clock       atomic.Pointer[dbClock]
	fastWrites  atomic.Uint64 // transitions in one round trip
	fastCreates atomic.Uint64

	hbMu   sync.Mutex
	lastHB time.Time // last successful heartbeat (this process's monotonic clock)
	lapses uint64    // heartbeats that renewed a lease which had stopped being live

	onTakeover func(ids []string)

	hub       state.Hub   // change hints for this process's subscribers
	notifyQ   chan string // "status id" to pg_notify
	listening atomic.Bool

	stop   context.CancelFunc
	done   sync.WaitGroup
	closed sync.Once
}

var _ state.Driver = (*Store)(nil)

// Open connects to dsn, applies missing migrations (under an advisory lock,
// unless NoMigrate), registers this replica and starts its heartbeat and
// sweep. A database migrated by a newer vmcp is refused (state.ErrNewerFormat).
func Open(ctx context.Context, dsn string, opts *Options) (*Store, error) {
	if opts == nil {
		opts = &Options{}
	}
	o := *opts
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = min(DefaultHeartbeat, o.LeaseTTL/3)
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.StepRowsAbove == 0 {
		o.StepRowsAbove = DefaultStepRowsAbove
	}
	if o.StatementTimeout <= 0 {
		o.StatementTimeout = DefaultStatementTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if 3*o.Heartbeat > o.LeaseTTL {
		// Live() needs a heartbeat within half a lease; a beat every
		// third of one leaves room for a slow one.
		return nil, fmt.Errorf("state.postgres: heartbeat %v must be at most a third of lease_ttl %v", o.Heartbeat, o.LeaseTTL)
	}
	for i, k := range o.TokenKeys {
		if len(k) != 32 {
			return nil, fmt.Errorf("state.postgres.token_keys[%d]: %d bytes, want 32", i, len(k))
		}
	}
	cfg, err := PoolConfig(dsn, o.Schema, o.StatementTimeout)
	if err != nil {
		return nil, err
	}
	if o.ListenDSN != "" {
		// Else the listener would retry it forever, warning.
		if _, err := pgxpool.ParseConfig(o.ListenDSN); err != nil {
			return nil, fmt.Errorf("state.postgres.listen_dsn: %w", err)
		}
	}
	cfg.MaxConns = o.MaxConns
	if err := Migrate(ctx, dsn, o.Schema, o.NoMigrate); err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("state.dsn: %w", err)
	}
	id := o.ReplicaID
	if id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id = "p_" + hex.EncodeToString(b[:])
	}
	s := &Store{splitAbove: o.StepRowsAbove, pool: pool, schema: o.Schema, me: id, ttl: o.LeaseTTL, keep: o.Retention,
		keys: o.TokenKeys, log: o.Logger, held: map[string]int64{}, steps: map[string]*stepCache{}, docs: map[string]heldDoc{}, docBudget: defaultHeldBytes, notifyQ: make(chan string, 4096),
		onTakeover: o.OnTakeover, onSweep: o.OnSweep}
	if o.ReplicaID != "" {
		// A restart of this replica: what it held is orphaned.
		_, err = pool.Exec(ctx, `UPDATE vmcp_runs SET holder = NULL WHERE holder = $1 AND status = 'running'`, id)
	}
	if err == nil {
		_, err = pool.Exec(ctx, `INSERT INTO vmcp_replicas (id, started_at, heartbeat_at, expires_at, version, address)
			VALUES ($1, now(), now(), now() + $2::interval, $3, $4)
			ON CONFLICT (id) DO UPDATE SET started_at = now(), heartbeat_at = now(), expires_at = EXCLUDED.expires_at,
			  version = EXCLUDED.version, address = EXCLUDED.address`, id, o.LeaseTTL, o.Version, o.Address)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("state: registering replica %s: %w", id, err)
	}
	s.beat(time.Now())
	bg, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.done.Add(1)
	go s.heartbeatLoop(bg, o.Heartbeat)
	if o.SweepInterval > 0 {
		s.done.Add(1)
		go s.sweepLoop(bg, o.SweepInterval)
	}
	s.done.Add(2)
	go s.notifyLoop(bg)
	go s.listenLoop(bg, cmp.Or(o.ListenDSN, dsn))
	return s, nil
}

// PoolConfig parses dsn for vmcp: its schema first on the search path, and
// statement and idle-transaction timeouts.
func PoolConfig(dsn, schema string, statementTimeout time.Duration) (*pgxpool.Config, error) {
	if dsn == "" {
		return nil, errors.New("state.dsn is empty: state.driver postgres needs a PostgreSQL connection string")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("state.dsn: %w", err)
	}
	rp := cfg.ConnConfig.RuntimeParams
	rp["search_path"] = pgx.Identifier{schema}.Sanitize()
	if statementTimeout > 0 {
		ms := strconv.FormatInt(statementTimeout.Milliseconds(), 10)
		rp["statement_timeout"] = ms
		rp["idle_in_transaction_session_timeout"] = ms
	}
	return cfg, nil
}

// migration is one embedded file, NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []migration
	for _, n := range names {
		base := strings.TrimPrefix(n, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: no version number", base)
		}
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{v, base, string(b)})
	}
	return out, nil
}

// SchemaVersion is the newest migration this vmcp has.
func SchemaVersion() int {
	m, _ := migrations()
	if len(m) == 0 {
		return 0
	}
	return m[len(m)-1].version
}

// Migrate brings schema to this vmcp's version, each migration in one
// transaction, all under a session advisory lock so that replicas starting
// together migrate once. checkOnly reports an older schema as an error
// instead. A schema newer than this vmcp is always an error.
func Migrate(ctx context.Context, dsn, schema string, checkOnly bool) error {
	all, err := migrations()
	if err != nil {
		return err
	}
	cfg, err := PoolConfig(dsn, schema, 0)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("state.dsn: connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sch := pgx.Identifier{schema}.Sanitize()
	want := 0
	if len(all) > 0 {
		want = all[len(all)-1].version
	}
	// Up to date (the usual case): nothing to lock or create, so a serving
	// user without CREATE privileges can open a migrated schema.
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, sch+".vmcp_migrations").Scan(&exists); err != nil {
		return fmt.Errorf("state: reading schema version: %w", err)
	}
	if exists {
		var have int
		if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+sch+`.vmcp_migrations`).Scan(&have); err != nil {
			return fmt.Errorf("state: reading schema version: %w", err)
		}
		if have == want {
			return nil
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		return fmt.Errorf("state: migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLockKey) //nolint:errcheck
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+sch); err != nil {
		return fmt.Errorf("state: creating schema %s: %w%s", schema, err, privilegeHint(err))
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+sch+`.vmcp_migrations (
		version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("state: migrations table: %w", err)
	}
	var have int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+sch+`.vmcp_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("state: reading schema version: %w", err)
	}
	if have > want {
		return fmt.Errorf("state: schema %s is at version %d; this vmcp understands up to %d: upgrade vmcp: %w", schema, have, want, state.ErrNewerFormat)
	}
	if have < want && checkOnly {
		return fmt.Errorf("state: schema %s is at version %d, this vmcp needs %d: run `vmcp state migrate`", schema, have, want)
	}
	for _, m := range all {
		if m.version <= have {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL search_path TO `+sch); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO vmcp_migrations (version, name) VALUES ($1, $2)`, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("state: migration %s: %w%s", m.name, err, privilegeHint(err))
		}
	}
	return nil
}

// ReplicaID is this replica's id (its row in vmcp_replicas).
func (s *Store) ReplicaID() string { return s.me }

// Pool is the connection pool (for tools and tests).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close stops the heartbeat and sweep and removes this replica's row, so
// that the runs it still holds are taken over at the next sweep anywhere.
func (s *Store) Close() error {
	s.closed.Do(func() {
		s.stop()
		s.done.Wait()
		s.hub.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = s.pool.Exec(ctx, `DELETE FROM vmcp_replicas WHERE id = $1`, s.me)
		s.pool.Close()
	})
	return nil
}

func (s *Store) beat(at time.Time) {
	s.hbMu.Lock()
	defer s.hbMu.Unlock()
	if !at.After(s.lastHB) {
		return // a slow heartbeat that started before the last one
	}
	if !s.lastHB.IsZero() && at.Sub(s.lastHB) >= s.ttl/2 {
		s.lapses++
	}
	s.lastHB = at
}

// Lapses counts the times this replica's lease stopped being live (see
// Live) and was renewed later. An execution that spans a lapse may have
// been taken over meanwhile: check Holds before acting for it again.
func (s *Store) Lapses() uint64 {
	s.hbMu.Lock()
	defer s.hbMu.Unlock()
	return s.lapses
}

// Holds reports whether this replica still holds running run id at the
// epoch it claimed it (false: taken over, released, or never claimed).
func (s *Store) Holds(ctx context.Context, id string) (bool, error) {
	s.mu.Lock()
	epoch, ok := s.held[id]
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	var holds bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM vmcp_runs
		WHERE id = $1 AND holder = $2 AND epoch = $3 AND status = 'running')`, id, s.me, epoch).Scan(&holds)
	if err != nil {
		return false, mapErr(fmt.Errorf("run %s: %w", id, err))
	}
	return holds, nil
}

// Live reports whether this replica's lease is safely current: its last
// heartbeat succeeded less than half a lease ago. A replica that is not
// live must stop calling backends (self-fencing): another may take its
// runs over once the lease expires.
func (s *Store) Live() bool {
	s.hbMu.Lock()
	defer s.hbMu.Unlock()
	return time.Since(s.lastHB) < s.ttl/2
}

// HeldEpoch returns the epoch at which this replica holds running run id
// (false: it does not hold it). A replica that stops executing a run
// notes it then, to Release that claim and no later one.
func (s *Store) HeldEpoch(id string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	epoch, ok := s.held[id]
	return epoch, ok
}

// Release gives up this replica's claim on running run id at epoch (see
// HeldEpoch) without writing anything else (it stopped executing it:
// self-fenced): the run's holder is cleared at that epoch, so the next
// sweep of any replica, this one included, takes it over as if this
// replica had died. A run this replica no longer holds at that epoch
// (taken over meanwhile, finished, or claimed here again since: a later
// claim is another execution's) is left alone; that is not an error.
func (s *Store) Release(ctx context.Context, id string, epoch int64) error {
	s.mu.Lock()
	mine, ok := s.held[id]
	s.mu.Unlock()
	if !ok || mine != epoch {
		return nil
	}
	_, err := s.pool.Exec(ctx, `UPDATE vmcp_runs SET holder = NULL
		WHERE id = $1 AND holder = $2 AND epoch = $3 AND status = 'running'`, id, s.me, epoch)
	if err != nil {
		return mapErr(fmt.Errorf("release run %s: %w", id, err))
	}
	s.mu.Lock()
	if s.held[id] == epoch {
		delete(s.held, id)
		delete(s.steps, id)
		s.forgetDocLocked(id)
	}
	s.mu.Unlock()
	return nil
}

// Heartbeat extends this replica's lease (re-registering it if a sweep
// removed it).
func (s *Store) Heartbeat(ctx context.Context) error {
	start := time.Now()
	// The database's clock comes back with it: the reading one-round-trip
	// transitions estimate from (held.go) stays fresh.
	var dbNow time.Time
	err := s.pool.QueryRow(ctx, `UPDATE vmcp_replicas SET heartbeat_at = now(), expires_at = now() + $2::interval WHERE id = $1
		RETURNING clock_timestamp()`, s.me, s.ttl).Scan(&dbNow)
	if err == nil {
		s.sawClock(dbNow, time.Now())
	}
	if errors.Is(err, pgx.ErrNoRows) {
		_, err = s.pool.Exec(ctx, `INSERT INTO vmcp_replicas (id, started_at, heartbeat_at, expires_at)
			VALUES ($1, now(), now(), now() + $2::interval) ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at, heartbeat_at = EXCLUDED.heartbeat_at`,
			s.me, s.ttl)
	}
	if err != nil {
		return fmt.Errorf("state: heartbeat of replica %s: %w", s.me, err)
	}
	s.beat(start)
	return nil
}

func (s *Store) heartbeatLoop(ctx context.Context, every time.Duration) {
	s.tick(ctx, every, func() {
		// Bounded: a database cut off without a reset (a partition) must
		// not hold the loop in one attempt until TCP gives up.
		hctx, cancel := context.WithTimeout(ctx, max(every, s.ttl/3))
		defer cancel()
		if err := s.Heartbeat(hctx); err != nil && ctx.Err() == nil {
			s.log.Warn("state heartbeat failed", "replica", s.me, "err", err)
		}
	})
}

func (s *Store) sweepLoop(ctx context.Context, every time.Duration) {
	s.tick(ctx, every, func() {
		done, err := s.interruptOrphans(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("state sweep failed", "replica", s.me, "err", err)
		}
		// Runs of batches committed before an error are reported too.
		if len(done) > 0 {
			s.log.Warn("took over runs of a replica that stopped; they are interrupted", "runs", len(done))
			if s.onSweep != nil {
				s.onSweep(ctx, done)
			}
			if s.onTakeover != nil {
				ids := make([]string, len(done))
				for i, o := range done {
					ids[i] = o.ID
				}
				s.onTakeover(ids)
			}
		}
		// Replicas gone for an hour: forget them.
		_, _ = s.pool.Exec(ctx, `DELETE FROM vmcp_replicas WHERE expires_at < now() - interval '1 hour'`)
	})
}

// tick runs fn every interval until ctx ends (one of s.done's loops).
func (s *Store) tick(ctx context.Context, every time.Duration, fn func()) {
	defer s.done.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// Replica is one row of vmcp_replicas.
type Replica struct {
	ID        string
	Started   time.Time
	Heartbeat time.Time
	Expires   time.Time
	Live      bool
	Version   string
	Address   string
}

// Replicas lists the registered replicas, live ones first.
func (s *Store) Replicas(ctx context.Context) ([]Replica, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, started_at, heartbeat_at, expires_at, expires_at > now(), version, address
		FROM vmcp_replicas ORDER BY expires_at > now() DESC, started_at`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Replica, error) {
		var x Replica
		err := r.Scan(&x.ID, &x.Started, &x.Heartbeat, &x.Expires, &x.Live, &x.Version, &x.Address)
		return x, err
	})
}

// Key returns the resume-token key: the first configured one, or the
// newest non-retired key in vmcp_keys (generated on first use, once for
// all replicas).
func (s *Store) Key(ctx context.Context) ([]byte, error) {
	if len(s.keys) > 0 {
		return append([]byte(nil), s.keys[0]...), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key != nil {
		return append([]byte(nil), s.key...), nil
	}
	fresh := make([]byte, 32)
	_, _ = rand.Read(fresh)
	if _, err := s.pool.Exec(ctx, `INSERT INTO vmcp_keys (kid, key) SELECT 'k1', $1
		WHERE NOT EXISTS (SELECT 1 FROM vmcp_keys WHERE retired_at IS NULL) ON CONFLICT (kid) DO NOTHING`, fresh); err != nil {
		return nil, mapErr(fmt.Errorf("state: token key: %w", err))
	}
	var key []byte
	err := s.pool.QueryRow(ctx, `SELECT key FROM vmcp_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid DESC LIMIT 1`).Scan(&key)
	if err != nil {
		return nil, mapErr(fmt.Errorf("state: token key: %w", err))
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("state: token key in vmcp_keys has %d bytes, want 32", len(key))
	}
	s.key = key
	return append([]byte(nil), key...), nil
}

// mapErr turns a closed pool into state.ErrClosed.
func mapErr(err error) error {
	if err != nil && strings.Contains(err.Error(), "closed pool") {
		return fmt.Errorf("%w: %v", state.ErrClosed, err)
	}
	return err
}

// privilegeHint explains a permission error during migrations.
func privilegeHint(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42501" {
		return " (this database user may not create vmcp's tables: run `vmcp state migrate` as a user that may, then serve as this one)"
	}
	return ""
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// ImportKey stores key as the resume-token key, so that tokens sealed by
// the store the runs were copied from still open. It refuses to replace a
// different key the database already has.
func (s *Store) ImportKey(ctx context.Context, key []byte) error {
	if len(key) != 32 {
		return fmt.Errorf("state: token key has %d bytes, want 32", len(key))
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO vmcp_keys (kid, key) SELECT 'k1', $1
		WHERE NOT EXISTS (SELECT 1 FROM vmcp_keys WHERE retired_at IS NULL) ON CONFLICT (kid) DO NOTHING`, key); err != nil {
		return mapErr(fmt.Errorf("state: token key: %w", err))
	}
	have, err := s.Key(ctx)
	if err != nil {
		return err
	}
	if string(have) != string(key) {
		return errors.New("state: the database already has another resume-token key; tokens sealed by the copied store will not open (retire it in vmcp_keys first if that is intended)")
	}
	return nil
}

// Count is the number of runs stored.
func (s *Store) Count(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM vmcp_runs`).Scan(&n)
	return n, mapErr(err)
}
