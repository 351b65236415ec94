package state

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPagesPerPause counts what a pause writes (bbolt's page runs per
// commit, the meta page included) on a file grown by transitions, as the
// bench's store cells grow theirs: 1,000 runs created 16 at a time
// without a checkpoint, then paused one at a time with a 2 KiB checkpoint
// and a question with a deadline. The disk time of a commit grows with
// what it writes, so this guards the file layout: with the checkpoint
// beside the document a pause writes about 17 page runs here; with it in
// its own bucket (layout 1) it wrote 20 (docs/durability.md).
func TestPagesPerPause(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 commits")
	}
	s := openTest(t, "", nil)
	const n = 1000
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				r := &Run{Workflow: "deploy", Owner: "bench", Params: json.RawMessage(`{"tag":"x"}`),
					Definition: []byte("name: deploy\nsteps: []\n"), DefinitionName: "deploy.yaml"}
				if err := s.Create(t.Context(), r); err != nil {
					t.Error(err)
					return
				}
				ids[i] = r.ID
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	w0 := s.WriteStats()
	for _, id := range ids {
		q := benchQuestion
		q.Deadline = time.Now().Add(time.Hour)
		if _, err := s.Pause(t.Context(), id, benchCheckpoint, q); err != nil {
			t.Fatal(err)
		}
	}
	w := s.WriteStats()
	per := float64(w.PageWrites-w0.PageWrites) / n
	t.Logf("page runs written per pause: %.2f (%d commits)", per, w.Commits-w0.Commits)
	if per > 18 {
		t.Errorf("a pause writes %.1f page runs, want at most 18: what does it write now that it did not?", per)
	}
	mustCheck(t, s)
}
