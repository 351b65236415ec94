package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// demoTools are the demo backends' tools, by backend.
var demoTools = map[string][]string{
	"incidents": {"get_incident", "list_open", "page_oncall", "add_note"},
	"logs":      {"search"},
	"metrics":   {"query"},
	"deploys":   {"list_recent", "deploy", "rollback"},
	"chat":      {"post"},
	"tickets":   {"create", "get"},
}

var demoOrder = []string{"incidents", "logs", "metrics", "deploys", "chat", "tickets"}

// TestDemoBackends runs the six demo backends as real processes, over
// stdio (`vmcp demo-backend NAME`) and over streamable HTTP (a second
// `vmcp serve`), and drives the flagship workflow through both protocol
// eras: the question is answered through elicitation/create on a
// 2025-11-25 session and through input_required on a 2026-07-28 client.
func TestDemoBackends(t *testing.T) {
	wfPath := filepath.Join(moduleRoot, "workflows", "investigate_incident.yaml")

	t.Run("stdio", func(t *testing.T) {
		var sb strings.Builder
		sb.WriteString("name: e2e-demo-stdio\nbackends:\n")
		for _, b := range demoOrder {
			fmt.Fprintf(&sb, "  - {name: %s, command: %s}\n", b, demoCmd(b))
		}
		fmt.Fprintf(&sb, "workflows: [%q]\n%s", wfPath, fastHealth)
		p := startVMCP(t, sb.String())
		for _, b := range p.status(t).Backends {
			if b.Transport != "stdio" || b.State != "ready" || b.PID == 0 {
				t.Errorf("/status backend %s: transport %s, state %s, pid %d; want a ready stdio process", b.Name, b.Transport, b.State, b.PID)
			}
		}
		var want []string
		for _, b := range demoOrder {
			for _, tl := range demoTools[b] {
				want = append(want, b+"_"+tl)
			}
		}
		exerciseDemo(t, p, want, "incidents_get_incident")
	})

	t.Run("http", func(t *testing.T) {
		up := demoUpstream(t, demoOrder...)
		// The upstream advertises "<builtin>_<tool>"; the workflow's
		// references become "demo.<builtin>_<tool>".
		src, err := os.ReadFile(wfPath)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`(?m)^(\s*tool:\s*)([a-z]+)\.([a-z_]+)\s*$`)
		rewritten := re.ReplaceAllString(string(src), "${1}demo.${2}_${3}")
		if n := len(regexp.MustCompile(`(?m)^\s*tool:`).FindAllString(string(src), -1)); n == 0 || strings.Count(rewritten, "tool: demo.") != n {
			t.Fatalf("rewriting the workflow's tool references failed:\n%s", rewritten)
		}
		wf := filepath.Join(t.TempDir(), "investigate_incident.yaml")
		if err := os.WriteFile(wf, []byte(rewritten), 0o644); err != nil {
			t.Fatal(err)
		}
		p := startVMCP(t, fmt.Sprintf("name: e2e-demo-http\nbackends:\n  - {name: demo, url: %q}\nworkflows: [%q]\n%s", up.URL, wf, fastHealth))
		if st, _, _ := p.backendStatus(t, "demo"); st != "ready" {
			t.Fatalf("HTTP backend state %s", st)
		}
		var want []string
		for _, b := range demoOrder {
			for _, tl := range demoTools[b] {
				want = append(want, "demo_"+b+"_"+tl)
			}
		}
		// The upstream vmcp advertises its own built-in run tools too.
		want = append(want, "demo_vmcp_run_cancel", "demo_vmcp_run_get", "demo_vmcp_run_resume", "demo_vmcp_runs_list")
		exerciseDemo(t, p, want, "demo_incidents_get_incident")
	})
}

// exerciseDemo checks tools/list, a plain call and investigate_incident
// in both eras.
func exerciseDemo(t *testing.T, p *proc, backendTools []string, getIncident string) {
	for _, e := range eras {
		t.Run(string(e), func(t *testing.T) {
			ans := &elicitor{action: mcp.ElicitationResponseActionAccept, content: map[string]any{"page": true, "note": "paged from e2e"}}
			c := connect(t, p.URL, e, false, client.WithElicitationHandler(ans))
			tools := c.toolNames(t)
			for _, n := range append(backendTools, "investigate_incident", "vmcp_run_resume", "vmcp_runs_list") {
				if _, ok := tools[n]; !ok {
					t.Errorf("tools/list lacks %s (has %v)", n, keys(tools))
				}
			}
			if got, want := len(tools), len(backendTools)+1+4; got != want {
				t.Errorf("tools/list has %d tools, want %d: %v", got, want, keys(tools))
			}
			// The composite advertises its parameters and output schema.
			if inv := tools["investigate_incident"]; len(inv.InputSchema.Required) != 1 || inv.InputSchema.Required[0] != "incident_id" {
				t.Errorf("investigate_incident input schema: %+v", inv.InputSchema)
			}

			// A plain backend tool passes through.
			res := c.mustCall(t, getIncident, `{"id":"INC-1042"}`)
			if !strings.Contains(text(res), "checkout") {
				t.Fatalf("%s: %s", getIncident, text(res))
			}
			if sc := rawField(t, c.tap.last("tools/call"), "structuredContent"); !strings.Contains(sc, `"service":"checkout"`) {
				t.Errorf("%s structuredContent: %s", getIncident, sc)
			}

			// The flagship workflow asks before paging (INC-1042 is bad).
			res = c.mustCall(t, "investigate_incident", `{"incident_id":"INC-1042"}`)
			if n := ans.count(); n != 1 {
				t.Fatalf("the elicitation handler was called %d times, want 1", n)
			}
			if msg := ans.last.Params.Message; !strings.Contains(msg, "checkout") || !strings.Contains(msg, "Page the on-call") {
				t.Errorf("question: %q", msg)
			}
			inputRequired := 0
			for _, r := range c.tap.raw("tools/call") {
				if rawField(t, r, "resultType") == `"input_required"` {
					inputRequired++
				}
			}
			switch e {
			case modern:
				if inputRequired != 1 {
					t.Errorf("a 2026-07-28 client should get the question as one input_required result, got %d", inputRequired)
				}
			case legacy:
				if inputRequired != 0 {
					t.Errorf("a 2025-11-25 session got %d input_required results", inputRequired)
				}
			}
			var out struct {
				Ticket     string  `json:"ticket"`
				TicketURL  string  `json:"ticket_url"`
				Service    string  `json:"service"`
				ErrorCount int     `json:"error_count"`
				ErrorRate  float64 `json:"error_rate"`
				Paged      bool    `json:"paged"`
			}
			if err := json.Unmarshal([]byte(text(res)), &out); err != nil {
				t.Fatalf("result text is not the report JSON: %q", text(res))
			}
			if !strings.HasPrefix(out.Ticket, "T-") || out.TicketURL == "" || out.Service != "checkout" || out.ErrorCount <= 100 || out.ErrorRate <= 0 || !out.Paged {
				t.Errorf("report: %+v", out)
			}
			if sc := rawField(t, c.tap.last("tools/call"), "structuredContent"); !strings.Contains(sc, `"paged":true`) {
				t.Errorf("structuredContent: %s", sc)
			}
		})
	}
}
