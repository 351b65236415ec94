package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/state"
)

// Wake-ups: a 2025-11-25 client waits live (elicitation/create, never
// answered by it) in its open call on one vmcp; the question is answered
// through the HTTP API — on the same process (bbolt) or on another replica
// (PostgreSQL) — and the open call returns the run's final result.

func TestWakeUp(t *testing.T) {
	p := startVMCP(t, durableConfig(t, "", nil)+"elicitation: {live_wait: 20s}\n")
	checkWake(t, p, p, 5)
}

func TestPostgresWakeUp(t *testing.T) {
	cfg, _ := durableSetup(t, "", nil)
	cfg += postgresState(t, "2s", "") + "elicitation: {live_wait: 20s}\n"
	a, b := startVMCP(t, cfg), startVMCP(t, cfg)
	checkWake(t, a, b, 10)
}

// checkWake runs rounds of: a live waiter on a, the answer on b, the
// result in a's open call. It logs how long after the answer the result
// reached a's client, next to how long b took to answer the POST (which
// runs the rest of the run on b): their difference is the wake-up's cost.
func checkWake(t *testing.T, a, b *proc, rounds int) {
	stall := &stallingElicitor{}
	c := connect(t, a.URL, legacy, false, client.WithElicitationHandler(stall))
	var toA, toB, extra, wake []time.Duration
	for i := range rounds {
		type reply struct {
			res *mcp.CallToolResult
			err error
			at  time.Time
		}
		got := make(chan reply, 1)
		go func() {
			res, err := investigate(t, c)
			got <- reply{res, err, time.Now()}
		}()
		eventually(t, 20*time.Second, "the live question", func() bool { return stall.calls.Load() == int32(i+1) })
		id := waitingRunID(t, a, "", "investigate_incident")
		start := time.Now()
		code, body := apiDo(t, b, "", http.MethodPost, "/api/v1/runs/"+id+"/resume", `{"action":"accept","content":{"page":false}}`)
		answered := time.Now()
		if code != http.StatusOK {
			t.Fatalf("round %d: answer: %d %s", i, code, body)
		}
		var r reply
		select {
		case r = <-got:
		case <-time.After(15 * time.Second):
			t.Fatalf("round %d: the open call on the waiting replica did not return within 15s of the answer", i)
		}
		if r.err != nil {
			t.Fatalf("round %d: the open call: %v", i, r.err)
		}
		if r.res.IsError {
			t.Fatalf("round %d: the open call returned an error: %s", i, text(r.res))
		}
		if m := runMeta(r.res); m["id"] != id || m["status"] != state.StatusCompleted {
			t.Fatalf("round %d: the open call returned _meta %v (text %q); want run %s completed", i, m, text(r.res), id)
		}
		if ticket, _ := report(t, r.res)["ticket"].(string); !strings.HasPrefix(ticket, "T-") {
			t.Fatalf("round %d: result without the report ticket: %s", i, text(r.res))
		}
		v := completedWithTicket(t, a, id)
		if n := v.kinds()[state.EventAnswered]; n != 1 {
			t.Fatalf("round %d: %d answers in the history: %s", i, n, v.historyString())
		}
		if fin, err := time.Parse(time.RFC3339Nano, v.Updated); err == nil { // the finish commit (same machine's clock)
			wake = append(wake, r.at.Sub(fin))
		}
		toA = append(toA, r.at.Sub(start))
		toB = append(toB, answered.Sub(start))
		extra = append(extra, r.at.Sub(answered))
	}
	p50 := func(d []time.Duration) time.Duration { d = slices.Clone(d); slices.Sort(d); return d[len(d)/2] }
	t.Logf("answer → result in the waiting call: p50 %v; answer → POST response (the run's own work on the answering replica): p50 %v; waiting call after the POST response: p50 %v (%d rounds)",
		p50(toA), p50(toB), p50(extra), rounds)
	if len(wake) > 0 {
		t.Logf("the run's finish commit → result in the waiting call (hint, re-read, reply): p50 %v, max %v", p50(wake), slices.Max(wake))
	}
}

// Cancelling a running run through the HTTP API — on the same process or
// on another replica — stops its backend call where it executes; the run
// ends cancelled, once.

func TestCancelRunning(t *testing.T) {
	slow := newSlowBackend(t)
	p := startVMCP(t, durableConfig(t, slow.url, slowWorkflows))
	checkCancelRunning(t, slow, p, p, "wf_read", "read")
	checkCancelRunning(t, slow, p, p, "wf_write_soft", "write")
}

func TestPostgresCancelRunning(t *testing.T) {
	slow := newSlowBackend(t)
	cfg, _ := durableSetup(t, slow.url, slowWorkflows)
	cfg += postgresState(t, "2s", "")
	a, b := startVMCP(t, cfg), startVMCP(t, cfg)
	checkCancelRunning(t, slow, a, b, "wf_read", "read")
	// An unsafe step (on record in flight) whose failure is tolerated:
	// the cancel still ends the run, nothing after it runs.
	checkCancelRunning(t, slow, a, b, "wf_write_soft", "write")
}

