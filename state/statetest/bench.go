package statetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/state"
)

var benchCheckpoint = json.RawMessage(`{"version":1,"steps":{"plan":{"status":"completed","output":"` + strings.Repeat("x", 2000) + `"}}}`)

// BenchTransitions measures one driver's transitions, the same way for
// every driver: pause (a 2 KiB checkpoint and a question) and answer, at
// concurrency 1 and 8, on runs created outside the timer. ns/op is wall
// time per transition; p50-µs and p99-µs are each transition's latency.
func BenchTransitions(b *testing.B, s state.Driver) {
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("pause/c%d", conc), func(b *testing.B) {
			ids := benchRuns(b, s, b.N)
			benchEach(b, conc, ids, func(id string) error {
				_, err := s.Pause(b.Context(), id, benchCheckpoint, state.Question{Step: "approve", Message: "Deploy?", Deadline: time.Now().Add(time.Hour)})
				return err
			})
		})
		b.Run(fmt.Sprintf("answer/c%d", conc), func(b *testing.B) {
			ids := benchRuns(b, s, b.N)
			for _, id := range ids {
				if _, err := s.Pause(b.Context(), id, benchCheckpoint, state.Question{Step: "approve", Message: "Deploy?"}); err != nil {
					b.Fatal(err)
				}
			}
			benchEach(b, conc, ids, func(id string) error {
				_, err := s.Claim(b.Context(), id, "approve", 1, "bob", json.RawMessage(`{"action":"accept"}`))
				return err
			})
		})
	}
	b.Run("list-50-by-owner-status", func(b *testing.B) {
		for b.Loop() {
			l, _, err := s.List(b.Context(), state.Filter{Owner: "bench", Status: state.StatusWaiting, Limit: 50})
			if err != nil || len(l) == 0 {
				b.Fatalf("%d runs, %v", len(l), err)
			}
		}
	})
}

func benchRuns(b *testing.B, s state.Driver, n int) []string {
	b.Helper()
	ids := make([]string, n)
	for i := range ids {
		r := &state.Run{Workflow: "deploy", Owner: "bench", Definition: defSource, DefinitionName: "deploy.yaml", Params: json.RawMessage(`{}`)}
		if err := s.Create(b.Context(), r); err != nil {
			b.Fatal(err)
		}
		ids[i] = r.ID
	}
	return ids
}

func benchEach(b *testing.B, conc int, ids []string, fn func(id string) error) {
	b.Helper()
	lat := make([]time.Duration, len(ids))
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) {
					return
				}
				t0 := time.Now()
				if err := fn(ids[i]); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
