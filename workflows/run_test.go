package workflows_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/steps"
	"github.com/vmcp-dev/vmcp/workflows"
)

// The shipped workflows run, not only compile: each scenario scripts the
// demo backends' replies, answers the questions asked, and checks the
// outcome and which tools were called. (The demo backends' own tests cover
// their data; here the replies are fixed by hand.)

// backends answers calls from canned structured results per
// "<backend>.<tool>"; a tool mapped to nil fails with isError.
type backends struct {
	mu      sync.Mutex
	replies map[string]any
	calls   []string // "<backend>.<tool> <arguments JSON>"
}

func (b *backends) CallTool(_ context.Context, c *steps.Call) (*steps.Result, error) {
	ref := c.Backend + "." + c.Tool
	b.mu.Lock()
	b.calls = append(b.calls, ref+" "+string(c.Arguments))
	b.mu.Unlock()
	v, ok := b.replies[ref]
	if !ok {
		return nil, fmt.Errorf("transport: no reply scripted for %s", ref)
	}
	if v == nil {
		return &steps.Result{IsError: true, Content: json.RawMessage(`[{"type":"text","text":"backend unavailable"}]`)}, nil
	}
	sc, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &steps.Result{StructuredContent: sc, Content: json.RawMessage(`[{"type":"text","text":` + strconvQuote(string(sc)) + `}]`)}, nil
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

// called returns the calls made to ref, in order.
func (b *backends) called(ref string) []string {
	var out []string
	for _, c := range b.calls {
		if strings.HasPrefix(c, ref+" ") {
			out = append(out, strings.TrimPrefix(c, ref+" "))
		}
	}
	return out
}

func demoReplies(errorCount int, errorRate float64) map[string]any {
	return map[string]any{
		"incidents.get_incident": map[string]any{
			"id": "INC-1042", "title": "Checkout latency", "service": "checkout", "severity": "high",
			"status": "triggered", "started_at": "2026-11-01T09:12:00Z",
			"teams": []any{
				map[string]any{"name": "payments", "channel": "#payments-oncall"},
				map[string]any{"name": "sre", "channel": "#sre"},
			},
		},
		"incidents.page_oncall": map[string]any{"page_id": "PG-7", "paged": "dana", "at": "2026-11-01T09:30:00Z"},
		"incidents.list_open": map[string]any{"incidents": []any{
			map[string]any{"id": "INC-1042", "title": "Checkout latency", "service": "checkout", "severity": "high", "status": "triggered", "started_at": "2026-11-01T09:12:00Z"},
		}},
		"logs.search": map[string]any{"error_count": errorCount, "total": 5000, "summary": fmt.Sprintf("%d errors, mostly timeouts", errorCount),
			"top_errors": []any{map[string]any{"message": "upstream timeout", "count": errorCount}}},
		"metrics.query": map[string]any{"service": "checkout", "window": "1h", "error_rate": errorRate, "latency_p99_ms": 2300},
		"deploys.list_recent": map[string]any{"deploys": []any{
			map[string]any{"id": "D-9", "version": "v2.14.0", "environment": "production", "at": "2026-11-01T08:55:00Z", "author": "lee"},
			map[string]any{"id": "D-8", "version": "v2.13.2", "environment": "production", "at": "2026-10-30T14:00:00Z", "author": "kim"},
		}},
		"deploys.deploy":   map[string]any{"id": "D-10", "service": "checkout", "version": "v2.14.1", "environment": "staging", "previous_version": "v2.14.0", "at": "2026-11-01T10:00:00Z"},
		"deploys.rollback": map[string]any{"id": "D-11", "service": "checkout", "version": "v2.13.2", "previous_version": "v2.14.0", "at": "2026-11-01T10:05:00Z"},
		"chat.post":        map[string]any{"message_id": "M-1", "channel": "#x", "at": "2026-11-01T10:00:00Z"},
		"tickets.create":   map[string]any{"id": "OPS-311", "url": "https://tickets.example/OPS-311"},
	}
}

type scenario struct {
	name     string
	workflow string
	params   string
	replies  map[string]any
	answers  []engine.Answer // one per question, in order
	want     engine.RunStatus
	output   string         // expected output as canonical JSON ("" = don't check)
	calls    map[string]int // expected number of calls per tool
}

func TestShippedWorkflowsRun(t *testing.T) {
	noisy := demoReplies(412, 0.08)
	quiet := demoReplies(3, 0.001)
	metricsDown := demoReplies(412, 0.08)
	metricsDown["metrics.query"] = nil
	logsDown := demoReplies(0, 0.03)
	logsDown["logs.search"] = nil
	delete(logsDown, "deploys.list_recent") // transport error; on_error: continue

	accept := func(content map[string]any) engine.Answer {
		return engine.Answer{Action: engine.ActionAccept, Content: content}
	}
	decline := engine.Answer{Action: engine.ActionDecline}

	for _, sc := range []scenario{
		{
			name: "investigate: noisy, page accepted", workflow: "investigate_incident.yaml",
			params: `{"incident_id":"INC-1042"}`, replies: noisy,
			answers: []engine.Answer{accept(map[string]any{"page": true, "note": "checkout is on fire"})},
			want:    engine.StatusCompleted,
			output:  `{"error_count":412,"error_rate":0.08,"paged":true,"service":"checkout","ticket":"OPS-311","ticket_url":"https://tickets.example/OPS-311"}`,
			calls:   map[string]int{"incidents.page_oncall": 1, "chat.post": 2, "tickets.create": 1},
		},
		{
			name: "investigate: noisy, page declined", workflow: "investigate_incident.yaml",
			params: `{"incident_id":"INC-1042","time_range":"30m"}`, replies: noisy,
			answers: []engine.Answer{decline},
			want:    engine.StatusCompleted,
			output:  `{"error_count":412,"error_rate":0.08,"paged":false,"service":"checkout","ticket":"OPS-311","ticket_url":"https://tickets.example/OPS-311"}`,
			calls:   map[string]int{"incidents.page_oncall": 0, "chat.post": 2, "tickets.create": 1},
		},
		{
			name: "investigate: quiet, nobody asked", workflow: "investigate_incident.yaml",
			params: `{"incident_id":"INC-1042"}`, replies: quiet,
			want:   engine.StatusCompleted,
			output: `{"error_count":3,"error_rate":0.001,"paged":false,"service":"checkout","ticket":"OPS-311","ticket_url":"https://tickets.example/OPS-311"}`,
			calls:  map[string]int{"incidents.page_oncall": 0, "tickets.create": 1},
		},
		{
			name: "investigate: metrics down, default output used", workflow: "investigate_incident.yaml",
			params: `{"incident_id":"INC-1042"}`, replies: metricsDown,
			answers: []engine.Answer{accept(map[string]any{"page": false})},
			want:    engine.StatusCompleted,
			output:  `{"error_count":412,"error_rate":0,"paged":false,"service":"checkout","ticket":"OPS-311","ticket_url":"https://tickets.example/OPS-311"}`,
			calls:   map[string]int{"incidents.page_oncall": 0, "tickets.create": 1},
		},
		{
			name: "deploy: accepted to staging", workflow: "deploy_with_confirmation.yaml",
			params: `{"service":"checkout","version":"v2.14.1"}`, replies: quiet,
			answers: []engine.Answer{accept(map[string]any{"environment": "staging", "reason": "hotfix"})},
			want:    engine.StatusCompleted,
			output:  `{"deploy_id":"D-10","deployed":true,"environment":"staging"}`,
			calls:   map[string]int{"deploys.deploy": 1, "chat.post": 1},
		},
		{
			name: "deploy: declined, nothing deployed", workflow: "deploy_with_confirmation.yaml",
			params: `{"service":"checkout","version":"v2.14.1"}`, replies: quiet,
			answers: []engine.Answer{decline},
			want:    engine.StatusCompleted,
			calls:   map[string]int{"deploys.deploy": 0, "chat.post": 0},
		},
		{
			name: "health: healthy", workflow: "service_health_check.yaml",
			params: `{"service":"checkout"}`, replies: quiet,
			want:   engine.StatusCompleted,
			output: `{"alerted":false,"error_count":3,"error_rate":0.001,"healthy":true,"logs_available":true,"open_incidents":["INC-1042"],"recent_versions":["v2.14.0","v2.13.2"],"service":"checkout"}`,
			calls:  map[string]int{"chat.post": 0},
		},
		{
			name: "health: logs and deploys down, unhealthy", workflow: "service_health_check.yaml",
			params: `{"service":"checkout"}`, replies: logsDown,
			want:   engine.StatusCompleted,
			output: `{"alerted":true,"error_count":0,"error_rate":0.03,"healthy":false,"logs_available":false,"open_incidents":["INC-1042"],"recent_versions":[],"service":"checkout"}`,
			calls:  map[string]int{"chat.post": 1, "logs.search": 1},
		},
		{
			name: "rollback: accepted", workflow: "rollback_bad_deploy.yaml",
			params: `{"service":"checkout"}`, replies: noisy,
			answers: []engine.Answer{accept(map[string]any{"to_version": "v2.13.2"})},
			want:    engine.StatusCompleted,
			output:  `{"answer":"accept","asked":true,"error_rate":0.08,"rolled_back_to":"v2.13.2","ticket":"OPS-311"}`,
			calls:   map[string]int{"deploys.rollback": 1, "tickets.create": 1, "chat.post": 1},
		},
		{
			name: "rollback: declined, the rest skipped", workflow: "rollback_bad_deploy.yaml",
			params: `{"service":"checkout"}`, replies: noisy,
			answers: []engine.Answer{decline},
			want:    engine.StatusCompleted,
			calls:   map[string]int{"deploys.rollback": 0, "tickets.create": 0, "chat.post": 0},
		},
		{
			name: "rollback: healthy, nobody asked", workflow: "rollback_bad_deploy.yaml",
			params: `{"service":"checkout"}`, replies: quiet,
			want:   engine.StatusCompleted,
			output: `{"answer":"","asked":false,"error_rate":0.001,"rolled_back_to":"","ticket":""}`,
			calls:  map[string]int{"deploys.rollback": 0},
		},
	} {
		t.Run(sc.name, func(t *testing.T) {
			plan := compile(t, sc.workflow)
			b := &backends{replies: sc.replies}
			e := engine.New(b, nil)
			out, err := e.Run(t.Context(), plan, json.RawMessage(sc.params), nil)
			for i := 0; err == nil && out.Status == engine.StatusWaiting; i++ {
				if i >= len(sc.answers) {
					t.Fatalf("unexpected question %q: %s", out.Question.Step, out.Question.Message)
				}
				out, err = e.Resume(t.Context(), plan, out.Checkpoint, sc.answers[i], nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.Status != sc.want {
				t.Fatalf("status %s, want %s (%v)\ncalls: %q", out.Status, sc.want, out.Err, b.calls)
			}
			if sc.output != "" {
				got, _ := json.Marshal(out.Output)
				if string(got) != sc.output {
					t.Errorf("output\n got %s\nwant %s", got, sc.output)
				}
			}
			for ref, n := range sc.calls {
				if got := len(b.called(ref)); got != n {
					t.Errorf("%s called %d times, want %d: %q", ref, got, n, b.called(ref))
				}
			}
		})
	}
}

func compile(t *testing.T, name string) *engine.Plan {
	t.Helper()
	data, err := workflows.FS.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	wf, ds := dsl.LoadWorkflow(name, data)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	cat, err := engine.LoadCatalogFile("../testdata/catalog/demo.json")
	if err != nil {
		t.Fatal(err)
	}
	plan, ds := engine.Compile(wf, &engine.CompileOptions{Catalog: cat})
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	return plan
}
