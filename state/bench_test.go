package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// Benchmarks: the fsync floor, one bbolt commit, pauses at 1 and 64
// concurrent runs (with latency percentiles), the batching settings they
// were chosen from, opening a file of 100,000 runs, and heap per stored
// run. Run with: go test -run '^$' -bench . -benchtime 2s ./state

// BenchmarkFsync is the floor: one 4 KiB write and a sync of a temp file.
func BenchmarkFsync(b *testing.B) {
	for _, tc := range []struct {
		name string
		sync func(*os.File) error
	}{{"fsync", (*os.File).Sync}, {"fdatasync", datasync}} {
		b.Run(tc.name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "f"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			page := make([]byte, 4096)
			for b.Loop() {
				if _, err := f.WriteAt(page, 0); err != nil {
					b.Fatal(err)
				}
				if err := tc.sync(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCommit is one bbolt Update of a small key, no store around it.
func BenchmarkCommit(b *testing.B) {
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "c.db"), 0o600, &bbolt.Options{Timeout: time.Second, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	_ = db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err })
	i := 0
	for b.Loop() {
		i++
		err := db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%d", i%1000), []byte("a small value"))
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// benchCheckpoint is a 2 KiB checkpoint, about what a run with a few
// finished steps writes.
var benchCheckpoint = json.RawMessage(`{"version":1,"steps":{"plan":{"status":"completed","output":"` + strings.Repeat("x", 2000) + `"}}}`)

var benchQuestion = Question{Step: "approve", Message: "Deploy 3 services to prod?", Deadline: epoch.Add(time.Hour),
	Schema: json.RawMessage(`{"type":"object","properties":{"approve":{"type":"boolean"},"note":{"type":"string"}},"required":["approve"]}`)}

// BenchmarkPause is concurrent pauses of distinct runs (created outside
// the timer), with the store's default batching. ns/op is wall time per
// pause (1/throughput); p50-µs and p99-µs are each pause's own latency.
func BenchmarkPause(b *testing.B) {
	for _, c := range []int{1, 64} {
		b.Run(fmt.Sprint(c), func(b *testing.B) { benchPause(b, c, nil, 0) })
	}
}

// BenchmarkPauseTuning is where the defaults come from: pauses at several
// concurrencies, committed by the group committer (no delay; batch sizes)
// or by bbolt's own Batch (a lone write waits its delay).
func BenchmarkPauseTuning(b *testing.B) {
	for _, c := range []int{1, 8, 64} {
		for _, o := range []struct {
			name      string
			boltDelay time.Duration
			batchSize int
		}{
			{"bbolt-batch-10ms-1000", 10 * time.Millisecond, 1000},
			{"bbolt-batch-1ms-64", time.Millisecond, 64},
			{"group-16", 0, 16},
			{"group-64", 0, 64},
			{"group-256", 0, 256},
		} {
			b.Run(fmt.Sprintf("c%d/%s", c, o.name), func(b *testing.B) {
				benchPause(b, c, &Options{BatchSize: o.batchSize}, o.boltDelay)
			})
		}
	}
}

// benchPause: with boltDelay > 0 the store commits through bbolt's Batch
// with that delay (the store before group commit, or plain bbolt).
func benchPause(b *testing.B, conc int, opts *Options, boltDelay time.Duration) {
	s := openTest(b, "", opts)
	if boltDelay > 0 {
		s.boltBatch, s.db.MaxBatchDelay = true, boltDelay
	}
	ids := bulkLoad(b, s, b.N, func(i int) string { return StatusRunning })
	var next atomic.Int64
	lat := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	stats0 := s.db.Stats()
	commits0, _ := s.group.counts()
	inTx0 := s.group.inTx.Load()
	b.ResetTimer()
	start := time.Now()
	for g := range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) {
					return
				}
				t0 := time.Now()
				q := benchQuestion
				q.Deadline = t0.Add(time.Hour)
				if _, err := s.Pause(b.Context(), ids[i], benchCheckpoint, q); err != nil {
					b.Error(err)
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(len(all))/elapsed.Seconds(), "pauses/s")
		st := s.db.Stats()
		d := st.Sub(&stats0)
		b.ReportMetric(float64(d.TxStats.GetWrite())/float64(len(all)), "page-writes/pause")
		if commits, _ := s.group.counts(); commits > commits0 {
			b.ReportMetric(float64(len(all))/float64(commits-commits0), "pauses/commit")
			b.ReportMetric(float64(s.group.inTx.Load()-inTx0)/1e3/float64(len(all)), "in-tx-µs/pause")
		}
	}
}

// BenchmarkOpenWith100kRuns is Open and Recover of a file holding 100,000
// runs (30,000 waiting with deadlines, 100 running, the rest finished),
// built once outside the timer. "heap" reports the heap the open store
// holds per stored run.
func BenchmarkOpenWith100kRuns(b *testing.B) {
	const total, running = 100_000, 100
	path := filepath.Join(b.TempDir(), "state.db")
	s, err := Open(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	ids := bulkLoad(b, s, total, func(i int) string {
		switch {
		case i < running:
			return StatusRunning
		case i%10 < 3:
			return StatusWaiting
		default:
			return StatusCompleted
		}
	})
	runningIDs := ids[:running]
	_ = s.Close()
	st, _ := os.Stat(path)
	b.Logf("built %d runs in %v; file %.1f MiB", total, time.Since(start).Round(time.Millisecond), float64(st.Size())/(1<<20))

	emptyHeap := heapOpen(b, filepath.Join(b.TempDir(), "empty.db"))
	fullHeap := heapOpen(b, compactCopy(b, path))
	b.Logf("live heap with the store open: empty file %d B, %d runs %d B (compacted)", emptyHeap, total, fullHeap)

	b.Run("open+recover", func(b *testing.B) {
		b.ReportMetric(float64(st.Size())/(1<<20), "file-MiB")
		b.ReportMetric(float64(fullHeap-emptyHeap)/total, "heap-B/run")
		for range b.N {
			b.StopTimer()
			setRunning(b, path, runningIDs)
			b.StartTimer()
			s, err := Open(path, nil)
			if err != nil {
				b.Fatal(err)
			}
			n, err := s.Recover(b.Context())
			if err != nil || len(n) != running {
				b.Fatalf("recovered %d: %v", len(n), err)
			}
			b.StopTimer()
			_ = s.Close()
			b.StartTimer()
		}
	})
}

// heapOpen is the live heap with the store at path open, after what a
// server does at startup (Recover, NextDeadline).
func heapOpen(tb testing.TB, path string) int64 {
	s, err := Open(path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Recover(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	if _, _, err := s.NextDeadline(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	return liveHeap()
}

func liveHeap() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// compactCopy writes a compacted copy of the file at path and returns its
// path. Heap is measured on compacted files: bbolt keeps its freelist in
// memory, which grows with the file's free pages (churn), not with runs.
func compactCopy(tb testing.TB, path string) string {
	src, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	out := filepath.Join(tb.TempDir(), "compact.db")
	dst, err := bbolt.Open(out, 0o600, &bbolt.Options{Timeout: time.Second, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		tb.Fatal(err)
	}
	defer dst.Close()
	if err := bbolt.Compact(dst, src, 0); err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestHeapPerStoredRun: an open store keeps nothing in memory per run.
func TestHeapPerStoredRun(t *testing.T) {
	if testing.Short() {
		t.Skip("bulk load")
	}
	const n = 8_000
	dir := t.TempDir()
	fullPath := filepath.Join(dir, "full.db")
	s := openTest(t, fullPath, nil)
	bulkLoad(t, s, n, func(int) string { return StatusWaiting })
	_ = s.Close()

	empty := heapOpen(t, filepath.Join(dir, "empty.db"))
	full := heapOpen(t, compactCopy(t, fullPath))
	perRun := float64(full-empty) / n
	t.Logf("heap with %d waiting runs open: %+d bytes (%.2f B/run)", n, full-empty, perRun)
	if perRun > 16 {
		t.Fatalf("%.1f heap bytes per waiting run: something is kept per run", perRun)
	}
}

// bulkLoad stores n runs with the given statuses, 5,000 per commit,
// through the same document code as the transitions, and returns their
// ids. For building big files fast; not a transition.
func bulkLoad(tb testing.TB, s *Store, n int, status func(i int) string) []string {
	tb.Helper()
	ids := make([]string, n)
	def := []byte("name: deploy\nsteps:\n  - id: approve\n    elicit: {message: ok?}\n")
	hash := hashHex(def)
	created := epoch
	for lo := 0; lo < n; lo += 5000 {
		hi := min(lo+5000, n)
		err := s.db.Update(func(tx *bbolt.Tx) error {
			for i := lo; i < hi; i++ {
				ids[i] = NewRunID()
				at := created.Add(time.Duration(i) * time.Millisecond)
				d := &runDoc{V: FormatVersion, ID: ids[i], Workflow: []string{"deploy", "scale"}[i%2], Owner: fmt.Sprint("user", i%50),
					Status: StatusRunning, Created: at, Updated: at, DefName: "deploy.yaml", DefHash: hash,
					Params:  json.RawMessage(`{"env":"prod","services":["api","web","worker"]}`),
					History: []Event{{At: at, Who: "user", Kind: EventCreated}}}
				switch st := status(i); st {
				case StatusWaiting:
					q := benchQuestion
					q.Seq, q.Deadline = 1, at.Add(time.Duration(i%3600)*time.Second)
					d.Status, d.Seq, d.Pending = st, 1, &q
					d.History = append(d.History, Event{At: at, Kind: EventPaused, Step: q.Step, Detail: json.RawMessage(`{"seq":1}`)})
				case StatusRunning:
				default:
					d.Status, d.Finished, d.Result = st, at, json.RawMessage(`{"ok":true}`)
					d.History = append(d.History, Event{At: at, Kind: st})
				}
				if err := insertRun(tx, d, benchCheckpoint, def); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	return ids
}

// setRunning puts runs back to running (undoing a Recover) between
// iterations.
func setRunning(tb testing.TB, path string, ids []string) {
	s, err := Open(path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	err = s.db.Update(func(tx *bbolt.Tx) error {
		for _, id := range ids {
			d, err := loadDoc(tx, id)
			if err != nil {
				return err
			}
			old := d.entries()
			d.Status = StatusRunning
			if err := putDoc(tx, old, d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkPauseBeside is the bench's "pause persist" target in process:
// each Pause (2 KiB checkpoint, a question with a deadline) of a running
// run is followed by one bbolt commit of the floor's kind (a small key in
// another file in the same directory), so the ratio of their p50s does
// not depend much on how busy the machine is. It reports both p50s, the
// ratio, and per transition the page runs written (bbolt's TxStats.Write,
// the meta page included) and the time bbolt spent writing and syncing.
//
// "replace": the runs were created with a checkpoint, as vmcp creates
// them (with the first step's in-flight record), and the pause replaces
// it; "first": the runs have none yet (the bench's store cells create
// them so).
func BenchmarkPauseBeside(b *testing.B) {
	b.Run("replace", func(b *testing.B) { pauseBeside(b, true) })
	b.Run("first", func(b *testing.B) { pauseBeside(b, false) })
}

func pauseBeside(b *testing.B, withCheckpoint bool) {
	dir := b.TempDir()
	s := openTest(b, filepath.Join(dir, "state.db"), nil)
	ids := bulkLoad(b, s, max(b.N, 1000), func(i int) string { return StatusRunning })
	if !withCheckpoint {
		err := s.db.Update(func(tx *bbolt.Tx) error {
			for _, id := range ids {
				pos := lookup(tx, id)
				if err := tx.Bucket(bRuns).Delete(append(bytes.Clone(pos), 2)); err != nil {
					return err
				}
				if err := tx.Bucket(bCheckpoints).Delete(pos); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	db, err := bbolt.Open(filepath.Join(dir, "commit.db"), 0o600, &bbolt.Options{Timeout: time.Second, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		b.Fatal(err)
	}
	pl, cl := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	ps0, cs0 := s.db.Stats(), db.Stats()
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		q := benchQuestion
		q.Deadline = t0.Add(time.Hour)
		if _, err := s.Pause(b.Context(), ids[i], benchCheckpoint, q); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		err := db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%d", i%1000), []byte("a small value"))
		})
		if err != nil {
			b.Fatal(err)
		}
		pl, cl = append(pl, t1.Sub(t0)), append(cl, time.Since(t1))
	}
	b.StopTimer()
	slices.Sort(pl)
	slices.Sort(cl)
	ps, cs := s.db.Stats(), db.Stats()
	pd, cd := ps.Sub(&ps0), cs.Sub(&cs0)
	n := float64(b.N)
	b.ReportMetric(float64(pl[len(pl)/2].Microseconds()), "pause-p50-µs")
	b.ReportMetric(float64(cl[len(cl)/2].Microseconds()), "commit-p50-µs")
	b.ReportMetric(float64(pl[len(pl)/2])/float64(cl[len(cl)/2]), "ratio")
	b.ReportMetric(float64(pd.TxStats.GetWrite())/n, "pause-writes")
	b.ReportMetric(float64(cd.TxStats.GetWrite())/n, "commit-writes")
	b.ReportMetric(float64(pd.TxStats.GetWriteTime().Microseconds())/n, "pause-write-µs")
	b.ReportMetric(float64(cd.TxStats.GetWriteTime().Microseconds())/n, "commit-write-µs")
}
