package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// Backends for the tests besides vmcp itself.

// demoUpstream starts a vmcp serve process serving the given builtin demo
// backends (no workflows) and returns its /mcp URL: a real streamable-HTTP
// MCP server whose tools are named "<builtin>_<tool>".
func demoUpstream(t *testing.T, builtins ...string) *proc {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("name: upstream\nbackends:\n")
	for _, b := range builtins {
		fmt.Fprintf(&sb, "  - {name: %s, builtin: %s}\n", b, b)
	}
	sb.WriteString("aggregation: {conflict_resolution: prefix, prefix_format: \"{backend}_\"}\n")
	return startVMCP(t, sb.String())
}

// testMCP serves an mcp-go server over streamable HTTP on loopback, in the
// test process (for behaviour the demo backends cannot be told to have).
func testMCP(t *testing.T, name string, tools ...mcpserver.ServerTool) string {
	t.Helper()
	s := mcpserver.NewMCPServer(name, "1.0.0", mcpserver.WithToolCapabilities(true))
	s.AddTools(tools...)
	h := mcpserver.NewStreamableHTTPServer(s)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// textTool is a tool that returns a fixed text after an optional delay
// (or until the request is cancelled).
func textTool(name, reply string, delay time.Duration) mcpserver.ServerTool {
	tool := mcp.NewToolWithRawSchema(name, "e2e tool "+name, json.RawMessage(`{"type":"object"}`))
	return mcpserver.ServerTool{Tool: tool, Handler: func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return mcp.NewToolResultText(reply), nil
	}}
}

// everythingJS locates @modelcontextprotocol/server-everything, installed
// by .ci/run into .ci/node (or VMCP_EVERYTHING_JS), and returns the argv
// that serves it over stdio. Missing: skipped on a developer's machine, a
// failure in CI.
func everythingJS(t *testing.T) []string {
	t.Helper()
	argv, err := everythingArgv()
	if err != nil {
		msg := fmt.Sprintf("server-everything not available: %v; install it with "+
			"`npm install --prefix .ci/node --no-audit --no-fund @modelcontextprotocol/server-everything@2026.8.31` or set VMCP_EVERYTHING_JS", err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return argv
}

func everythingArgv() ([]string, error) {
	js := os.Getenv("VMCP_EVERYTHING_JS")
	if js == "" {
		js = filepath.Join(moduleRoot, ".ci", "node", "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(js); err != nil {
		return nil, err
	}
	return []string{node, js, "stdio"}, nil
}

// yamlList renders argv as a YAML flow sequence.
func yamlList(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = strconv.Quote(a)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// demoCmd is the argv of a demo backend served over stdio.
func demoCmd(name string) string { return yamlList([]string{vmcpBin, "demo-backend", name}) }

// fastHealth is the health block the tests use.
const fastHealth = "health: {interval: 200ms, timeout: 2s, unhealthy_threshold: 1}\n"

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
