package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestBadConfig: configs that cannot be served make `vmcp serve` exit 1
// with an error naming the key or backend at fault.
func TestBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  string
		want []string // substrings of stderr
	}{
		{
			name: "unknown key",
			cfg:  "name: e2e\nbackends:\n  - {name: logs, builtin: logs, colour: red}\n",
			want: []string{"vmcp.yaml:3:", `unknown key "colour"`, `backend "logs"`},
		},
		{
			name: "unknown top-level key",
			cfg:  "name: e2e\nbackend:\n  - {name: logs, builtin: logs}\n",
			want: []string{"vmcp.yaml:2:", `unknown key "backend"`},
		},
		{
			name: "duplicate backend",
			cfg:  "name: e2e\nbackends:\n  - {name: logs, builtin: logs}\n  - {name: logs, builtin: metrics}\n",
			want: []string{"vmcp.yaml:4:", `duplicate backend name "logs"`, "line 3"},
		},
		{
			name: "unresolved manual conflict",
			cfg:  "name: e2e\nbackends:\n  - {name: a, builtin: logs}\n  - {name: b, builtin: logs}\naggregation: {conflict_resolution: manual}\n",
			want: []string{`tool name "search"`, "a.search", "b.search", "override"},
		},
		{
			name: "backend without a transport",
			cfg:  "name: e2e\nbackends:\n  - {name: ghost}\n",
			want: []string{"vmcp.yaml:3:", `backend "ghost"`, `"url", "command" or "builtin"`},
		},
		{
			name: "empty command",
			cfg:  "name: e2e\nbackends:\n  - {name: ghost, command: []}\n",
			want: []string{"vmcp.yaml:3:", `"command" of backend "ghost"`},
		},
		{
			name: "unknown builtin",
			cfg:  "name: e2e\nbackends:\n  - {name: ghost, builtin: nosuchdemo}\n",
			want: []string{"vmcp.yaml:3:", `"ghost"`, "nosuchdemo"},
		},
		{
			name: "composite named like a backend tool",
			cfg: "name: e2e\nbackends:\n  - {name: logs, builtin: logs}\ncomposite_tools:\n" +
				"  - name: logs_search\n    description: clash\n    parameters: {type: object}\n    steps:\n      - {id: s, tool: logs.search, arguments: {service: x, since: 1h}}\n",
			want: []string{`"logs_search"`, "logs.search", "composite tool"},
		},
		{
			name: "unset variable",
			cfg:  "name: e2e\nbackends:\n  - {name: h, url: \"http://127.0.0.1:1/mcp\", headers: {Authorization: \"Bearer ${VMCP_E2E_SURELY_UNSET}\"}}\n",
			want: []string{"VMCP_E2E_SURELY_UNSET", "Authorization"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := runVMCPFail(t, tc.cfg)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestUnavailableBackends: a backend that cannot be reached (a URL with
// nothing listening, a command that does not exist) does not stop vmcp
// from serving the others; /status shows it unhealthy with its error.
func TestUnavailableBackends(t *testing.T) {
	dead := freeAddr(t) // nothing listens here
	p := startVMCP(t, fmt.Sprintf(`name: e2e-unavailable
backends:
  - {name: gone, url: "http://%s/mcp"}
  - {name: ghost, command: [/nonexistent/vmcp-e2e-no-such-binary, serve]}
  - {name: logs, builtin: logs}
%s`, dead, fastHealth))
	c := connect(t, p.URL, legacy, false)
	tools := c.toolNames(t)
	if _, ok := tools["logs_search"]; !ok {
		t.Errorf("the healthy backend's tools are not served: %v", keys(tools))
	}
	for n := range tools {
		if strings.HasPrefix(n, "gone_") || strings.HasPrefix(n, "ghost_") {
			t.Errorf("tool %s of an unavailable backend is listed", n)
		}
	}
	for _, tc := range []struct{ backend, wantErr string }{
		{"gone", "connection refused"},
		{"ghost", "/nonexistent/vmcp-e2e-no-such-binary"},
	} {
		state, lastErr, _ := p.backendStatus(t, tc.backend)
		if state != "unhealthy" || !strings.Contains(lastErr, tc.wantErr) {
			t.Errorf("/status backend %s: state %q, last_error %q; want unhealthy with an error containing %q", tc.backend, state, lastErr, tc.wantErr)
		}
		if !strings.Contains(p.Stderr(), "backend="+tc.backend) {
			t.Errorf("stderr does not name backend %s:\n%s", tc.backend, tail(p.Stderr(), 4000))
		}
	}
	if st, _, _ := p.backendStatus(t, "logs"); st != "ready" {
		t.Errorf("/status backend logs: %s", st)
	}
	// It keeps being retried in the background, without taking vmcp down.
	time.Sleep(600 * time.Millisecond)
	if p.Exited() {
		t.Fatalf("vmcp exited: %s", p.Stderr())
	}
	c.mustCall(t, "logs_search", `{"service":"checkout","since":"1h"}`)
}
