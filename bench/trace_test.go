package main

import (
	"context"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// The echo backend traces exactly the calls with a service time: what
// was asked, how long it waited (at least that), and when the request
// came in and the response went out; GET /trace hands the records over
// once. Both ways of waiting are traced alike.
func TestEchoBackendTracesServiceTimes(t *testing.T) {
	for _, precise := range []bool{false, true} {
		mux, cnt := echoMux(1, 2, precise)
		ts := httptest.NewServer(mux)
		ctx := context.Background()
		s, err := dial(ctx, ts.URL+"/mcp/0", eraLegacy)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			msg string
			ms  int
		}{{"a", 0}, {"b", 3}, {"c", 1}} {
			if err := callEcho(ctx, s.Client, "echo", c.msg, c.ms); err != nil {
				t.Fatal(err)
			}
		}
		addr := strings.TrimPrefix(ts.URL, "http://")
		tr, err := echoTrace(addr)
		if err != nil {
			t.Fatal(err)
		}
		if len(tr) != 2 || tr[0].Msg != "b" || tr[1].Msg != "c" {
			t.Fatalf("precise %v: trace %+v, want the calls b and c", precise, tr)
		}
		for _, r := range tr {
			want := map[string]time.Duration{"b": 3 * time.Millisecond, "c": time.Millisecond}[r.Msg]
			if time.Duration(r.Want) != want || time.Duration(r.Slept) < want || r.In <= 0 || r.Out < r.In+r.Slept {
				t.Errorf("precise %v: record %+v: want %s asked, at least that slept, in ≤ out − slept", precise, r, want)
			}
		}
		if again, _ := echoTrace(addr); len(again) != 0 {
			t.Errorf("the trace was not cleared: %+v", again)
		}
		if cnt.Calls.Load() != 3 {
			t.Errorf("calls counted %d, want 3", cnt.Calls.Load())
		}
		s.Close()
		ts.Close()
	}
}

// A fan-out's timeline is taken from the calls whose every item was
// traced, against the client's clock, as medians over the calls.
func TestFanTimeline(t *testing.T) {
	ms := func(x float64) int64 { return int64(x * 1e6) }
	item := func(call string, i int, in, slept, out float64) callTrace {
		return callTrace{Msg: call + string(rune('0'+i)), In: ms(in), Want: ms(10), Slept: ms(slept), Out: ms(out)}
	}
	tr := []callTrace{
		// call 1: starts at 0, items arrive at 1 and 3, last out at 15, client done at 16
		item("f-1-", 0, 1, 10.5, 12), item("f-1-", 1, 3, 11, 15),
		// call 2: starts at 100, items at 102 and 103, out at 114, done at 118
		item("f-2-", 0, 102, 10.2, 113), item("f-2-", 1, 103, 10.4, 114),
		// call 3: one item missing (not counted)
		item("f-3-", 0, 201, 10, 212),
	}
	spans := map[string][2]int64{"f-1-": {0, ms(16)}, "f-2-": {ms(100), ms(118)}, "f-3-": {ms(200), ms(215)}}
	x := fanTimeline(tr, spans, 2)
	// The median of two is the lower one (spread's convention).
	want := map[string]float64{"tl_calls": 2, "tl_first_in_us": 1000, "tl_dispatch_spread_us": 1000, "tl_late_max_us": 400, "tl_tail_us": 1000, "tl_total_us": 16000}
	for k, v := range want {
		if got := x[k]; got < v-0.5 || got > v+0.5 {
			t.Errorf("%s = %.1f, want %.1f (all: %v)", k, got, v, x)
		}
	}
	if fanTimeline(tr, map[string][2]int64{}, 2) != nil {
		t.Error("a timeline without the client's spans")
	}
}

// The scheduler's accounting of a process: CPU time and runs only grow,
// and burning CPU shows.
func TestSchedStat(t *testing.T) {
	t0, r0 := schedStat(os.Getpid())
	m := startPreciseCPU(self)
	deadline := time.Now().Add(30 * time.Millisecond)
	n := 0
	for time.Now().Before(deadline) {
		n++
	}
	t1, r1 := schedStat(os.Getpid())
	if t1-t0 < 10*time.Millisecond || r1 < r0 || r0 <= 0 {
		t.Errorf("after 30 ms of spinning: CPU %s → %s, runs %d → %d", t0, t1, r0, r1)
	}
	if per := m.perOp(1)[0]; per < 10000 {
		t.Errorf("CPU per op %.0f µs, want ≥ 10 ms", per)
	}
	if wireVerdict("**different**: x: y") != "different" || wireVerdict("identical: a") != "identical" {
		t.Error("wireVerdict")
	}
}
