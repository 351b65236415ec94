package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/steps"
)

// bearer adds a bearer token to every request.
type bearer struct {
	tok  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return b.next.RoundTrip(r)
}

// BenchmarkAuthzCheck is the policy check the tool handler adds to a
// tools/call (authzConfig's three rules; bob is allowed by the last one,
// the worst case for an allowed call), and the same check for a step
// (check_steps) and a refused call.
func BenchmarkAuthzCheck(b *testing.B) {
	g, _ := startAuthz(b, authzConfig(true))
	cat := g.cat.Load()
	bob := withIdentity(context.Background(), Principal{Name: "bob", Groups: []string{"dev"}})
	args := []byte(`{"path":"/a"}`)
	b.Run("tools-call-allowed", func(b *testing.B) {
		te := cat.tools["kit_read"]
		b.ReportAllocs()
		for b.Loop() {
			if r := g.authorizeTool(bob, cat, te, args); r != nil {
				b.Fatal(text(r))
			}
		}
	})
	b.Run("tools-call-refused", func(b *testing.B) {
		te := cat.tools["kit_write"]
		b.ReportAllocs()
		for b.Loop() {
			if r := g.authorizeTool(bob, cat, te, args); r == nil {
				b.Fatal("allowed")
			}
		}
	})
	b.Run("step-check-allowed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := g.checkStep(context.WithValue(bob, compositeKey{}, "read_then_write"), stepCall("kit", "read", args)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAuthzToolCall is a whole tools/call through vmcp over HTTP
// (static bearer token, in-process backend), without and with policies.
func BenchmarkAuthzToolCall(b *testing.B) {
	for _, tc := range []struct{ name, src string }{
		{"no-policies", authzConfigWithout()},
		{"policies", authzConfig(false)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, url := startAuthz(b, tc.src)
			c := clientWithVersion(b, url, "bob-token", mcp.ProtocolVersion20251125)
			req := mcp.CallToolRequest{}
			req.Params.Name = "kit_read"
			req.Params.Arguments = map[string]any{"path": "/a"}
			b.ResetTimer()
			for range b.N {
				res, err := c.CallTool(context.Background(), req)
				if err != nil || res.IsError {
					b.Fatal(err, res)
				}
			}
		})
	}
}

// authzConfigWithout is authzConfig without its authz block.
func authzConfigWithout() string {
	src := authzConfig(false)
	return src[:strings.Index(src, "authz:\n")]
}

// BenchmarkAuthzToolsList lists 1,004 tools (20 backends × 50 and the run
// tools) as bob, who may see 503 of them, through the fast path and
// through mcp-go, without and with policies (both paths use the cached
// per-principal view), and the cost of a first listing for a new
// principal (decide every tool, assemble the pages).
func BenchmarkAuthzToolsList(b *testing.B) {
	servers := map[string]*mcpserver.MCPServer{}
	for i := range 20 {
		n := fmt.Sprintf("b%03d", i)
		servers[n] = synthServer(n, 50)
	}
	auth := `incoming_auth:
  type: tokens
  tokens:
    - {principal: bob, groups: [dev], sha256: "` + sha("bob-token") + `"}
`
	policies := `authz:
  policies:
    - deny: "request.method == 'tools/call' && tool == 'b000_tool_00'"
    - allow: "'sre' in principal.groups"
    - allow: "'dev' in principal.groups && request.backend in ['b000', 'b001', 'b002', 'b003', 'b004', 'b005', 'b006', 'b007', 'b008', 'b009']"
`
	for _, tc := range []struct {
		name   string
		extra  string
		off    bool
		listed int
	}{
		{"no-policies/fast", auth, false, 1004},
		{"no-policies/mcp-go", auth, true, 1004},
		{"policies/fast", auth + policies, false, 503},
		{"policies/mcp-go", auth + policies, true, 503},
	} {
		b.Run(tc.name, func(b *testing.B) {
			g, u := startGateway(b, servers, false, tc.extra, "")
			hc := &http.Client{Transport: bearer{"bob-token", &http.Transport{MaxIdleConnsPerHost: 4}}}
			sid := rawSession(b, g, hc, u, nil)
			g.tl.off.Store(tc.off)
			listed := 0
			listAll(b, hc, u, sid, func(_ string, body []byte) { listed += countTools(body) })
			if listed != tc.listed {
				b.Fatalf("listed %d tools, want %d", listed, tc.listed)
			}
			served := g.tl.served.Load()
			b.ResetTimer()
			for range b.N {
				listAll(b, hc, u, sid, nil)
			}
			b.StopTimer()
			if fast := g.tl.served.Load() - served; (fast > 0) == tc.off {
				b.Fatalf("%d pages served by the fast path", fast)
			}
		})
	}
	b.Run("policies/first-listing", func(b *testing.B) {
		g, _ := startGateway(b, servers, false, auth+policies, "")
		base := g.tl.cur.Load()
		r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
		n := 0
		b.ResetTimer()
		for range b.N {
			n++ // a new principal each time: nothing cached
			req := r.WithContext(withIdentity(context.Background(), Principal{Name: fmt.Sprintf("p%d", n), Groups: []string{"dev"}}))
			if p := g.filteredPages(req, base); p == nil || len(p.tools) != 503 {
				b.Fatal("filter failed")
			}
		}
	})
}

func countTools(body []byte) int {
	return bytes.Count(body, []byte(`"inputSchema"`))
}

func stepCall(backend, tool string, args []byte) *steps.Call {
	return &steps.Call{Backend: backend, Tool: tool, Arguments: args}
}
