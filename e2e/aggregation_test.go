package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestConflictStrategies runs two backends that both offer a tool named
// "search" (the logs demo backend in process, and an HTTP MCP server)
// under each conflict_resolution strategy.
func TestConflictStrategies(t *testing.T) {
	other := testMCP(t, "e2e-other",
		textTool("search", "search answered by the e2e server", 0),
		textTool("only_other", "only on the e2e server", 0))
	backends := fmt.Sprintf("backends:\n  - {name: logs, builtin: logs}\n  - {name: other, url: %q}\n", other)
	const logsArgs = `{"service":"checkout","since":"1h"}`

	// serves starts vmcp and returns the advertised tools.
	serves := func(t *testing.T, aggregation string) *mcpClient {
		t.Helper()
		p := startVMCP(t, "name: e2e-conflicts\n"+backends+aggregation+fastHealth)
		return connect(t, p.URL, legacy, false)
	}
	fromOther := func(t *testing.T, c *mcpClient, tool string) {
		t.Helper()
		if got := text(c.mustCall(t, tool, logsArgs)); got != "search answered by the e2e server" {
			t.Errorf("%s should be routed to backend other, got %q", tool, got)
		}
	}
	fromLogs := func(t *testing.T, c *mcpClient, tool string) {
		t.Helper()
		if got := text(c.mustCall(t, tool, logsArgs)); !strings.Contains(got, "error_count") {
			t.Errorf("%s should be routed to backend logs, got %q", tool, got)
		}
	}
	expectTools := func(t *testing.T, c *mcpClient, present, absent []string) {
		t.Helper()
		tools := c.toolNames(t)
		for _, n := range present {
			if _, ok := tools[n]; !ok {
				t.Errorf("tools/list lacks %q: %v", n, keys(tools))
			}
		}
		for _, n := range absent {
			if _, ok := tools[n]; ok {
				t.Errorf("tools/list has %q: %v", n, keys(tools))
			}
		}
	}

	t.Run("prefix", func(t *testing.T) {
		c := serves(t, "aggregation: {conflict_resolution: prefix}\n")
		expectTools(t, c, []string{"logs_search", "other_search", "other_only_other"}, []string{"search"})
		fromLogs(t, c, "logs_search")
		fromOther(t, c, "other_search")
	})

	t.Run("prefix-format", func(t *testing.T) {
		c := serves(t, "aggregation: {conflict_resolution: prefix, prefix_format: \"{backend}__\"}\n")
		expectTools(t, c, []string{"logs__search", "other__search"}, []string{"search", "logs_search"})
		fromOther(t, c, "other__search")
	})

	t.Run("priority-other-first", func(t *testing.T) {
		c := serves(t, "aggregation: {conflict_resolution: priority, priority_order: [other, logs]}\n")
		expectTools(t, c, []string{"search", "only_other"}, []string{"logs_search", "other_search"})
		fromOther(t, c, "search")
	})

	t.Run("priority-logs-first", func(t *testing.T) {
		c := serves(t, "aggregation: {conflict_resolution: priority, priority_order: [logs, other]}\n")
		expectTools(t, c, []string{"search", "only_other"}, []string{"logs_search", "other_search"})
		fromLogs(t, c, "search")
	})

	t.Run("priority-unlisted", func(t *testing.T) {
		// A contest between backends missing from priority_order is a
		// startup error, not a silent choice.
		code, stderr := runVMCPFail(t, "name: e2e-conflicts\n"+backends+"aggregation: {conflict_resolution: priority, priority_order: []}\n"+fastHealth)
		if code == 0 || !strings.Contains(stderr, `"search"`) || !strings.Contains(stderr, "logs.search") || !strings.Contains(stderr, "other.search") ||
			!strings.Contains(stderr, "priority_order") {
			t.Errorf("exit %d; stderr should name the conflict, both backends and priority_order:\n%s", code, stderr)
		}
	})

	t.Run("manual-unresolved", func(t *testing.T) {
		code, stderr := runVMCPFail(t, "name: e2e-conflicts\n"+backends+"aggregation: {conflict_resolution: manual}\n"+fastHealth)
		if code == 0 || !strings.Contains(stderr, `tool name "search"`) || !strings.Contains(stderr, "logs.search") || !strings.Contains(stderr, "other.search") ||
			!strings.Contains(stderr, "manual") {
			t.Errorf("exit %d; stderr should list the conflict with both backends:\n%s", code, stderr)
		}
		if strings.Contains(stderr, "only_other") {
			t.Errorf("stderr names a tool without a conflict:\n%s", stderr)
		}
	})

	t.Run("manual-override", func(t *testing.T) {
		c := serves(t, `aggregation:
  conflict_resolution: manual
  tools:
    - backend: other
      overrides:
        search: {name: other_search, description: "The e2e server's search"}
`)
		expectTools(t, c, []string{"search", "other_search", "only_other"}, []string{"logs_search"})
		if d := c.toolNames(t)["other_search"].Description; d != "The e2e server's search" {
			t.Errorf("overridden description: %q", d)
		}
		fromLogs(t, c, "search")
		fromOther(t, c, "other_search")
	})
}

