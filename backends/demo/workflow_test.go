package demo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/backends/demo"
	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/steps"
)

// demoCaller routes the engine's calls to fresh in-process demo servers,
// one mcp-go client per backend, and records them.
type demoCaller struct {
	clients map[string]*client.Client
	mu      sync.Mutex
	calls   []string // "<backend>.<tool>"
}

func newDemoCaller(t *testing.T, opts *demo.Options) *demoCaller {
	t.Helper()
	d := &demoCaller{clients: map[string]*client.Client{}}
	for _, name := range demo.Names() {
		d.clients[name] = connect(t, t.Context(), name, opts)
	}
	return d
}

func (d *demoCaller) CallTool(ctx context.Context, call *steps.Call) (*steps.Result, error) {
	c := d.clients[call.Backend]
	if c == nil {
		return nil, fmt.Errorf("no demo backend %q", call.Backend)
	}
	d.mu.Lock()
	d.calls = append(d.calls, call.Backend+"."+call.Tool)
	d.mu.Unlock()
	req := mcp.CallToolRequest{Params: mcp.CallToolParams{Name: call.Tool}}
	if len(call.Arguments) > 0 {
		req.Params.Arguments = call.Arguments
	}
	if call.Meta != nil {
		req.Params.Meta = &mcp.Meta{AdditionalFields: call.Meta}
	}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &steps.Result{IsError: res.IsError}
	if out.Content, err = json.Marshal(res.Content); err != nil {
		return nil, err
	}
	if res.StructuredContent != nil {
		if out.StructuredContent, err = json.Marshal(res.StructuredContent); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (d *demoCaller) count(ref string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.calls {
		if c == ref {
			n++
		}
	}
	return n
}

// call is a direct call for checking state after a run.
func (d *demoCaller) call(t *testing.T, ref, args string) map[string]any {
	t.Helper()
	backend, tool, _ := strings.Cut(ref, ".")
	res, err := callTool(t.Context(), d.clients[backend], tool, args)
	if err != nil {
		t.Fatal(err)
	}
	return output(t, ref, res).(map[string]any)
}

func compileWorkflow(t *testing.T, name string) *engine.Plan {
	t.Helper()
	wf, ds := dsl.LoadWorkflowFile("../../workflows/" + name)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	cat, err := engine.LoadCatalogFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	plan, ds := engine.Compile(wf, &engine.CompileOptions{Catalog: cat})
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	return plan
}

// The shipped workflows, end to end against the demo servers' own data:
// the engine calls real mcp-go servers through a real client, questions
// are answered with engine.Resume, and the effects are read back from the
// servers.
func TestShippedWorkflowsOnDemo(t *testing.T) {
	accept := func(content map[string]any) engine.Answer {
		return engine.Answer{Action: engine.ActionAccept, Content: content}
	}
	decline := engine.Answer{Action: engine.ActionDecline}

	tests := []struct {
		name     string
		workflow string
		params   string
		opts     *demo.Options
		// answers, one per question; question holds substrings of each
		// question's message.
		answers  []engine.Answer
		question []string
		output   string         // exact
		calls    map[string]int // calls per tool
		// ticket: substrings of the body of ticket T-1 ("" = no ticket).
		ticket []string
	}{
		{
			name: "INC-1042: noisy, page accepted", workflow: "investigate_incident.yaml",
			params:   `{"incident_id":"INC-1042"}`,
			answers:  []engine.Answer{accept(map[string]any{"page": true, "note": "checkout is on fire"})},
			question: []string{"Checkout payments timing out (high):", "412 errors in checkout", "over the last 1h, error rate 6.7%.", "Page the on-call engineer?"},
			output:   `{"error_count":412,"error_rate":0.0668,"paged":true,"service":"checkout","ticket":"T-1","ticket_url":"https://tickets.example.com/T-1"}`,
			calls:    map[string]int{"incidents.page_oncall": 1, "chat.post": 2, "tickets.create": 1, "logs.search": 1},
			ticket: []string{
				"Service: checkout (since 2026-11-25T09:12:00Z)",
				"Errors: 412 of 5632 lines",
				"Error rate: 0.0668 (metrics completed)",
				"p99 latency: 1902 ms",
				"Recent deploys: v2.14.0 by lee.chen at 2026-11-25T09:05:00Z; v2.14.0 by lee.chen at 2026-11-24T16:20:00Z;",
				"On-call paged: yes",
				"Page note: checkout is on fire",
			},
		},
		{
			name: "INC-1042: page declined, 30m window", workflow: "investigate_incident.yaml",
			params:   `{"incident_id":"INC-1042","time_range":"30m"}`,
			answers:  []engine.Answer{decline},
			question: []string{"257 errors in checkout", "over the last 30m, error rate 8.3%."},
			output:   `{"error_count":257,"error_rate":0.083,"paged":false,"service":"checkout","ticket":"T-1","ticket_url":"https://tickets.example.com/T-1"}`,
			calls:    map[string]int{"incidents.page_oncall": 0, "chat.post": 2, "tickets.create": 1},
			ticket:   []string{"Service: checkout", "Errors: 257 of", "On-call paged: no", "Page note: -"},
		},
		{
			name: "INC-1043: quiet, nobody asked", workflow: "investigate_incident.yaml",
			params: `{"incident_id":"INC-1043"}`,
			output: `{"error_count":3,"error_rate":0.0012,"paged":false,"service":"search","ticket":"T-1","ticket_url":"https://tickets.example.com/T-1"}`,
			calls:  map[string]int{"incidents.page_oncall": 0, "chat.post": 1, "tickets.create": 1},
			ticket: []string{"Service: search", "Errors: 3 of 2403 lines", "On-call paged: no"},
		},
		{
			name: "INC-1042: logs fail twice, the retry succeeds", workflow: "investigate_incident.yaml",
			params:   `{"incident_id":"INC-1042"}`,
			opts:     &demo.Options{Fail: map[string]int{"logs.search": 2}},
			answers:  []engine.Answer{decline},
			question: []string{"412 errors in checkout"},
			output:   `{"error_count":412,"error_rate":0.0668,"paged":false,"service":"checkout","ticket":"T-1","ticket_url":"https://tickets.example.com/T-1"}`,
			calls:    map[string]int{"logs.search": 3, "tickets.create": 1},
			ticket:   []string{"Errors: 412 of 5632 lines"},
		},
		{
			name: "INC-1042: metrics down, default output", workflow: "investigate_incident.yaml",
			params:   `{"incident_id":"INC-1042"}`,
			opts:     &demo.Options{Fail: map[string]int{"metrics.query": 1}},
			answers:  []engine.Answer{accept(map[string]any{"page": false})},
			question: []string{"412 errors in checkout", "error rate 0%."},
			output:   `{"error_count":412,"error_rate":0,"paged":false,"service":"checkout","ticket":"T-1","ticket_url":"https://tickets.example.com/T-1"}`,
			calls:    map[string]int{"metrics.query": 1, "incidents.page_oncall": 0, "tickets.create": 1},
			ticket:   []string{"Error rate: 0 (metrics failed)"},
		},
		{
			name: "health: checkout is unhealthy", workflow: "service_health_check.yaml",
			params: `{"service":"checkout"}`,
			output: `{"alerted":true,"error_count":257,"error_rate":0.083,"healthy":false,"logs_available":true,"open_incidents":["INC-1042"],"recent_versions":["v2.14.0","v2.14.0","v2.13.2"],"service":"checkout"}`,
			calls:  map[string]int{"chat.post": 1},
		},
		{
			name: "health: search is healthy", workflow: "service_health_check.yaml",
			params: `{"service":"search","since":"1h"}`,
			output: `{"alerted":false,"error_count":3,"error_rate":0.0012,"healthy":true,"logs_available":true,"open_incidents":["INC-1043"],"recent_versions":["v4.2.1","v4.2.1","v4.2.0"],"service":"search"}`,
			calls:  map[string]int{"chat.post": 0},
		},
		{
			name: "deploy to staging", workflow: "deploy_with_confirmation.yaml",
			params:   `{"service":"checkout","version":"v2.14.1"}`,
			answers:  []engine.Answer{accept(map[string]any{"environment": "staging", "reason": "hotfix"})},
			question: []string{"Deploy checkout v2.14.1?", "v2.14.0 (production), v2.14.0 (staging), v2.13.2 (production)", "Current error rate: 0.083."},
			output:   `{"deploy_id":"D-312","deployed":true,"environment":"staging"}`,
			calls:    map[string]int{"deploys.deploy": 1, "chat.post": 1},
		},
		{
			name: "rollback checkout", workflow: "rollback_bad_deploy.yaml",
			params:   `{"service":"checkout"}`,
			answers:  []engine.Answer{accept(map[string]any{"to_version": "v2.13.2", "reason": "timeouts since v2.14.0"})},
			question: []string{"checkout has an error rate of 0.083 (threshold 0.05)", "v2.14.0 by lee.chen, v2.14.0 by lee.chen"},
			output:   `{"answer":"accept","asked":true,"error_rate":0.083,"rolled_back_to":"v2.13.2","ticket":"T-1"}`,
			calls:    map[string]int{"deploys.rollback": 1, "tickets.create": 1, "chat.post": 1},
			ticket:   []string{"Rolled back from v2.14.0 to v2.13.2.", "Reason: timeouts since v2.14.0"},
		},
		{
			name: "rollback: healthy auth is not asked", workflow: "rollback_bad_deploy.yaml",
			params: `{"service":"auth"}`,
			output: `{"answer":"","asked":false,"error_rate":0.0004,"rolled_back_to":"","ticket":""}`,
			calls:  map[string]int{"deploys.rollback": 0},
		},
	}
	for _, tt := range tests {
		// In a synctest bubble, retry delays and timeouts take no real time.
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				plan := compileWorkflow(t, tt.workflow)
				caller := newDemoCaller(t, tt.opts)
				e := engine.New(caller, nil)
				out, err := e.Run(t.Context(), plan, json.RawMessage(tt.params), nil)
				for i := 0; err == nil && out.Status == engine.StatusWaiting; i++ {
					if i >= len(tt.answers) {
						t.Fatalf("unexpected question %q: %s", out.Question.Step, out.Question.Message)
					}
					if i == 0 {
						for _, w := range tt.question {
							if !strings.Contains(out.Question.Message, w) {
								t.Errorf("question %q does not contain %q", out.Question.Message, w)
							}
						}
					}
					out, err = e.Resume(t.Context(), plan, out.Checkpoint, tt.answers[i], nil)
				}
				if err != nil {
					t.Fatal(err)
				}
				if out.Status != engine.StatusCompleted {
					t.Fatalf("status %s (%v); calls %v", out.Status, out.Err, caller.calls)
				}
				got, _ := json.Marshal(out.Output)
				if d := cmp.Diff(decode(t, tt.output), decode(t, string(got))); d != "" {
					t.Errorf("output (-want +got):\n%s\ngot %s", d, got)
				}
				for ref, n := range tt.calls {
					if got := caller.count(ref); got != n {
						t.Errorf("%s called %d times, want %d (calls %v)", ref, got, n, caller.calls)
					}
				}
				if len(tt.ticket) > 0 {
					tk := caller.call(t, "tickets.get", `{"id":"T-1"}`)
					body, _ := tk["body"].(string)
					for _, w := range tt.ticket {
						if !strings.Contains(body, w) {
							t.Errorf("ticket body does not contain %q:\n%s", w, body)
						}
					}
				}
			})
		})
	}
}
