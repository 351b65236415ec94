package engine

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestRandomDAGs runs random DAGs with random step durations (virtual time)
// and checks the scheduler's invariants: every step runs once, never before
// all its dependencies finished, never more than max_parallel at once, and
// with enough parallelism each step starts the moment its last dependency
// finishes (no level barriers).
func TestRandomDAGs(t *testing.T) {
	for seed := uint64(1); seed <= 60; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed*7919))
			n := 2 + rng.IntN(25)
			maxPar := 1 + rng.IntN(8)
			if seed%4 == 0 {
				maxPar = n // unconstrained: checks "as soon as ready"
			}
			deps := make([][]int, n)
			var b strings.Builder
			fmt.Fprintf(&b, "name: random\nmax_parallel: %d\nsteps:\n", maxPar)
			f := newFakeCaller()
			durations := make([]time.Duration, n)
			for i := 0; i < n; i++ {
				fmt.Fprintf(&b, "  - id: s%d\n    tool: t.s%d\n", i, i)
				var explicit, inferred []string
				for j := 0; j < i; j++ {
					if rng.Float64() < 0.2 {
						deps[i] = append(deps[i], j)
						if rng.IntN(2) == 0 {
							explicit = append(explicit, fmt.Sprintf("s%d", j))
						} else {
							inferred = append(inferred, fmt.Sprintf("s%d: \"{{ steps.s%d.status }}\"", j, j))
						}
					}
				}
				if len(explicit) > 0 {
					fmt.Fprintf(&b, "    depends_on: [%s]\n", strings.Join(explicit, ", "))
				}
				if len(inferred) > 0 {
					fmt.Fprintf(&b, "    arguments: {%s}\n", strings.Join(inferred, ", "))
				}
				durations[i] = time.Duration(1+rng.IntN(20)) * time.Millisecond
				f.on(fmt.Sprintf("t.s%d", i), reply{Delay: durations[i], Structured: map[string]any{"i": i}})
			}
			p := mustCompile(t, b.String(), nil)

			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var mu sync.Mutex
				started := map[string]time.Duration{}
				finished := map[string]time.Duration{}
				running, peak := 0, 0
				e := New(f, nil)
				out, err := e.Run(t.Context(), p, nil, &RunOptions{Observer: func(ev Event) {
					mu.Lock()
					defer mu.Unlock()
					at := time.Since(start)
					switch ev.Type {
					case EventStarted:
						if _, dup := started[ev.Step]; dup {
							t.Errorf("%s started twice", ev.Step)
						}
						started[ev.Step] = at
						running++
						peak = max(peak, running)
					case EventFinished:
						finished[ev.Step] = at
						running--
					}
				}})
				if err != nil || out.Status != StatusCompleted {
					t.Fatalf("run: %v %+v", err, out)
				}
				if peak > maxPar {
					t.Errorf("peak parallelism %d > max_parallel %d", peak, maxPar)
				}
				for i := 0; i < n; i++ {
					id := fmt.Sprintf("s%d", i)
					s, ok := started[id]
					if !ok {
						t.Fatalf("%s never started", id)
					}
					if got := finished[id] - s; got != durations[i] {
						t.Errorf("%s ran %v, want %v", id, got, durations[i])
					}
					var ready time.Duration
					for _, d := range deps[i] {
						fd := finished[fmt.Sprintf("s%d", d)]
						if s < fd {
							t.Errorf("%s started at %v before dependency s%d finished at %v", id, s, d, fd)
						}
						ready = max(ready, fd)
					}
					if maxPar >= n && s != ready {
						t.Errorf("%s started at %v, but was ready at %v (level barrier?)", id, s, ready)
					}
				}
			})
		})
	}
}