// TestHiddenTools: a tool hidden by filter or exclude_all is not listed,
// cannot be called directly, and stays callable from a workflow.
func TestHiddenTools(t *testing.T) {
	p := startVMCP(t, fmt.Sprintf(`name: e2e-hidden
backends:
  - {name: incidents, command: %s}
  - {name: logs, builtin: logs}
aggregation:
  tools:
    - {backend: incidents, filter: [list_open]}
    - {backend: logs, exclude_all: true}
composite_tools:
  - name: incident_errors
    description: Count the errors of an incident's service.
    parameters:
      type: object
      properties:
        id: {type: string}
      required: [id]
    steps:
      - id: inc
        tool: incidents.get_incident
        arguments: {id: "{{ params.id }}"}
      - id: logs
        tool: logs.search
        arguments: {service: "{{ steps.inc.output.service }}", since: 1h}
    output:
      service: "{{ steps.inc.output.service }}"
      errors: "{{ steps.logs.output.error_count }}"
%s`, demoCmd("incidents"), fastHealth))

	for _, e := range eras {
		t.Run(string(e), func(t *testing.T) {
			c := connect(t, p.URL, e, false)
			tools := c.toolNames(t)
			for _, n := range []string{"incidents_list_open", "incident_errors"} {
				if _, ok := tools[n]; !ok {
					t.Errorf("tools/list lacks %s: %v", n, keys(tools))
				}
			}
			for n := range tools {
				if n == "incidents_get_incident" || n == "incidents_page_oncall" || n == "incidents_add_note" || strings.HasPrefix(n, "logs") {
					t.Errorf("hidden tool %s is listed", n)
				}
			}
			for _, n := range []string{"incidents_get_incident", "logs_search", "incidents.get_incident", "get_incident", "search"} {
				res, err := c.call(t, n, `{"id":"INC-1042","service":"checkout","since":"1h"}`)
				switch {
				case err != nil:
					if !strings.Contains(err.Error(), "not found") && !strings.Contains(err.Error(), "unknown tool") {
						t.Errorf("direct call to hidden %s: error %q does not say unknown tool", n, err)
					}
				case res.IsError && (strings.Contains(text(res), "unknown tool") || strings.Contains(text(res), "not found")):
				default:
					t.Errorf("direct call to hidden %s was not refused as an unknown tool: %s", n, resultText(res))
				}
			}
			res := c.mustCall(t, "incident_errors", `{"id":"INC-1042"}`)
			if sc := rawField(t, c.tap.last("tools/call"), "structuredContent"); !strings.Contains(sc, `"service":"checkout"`) || strings.Contains(sc, `"errors":0`) {
				t.Errorf("workflow over hidden tools: %s (%s)", sc, text(res))
			}
		})
	}
}

// TestBackendTimeout: a backend's `timeout` bounds each call; the call
// fails after about that long with an error that names it.
func TestBackendTimeout(t *testing.T) {
	slow := testMCP(t, "e2e-slow", textTool("sleep", "woke up", 20*time.Second), textTool("quick", "quick answer", 0))
	p := startVMCP(t, fmt.Sprintf("name: e2e-timeout\nbackends:\n  - {name: slow, url: %q, timeout: 300ms}\n%s", slow, fastHealth))
	for _, e := range eras {
		t.Run(string(e), func(t *testing.T) {
			c := connect(t, p.URL, e, false)
			start := time.Now()
			res, err := c.call(t, "slow_sleep", `{}`)
			took := time.Since(start)
			msg := ""
			switch {
			case err != nil:
				msg = err.Error()
			case res.IsError:
				msg = text(res)
			default:
				t.Fatalf("slow_sleep succeeded after %s: %s", took, text(res))
			}
			if took < 250*time.Millisecond || took > 3*time.Second {
				t.Errorf("slow_sleep failed after %s, want about 300ms", took)
			}
			if !strings.Contains(msg, "300ms") || !strings.Contains(msg, "timed out") || !strings.Contains(msg, "slow") {
				t.Errorf("the error should name the backend and its 300ms timeout: %q", msg)
			}
			// One timeout neither breaks the connection nor opens the
			// circuit.
			if got := text(c.mustCall(t, "slow_quick", `{}`)); got != "quick answer" {
				t.Errorf("slow_quick: %q", got)
			}
		})
	}
}
