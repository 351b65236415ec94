package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

// benchStore opens a store on a schema of the benchmark's own (o's
// Schema and SweepInterval are set), dropped with it at the end.
func benchStore(b *testing.B, o *postgres.Options) *postgres.Store {
	b.Helper()
	o.Schema, o.SweepInterval = statetest.SchemaName(b), -1
	s, err := postgres.Open(b.Context(), statetest.PostgresDSN(b), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = s.Pool().Exec(context.Background(), `DROP SCHEMA `+o.Schema+` CASCADE`)
		s.Close()
	})
	return s
}

// BenchmarkDriver is the driver benchmark (statetest.BenchTransitions) on
// PostgreSQL, to compare with the same benchmark on bbolt in state.
func BenchmarkDriver(b *testing.B) {
	s := benchStore(b, &postgres.Options{})
	statetest.BenchTransitions(b, s)
}

// BenchmarkList100k is a page of 50 runs by owner and status among
// 100,000 stored runs (10 owners, 4 statuses), first page and the next.
func BenchmarkList100k(b *testing.B) {
	o := &postgres.Options{StatementTimeout: time.Minute}
	s, dsn := benchStore(b, o), statetest.PostgresDSN(b)
	ctx := b.Context()
	start := time.Now()
	// Running runs are held by s, a live replica: nothing to recover.
	_, err := s.Pool().Exec(ctx, `INSERT INTO vmcp_runs (id, owner, workflow, status, holder, doc, summary, created_at, updated_at)
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

// BenchmarkDeadlines10k: 10,000 waiting runs whose deadlines fall due over
// 5 s, swept by 3 replicas at once (each: every sweep interval, the due
// questions, claimed with ClaimDeadline 8 at a time, or with ClaimDue 100
// per transaction). It fails
// unless every deadline is applied exactly once; it reports the lateness
// of the applications (history time, the database's, minus the deadline).
// Run with -benchtime 1x.
func BenchmarkDeadlines10k(b *testing.B) {
	b.Run("one-by-one", func(b *testing.B) { benchDeadlines(b, false) })
	b.Run("claim-due", func(b *testing.B) { benchDeadlines(b, true) })
}

func benchDeadlines(b *testing.B, batched bool) {
	const runs, replicas, spread, sweep = 10_000, 3, 5 * time.Second, time.Second
	dsn := statetest.PostgresDSN(b)
	o := &postgres.Options{Schema: statetest.SchemaName(b), SweepInterval: -1, StatementTimeout: time.Minute}
	for b.Loop() {
		s, err := postgres.Open(b.Context(), dsn, o)
		if err != nil {
			b.Fatal(err)
		}
		ctx := b.Context()
		_, _ = s.Pool().Exec(ctx, `DELETE FROM vmcp_runs`)
		var now time.Time
		if err := s.Pool().QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
			b.Fatal(err)
		}
		first := now.Add(2 * time.Second).UTC()
		rows := make([][]any, runs)
		for i := range rows {
			dl := first.Add(spread * time.Duration(i) / runs).Truncate(time.Microsecond)
			r := &state.Run{ID: fmt.Sprintf("r_dl%05d", i), Workflow: "deploy", Owner: "bench", Status: state.StatusWaiting,
				Created: now, Updated: now, Seq: 1, Pending: &state.Question{Step: "approve", Message: "ok?", Deadline: dl, Seq: 1},
				History: []state.Event{{At: now, Kind: state.EventCreated}}}
			doc, summary, err := state.EncodeDocument(r)
			if err != nil {
				b.Fatal(err)
			}
			rows[i] = []any{r.ID, []byte("bench"), []byte("deploy"), "waiting", int64(1), []byte("approve"), dl, doc, summary, now, now}
		}
		if _, err := s.Pool().CopyFrom(ctx, pgx.Identifier{"vmcp_runs"},
			[]string{"id", "owner", "workflow", "status", "seq", "pending_step", "deadline", "doc", "summary", "created_at", "updated_at"},
			pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
		stores := []*postgres.Store{s}
		for range replicas - 1 {
			x, err := postgres.Open(ctx, dsn, o)
			if err != nil {
				b.Fatal(err)
			}
			stores = append(stores, x)
		}
		var applied atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(2*time.Second + spread + time.Minute)
		for _, st := range stores {
			wg.Go(func() {
				for time.Now().Before(stop) && applied.Load() < runs {
					if batched {
						got, err := st.ClaimDue(ctx, time.Now(), 100, json.RawMessage(`{"action":"cancel","timeout":true}`))
						if err != nil {
							b.Error(err)
							return
						}
						applied.Add(int64(len(got)))
						if len(got) < 100 {
							time.Sleep(sweep)
						}
						continue
					}
					due, err := st.DueDeadlines(ctx, time.Now(), 100)
					if err != nil {
						b.Error(err)
						return
					}
					// At most 8 claims at once per replica, as the server.
					var claims sync.WaitGroup
					slots := make(chan struct{}, 8)
					for _, d := range due {
						slots <- struct{}{}
						claims.Go(func() {
							defer func() { <-slots }()
							_, err := st.ClaimDeadline(ctx, d, json.RawMessage(`{"action":"cancel","timeout":true}`))
							if err == nil {
								applied.Add(1)
							} else if !errors.Is(err, state.ErrNotWaiting) {
								b.Error(err)
							}
						})
					}
					claims.Wait()
					if len(due) < 100 {
						time.Sleep(sweep)
					}
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		if applied.Load() != runs {
			b.Fatalf("%d deadlines applied, want %d", applied.Load(), runs)
		}
		var lat []time.Duration
		for i := range runs {
			r, err := s.Get(ctx, fmt.Sprintf("r_dl%05d", i))
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, ev := range r.History {
				if ev.Kind == state.EventDeadline {
					n++
					lat = append(lat, ev.At.Sub(first.Add(spread*time.Duration(i)/runs).Truncate(time.Microsecond)))
				}
			}
			if n != 1 {
				b.Fatalf("run %d: %d deadline events", i, n)
			}
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-late-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-late-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-late-ms")
		for _, st := range stores {
			st.Close()
		}
		b.StartTimer()
	}
	if s, err := postgres.Open(context.Background(), dsn, o); err == nil {
		_, _ = s.Pool().Exec(context.Background(), `DROP SCHEMA `+o.Schema+` CASCADE`)
		s.Close()
	}
}

// BenchmarkPauseAfterSteps is a pause that adds a 200 B step to a run
// holding ten 3 KiB steps: "rows" as the engine writes it (split into step
// rows; only the new one is written), "whole" the same bytes with a space
// inside the steps object, which the driver stores whole in the run's row,
// as every checkpoint was stored before migration 4.
func BenchmarkPauseAfterSteps(b *testing.B) {
	s := benchStore(b, &postgres.Options{})
	steps := map[string]string{}
	for i := range 10 {
		steps[fmt.Sprintf("step_%02d", i)] = statetest.StepState(i, 3<<10)
	}
	first := statetest.Checkpoint(steps, "")
	steps["step_10"] = statetest.StepState(10, 200)
	next := statetest.Checkpoint(steps, "")
	spaced := func(cp json.RawMessage) json.RawMessage {
		return json.RawMessage(strings.Replace(string(cp), `"steps":{`, `"steps":{ `, 1))
	}
	for _, c := range []struct {
		name        string
		first, next json.RawMessage
	}{{"rows", first, next}, {"whole", spaced(first), spaced(next)}} {
		b.Run(c.name, func(b *testing.B) {
			ids := make([]string, b.N)
			for i := range ids {
				r := statetest.NewRun("bench", "deploy")
				r.Checkpoint = c.first
				if err := s.Create(b.Context(), r); err != nil {
					b.Fatal(err)
				}
				ids[i] = r.ID
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for _, id := range ids {
				t0 := time.Now()
				if _, err := s.Pause(b.Context(), id, c.next, state.Question{Step: "approve", Message: "Deploy?"}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(len(c.next)), "checkpoint-B")
		})
	}
}
