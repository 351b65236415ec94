package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

// BenchmarkDriver is the driver benchmark (statetest.BenchTransitions) on
// PostgreSQL, to compare with the same benchmark on bbolt in state.
func BenchmarkDriver(b *testing.B) {
	dsn := statetest.PostgresDSN(b)
	o := &postgres.Options{Schema: statetest.SchemaName(b), SweepInterval: -1}
	s, err := postgres.Open(b.Context(), dsn, o)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_, _ = s.Pool().Exec(b.Context(), `DROP SCHEMA `+o.Schema+` CASCADE`)
		s.Close()
	}()
	statetest.BenchTransitions(b, s)
}

// BenchmarkList100k is a page of 50 runs by owner and status among
// 100,000 stored runs (10 owners, 4 statuses), first page and the next.
func BenchmarkList100k(b *testing.B) {
	dsn := statetest.PostgresDSN(b)
	o := &postgres.Options{Schema: statetest.SchemaName(b), SweepInterval: -1, StatementTimeout: time.Minute}
	s, err := postgres.Open(b.Context(), dsn, o)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_, _ = s.Pool().Exec(context.Background(), `DROP SCHEMA `+o.Schema+` CASCADE`)
		s.Close()
	}()
	ctx := b.Context()
	start := time.Now()
	// Running runs are held by s, a live replica: nothing to recover.
	_, err = s.Pool().Exec(ctx, `INSERT INTO vmcp_runs (id, owner, workflow, status, holder, doc, summary, created_at, updated_at)
		SELECT 'r_' || i, convert_to('owner' || (i % 10), 'UTF8'), convert_to('deploy', 'UTF8'),
		  (ARRAY['running','waiting','completed','failed'])[i % 4 + 1],
		  CASE WHEN i % 4 = 0 THEN $1 END,
		  convert_to('{"v":1}', 'UTF8'),
		  convert_to(json_build_object('id', 'r_' || i, 'workflow', 'deploy', 'owner', 'owner' || (i % 10),
		    'status', (ARRAY['running','waiting','completed','failed'])[i % 4 + 1])::text, 'UTF8'),
		  now() - i * interval '1 second', now()
		FROM generate_series(1, 100000) AS i`, s.ReplicaID())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `ANALYZE vmcp_runs`); err != nil {
		b.Fatal(err)
	}
	b.Logf("100,000 runs stored in %v", time.Since(start).Round(time.Millisecond))
	// What a replica does before it is ready: open (migrations checked,
	// replica registered), recover, load the key.
	b.Run("open-recover-key", func(b *testing.B) {
		for b.Loop() {
			s2, err := postgres.Open(ctx, dsn, o)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s2.Recover(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := s2.Key(ctx); err != nil {
				b.Fatal(err)
			}
			s2.Close()
		}
	})
	f := state.Filter{Owner: "owner3", Status: state.StatusWaiting, Limit: 50}
	_, next, err := s.List(ctx, f)
	if err != nil || next == "" {
		b.Fatal(err)
	}
	for _, page := range []struct {
		name   string
		cursor string
	}{{"first", ""}, {"second", next}} {
		b.Run(page.name, func(b *testing.B) {
			f := f
			f.Cursor = page.cursor
			for b.Loop() {
				l, _, err := s.List(ctx, f)
				if err != nil || len(l) != 50 {
					b.Fatalf("%d runs, %v", len(l), err)
				}
			}
		})
	}
}