func checkCancelRunning(t *testing.T, slow *slowBackend, a, b *proc, workflow, tool string) {
	slow.hold.Store(true)
	defer slow.hold.Store(false)
	c := connect(t, a.URL, legacy, false)
	got := make(chan *mcp.CallToolResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		req := mcp.CallToolRequest{}
		req.Params.Name = workflow
		req.Params.Arguments = json.RawMessage(`{"tag":"cancel-1"}`)
		res, err := c.CallTool(ctx, req)
		if err != nil {
			res = mcp.NewToolResultError("protocol error: " + err.Error())
		}
		got <- res
	}()
	eventually(t, 30*time.Second, "the call to reach the slow backend", func() bool { return slow.inflight.Load() == 1 })
	code, body := apiDo(t, b, "", http.MethodGet, "/api/v1/runs?status=running&workflow="+workflow, "")
	var l struct {
		Runs []struct {
			ID string `json:"id"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(body, &l); code != http.StatusOK || err != nil || len(l.Runs) != 1 {
		t.Fatalf("running %s runs: %d %s", workflow, code, body)
	}
	id := l.Runs[0].ID
	start := time.Now()
	code, body = apiDo(t, b, "", http.MethodPost, "/api/v1/runs/"+id+"/cancel", "")
	if code != http.StatusOK {
		t.Fatalf("cancel: %d %s", code, body)
	}
	eventually(t, 10*time.Second, "the backend call to be cancelled", func() bool { return slow.inflight.Load() == 0 })
	stopped := time.Since(start)
	var res *mcp.CallToolResult
	select {
	case res = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("the call executing the run did not return within 15s of the cancel")
	}
	returned := time.Since(start)
	if !res.IsError || !strings.Contains(text(res), "cancelled") {
		t.Errorf("the call executing the cancelled run returned %q (isError %v)", text(res), res.IsError)
	}
	v := apiRun(t, a, id)
	k := v.kinds()
	if v.Status != state.StatusCancelled || k[state.EventCancelled] != 1 || k[state.StatusCompleted]+k[state.StatusFailed] != 0 {
		t.Errorf("run %s: status %s, history %s; want cancelled once and nothing after", id, v.Status, v.historyString())
	}
	if n := slow.count(tool, "cancel-1"); n != 1 {
		t.Errorf("the backend was called %d times, want 1", n)
	}
	if _, ok := v.Steps["file"]; ok && v.Steps["file"]["status"] == "completed" {
		t.Errorf("run %s filed its ticket after the cancel: %v", id, v.Steps)
	}
	t.Logf("%s: cancel → backend call stopped %v, → executing call returned %v", workflow, stopped.Round(time.Millisecond), returned.Round(time.Millisecond))
}

// stallFirst never answers the first question and answers the second
// with {"ok": false}.
type stallFirst struct{ calls atomic.Int32 }

func (e *stallFirst) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	e.calls.Add(1)
	if strings.Contains(req.Params.Message, "First") {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Second):
		}
		return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionCancel}}, nil
	}
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"ok": false}}}, nil
}

// The first question is answered on b; the run then asks a second one,
// which the client still waiting on a gets live and answers there.
func TestWakeNextQuestion(t *testing.T) {
	p := startVMCP(t, durableConfig(t, "", map[string]string{"two_questions.yaml": twoQuestions})+"elicitation: {live_wait: 20s}\n")
	checkWakeNextQuestion(t, p, p)
}

func TestPostgresWakeNextQuestion(t *testing.T) {
	cfg, _ := durableSetup(t, "", map[string]string{"two_questions.yaml": twoQuestions})
	cfg += postgresState(t, "2s", "") + "elicitation: {live_wait: 20s}\n"
	a, b := startVMCP(t, cfg), startVMCP(t, cfg)
	checkWakeNextQuestion(t, a, b)
}

func checkWakeNextQuestion(t *testing.T, a, b *proc) {
	e := &stallFirst{}
	c := connect(t, a.URL, legacy, false, client.WithElicitationHandler(e))
	got := make(chan *mcp.CallToolResult, 1)
	go func() {
		res, err := c.call(t, "two_questions", `{"tag":"wake"}`)
		if err != nil {
			res = mcp.NewToolResultError("protocol error: " + err.Error())
		}
		got <- res
	}()
	eventually(t, 20*time.Second, "the first live question", func() bool { return e.calls.Load() == 1 })
	id := waitingRunID(t, a, "", "two_questions")
	code, body := apiDo(t, b, "", http.MethodPost, "/api/v1/runs/"+id+"/resume", `{"action":"accept","content":{"ok":true}}`)
	if code != http.StatusOK {
		t.Fatalf("answer on b: %d %s", code, body)
	}
	var res *mcp.CallToolResult
	select {
	case res = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("the open call did not return within 15s of the first answer")
	}
	out := report(t, res)
	if res.IsError || out["first"] != true || out["second"] != false || e.calls.Load() != 2 {
		t.Fatalf("open call: %s after %d live questions; want first=true (answered on b), second=false (answered live)", text(res), e.calls.Load())
	}
	v := completedWithTicket(t, a, id)
	if k := v.kinds(); k[state.EventAnswered] != 2 {
		t.Errorf("history %s; want two answers", v.historyString())
	}
}
