package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/steps"
)

// staticCaller answers every call at once with one preallocated result,
// or after a fixed sleep.
type staticCaller struct {
	res   *steps.Result
	sleep time.Duration
}

func (s *staticCaller) CallTool(ctx context.Context, _ *steps.Call) (*steps.Result, error) {
	if s.sleep > 0 {
		t := time.NewTimer(s.sleep)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.res, nil
}

func newStaticCaller(sleep time.Duration) *staticCaller {
	return &staticCaller{sleep: sleep, res: &steps.Result{
		Content:           json.RawMessage(`[{"type":"text","text":"{\"n\":1,\"service\":\"api\"}"}]`),
		StructuredContent: json.RawMessage(`{"n":1,"service":"api"}`),
	}}
}

// BenchmarkOneNode measures the engine's cost for a plain tool call (the
// call itself answers at once).
func BenchmarkOneNode(b *testing.B) {
	e := New(newStaticCaller(0), nil)
	p := NewToolPlan(&Tool{Backend: "echo", Name: "echo", InputSchema: json.RawMessage(`{"type":"object"}`)}, "echo_echo", 0)
	args := json.RawMessage(`{"message":"hi"}`)
	ctx := context.Background()
	ro := &RunOptions{}
	b.ReportAllocs()
	for b.Loop() {
		out, err := e.Run(ctx, p, args, ro)
		if err != nil || out.Status != StatusCompleted {
			b.Fatal(err, out)
		}
	}
}

// chainWorkflow is n steps, each reading the previous step's output.
func chainWorkflow(n int) string {
	var sb strings.Builder
	sb.WriteString("name: chain\nsteps:\n  - id: s0\n    tool: svc.step\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&sb, "  - id: s%d\n    tool: svc.step\n    arguments: {n: \"{{ steps.s%d.output.n }}\"}\n", i, i-1)
	}
	return sb.String()
}

// BenchmarkChain reports the per-step overhead of a sequential chain.
func BenchmarkChain(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			p := mustCompile(b, chainWorkflow(n), nil)
			e := New(newStaticCaller(0), nil)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				out, err := e.Run(ctx, p, nil, nil)
				if err != nil || out.Status != StatusCompleted {
					b.Fatal(err, out)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/step")
		})
	}
}

// BenchmarkFanOut32 runs 32 independent 10 ms steps (real time); ns/op is
// the wall time of the whole run (ideal: 10 ms).
func BenchmarkFanOut32(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("name: fan\nmax_parallel: 32\nsteps:\n")
	for i := 0; i < 32; i++ {
		fmt.Fprintf(&sb, "  - id: s%d\n    tool: svc.step\n", i)
	}
	p := mustCompile(b, sb.String(), nil)
	e := New(newStaticCaller(10*time.Millisecond), nil)
	ctx := context.Background()
	for b.Loop() {
		out, err := e.Run(ctx, p, nil, nil)
		if err != nil || out.Status != StatusCompleted {
			b.Fatal(err, out)
		}
	}
}

// BenchmarkCondition evaluates one compiled CEL condition.
func BenchmarkCondition(b *testing.B) {
	p := mustCompile(b, `name: c
steps:
  - id: logs
    tool: svc.logs
  - id: page
    tool: svc.page
    condition: steps.logs.output.error_count > 100 || steps.logs.output.rate > 0.05
`, nil)
	cond := p.Step("page").condition
	vars := map[string]any{
		"params":   map[string]any{},
		"workflow": map[string]any{},
		"steps":    map[string]any{"logs": map[string]any{"output": map[string]any{"error_count": int64(101), "rate": 0.01}}},
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ok, err := cond.eval(ctx, vars)
		if err != nil || !ok {
			b.Fatal(err, ok)
		}
	}
}

// BenchmarkRender3 renders a three-field argument object.
func BenchmarkRender3(b *testing.B) {
	p := mustCompile(b, `name: r
steps:
  - id: incident
    tool: svc.get
  - id: logs
    tool: svc.logs
    arguments:
      service: "{{ steps.incident.output.service }}"
      since: "{{ params.since }}"
      title: "Incident {{ params.id }} on {{ steps.incident.output.service }}"
`, nil)
	tc := p.Step("logs").Kind.(*steps.ToolCall)
	sc := &steps.Scope{
		Params:   map[string]any{"since": "1h", "id": "INC-7"},
		Workflow: map[string]any{},
		Steps:    map[string]any{"incident": map[string]any{"output": map[string]any{"service": "api"}}},
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tc.Args.RenderJSON(sc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompileIncident compiles the flagship workflow with the demo
// catalogue.
func BenchmarkCompileIncident(b *testing.B) {
	wf, cat := loadShipped(b, "investigate_incident.yaml")
	b.ReportAllocs()
	for b.Loop() {
		if _, ds := Compile(wf, &CompileOptions{Catalog: cat}); len(ds) > 0 {
			b.Fatal(ds)
		}
	}
}
