package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// Gateway benchmarks (numbers only, no timed assertions):
//
//	go test ./server -run '^$' -bench 'ToolsList100x50|ToolsListRender|ProxiedCall' -benchtime 2s

// BenchmarkToolsList100x50 lists every page of a 5,004-tool catalogue
// (100 in-process backends × 50 tools with ~330-byte raw schemas, plus the
// four run tools; 11 pages of 500) on an established 2025-11-25 session,
// over loopback HTTP: from the pre-serialised pages, from mcp-go, and
// from a plain handler writing the same pre-built bytes (the floor).
func BenchmarkToolsList100x50(b *testing.B) {
	servers := map[string]*mcpserver.MCPServer{}
	for i := range 100 {
		n := fmt.Sprintf("b%03d", i)
		servers[n] = synthServer(n, 50)
	}
	g, u := startGateway(b, servers, false, "", "")
	if n := len(g.tl.cur.Load().tools); n != 5004 {
		b.Fatalf("%d tools", n)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	sid := rawSession(b, g, hc, u, nil)

	// The floor serves the fast path's own answers, by cursor.
	byCursor := map[string][]byte{}
	listAll(b, hc, u, sid, func(cursor string, body []byte) { byCursor[cursor] = slices.Clone(body) })
	floor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(byCursor[cursorOf(body)])
	}))
	b.Cleanup(floor.Close)

	for _, tc := range []struct {
		name string
		url  string
		off  bool
	}{{"floor", floor.URL, false}, {"fast", u, false}, {"mcp-go", u, true}} {
		b.Run(tc.name, func(b *testing.B) {
			g.tl.off.Store(tc.off)
			defer g.tl.off.Store(false)
			var size int64
			pages := listAll(b, hc, tc.url, sid, func(_ string, body []byte) { size += int64(len(body)) })
			b.SetBytes(size)
			served := g.tl.served.Load()
			b.ResetTimer()
			for range b.N {
				listAll(b, hc, tc.url, sid, nil)
			}
			b.StopTimer()
			b.ReportMetric(float64(pages), "pages/op")
			if fast := g.tl.served.Load() - served; (fast > 0) != (tc.name == "fast") {
				b.Fatalf("%s: %d pages served by the fast path", tc.name, fast)
			}
		})
	}
}

// listAll walks every page with raw POSTs and returns the page count.
func listAll(b *testing.B, hc *http.Client, u, sid string, page func(cursor string, body []byte)) int {
	n := 0
	for cursor := ""; ; n++ {
		resp, body := rawPost(b, hc, u, sid, listBody("1", cursor), nil)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%d %.200s", resp.StatusCode, body)
		}
		if page != nil {
			page(cursor, body)
		}
		if cursor = cursorIn(body); cursor == "" {
			return n + 1
		}
	}
}

// cursorIn finds nextCursor (mcp-go writes it before the tools).
func cursorIn(body []byte) string {
	head := body[:min(len(body), 256)]
	i := bytes.Index(head, []byte(`"nextCursor":"`))
	if i < 0 {
		return ""
	}
	rest := head[i+len(`"nextCursor":"`):]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

// cursorOf finds a request's cursor.
func cursorOf(body []byte) string {
	i := bytes.Index(body, []byte(`"cursor":"`))
	if i < 0 {
		return ""
	}
	rest := body[i+len(`"cursor":"`):]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

// BenchmarkToolsListRender is the per-change cost of pre-serialising the
// 5,004-tool list (paid once per catalogue change, not per request).
func BenchmarkToolsListRender(b *testing.B) {
	var tools []mcpserver.ServerTool
	for i := range 100 {
		for j := range 50 {
			tools = append(tools, mcpserver.ServerTool{Tool: synthTool(fmt.Sprintf("b%03d_tool_%02d", i, j)), Handler: echoHandler})
		}
	}
	var tl toolsList
	log := slog.New(slog.DiscardHandler)
	b.ResetTimer()
	for range b.N {
		tl.render(tools, log)
	}
}

// BenchmarkProxiedCall calls an echo tool on a streamable HTTP mcp-go
// server: directly with an mcp-go client, and through vmcp (the same server
// as a `url:` backend, the client on an established 2025-11-25 session;
// vmcp's backend session negotiated (2025-11-25 with the standalone GET
// stream) or pinned to 2025-11-25 or 2026-07-28; "lean-off" is the
// negotiated case with DisableRawCalls: every call through mcp-go on both
// sides). Floors: one raw HTTP round trip, and one through
// httputil.ReverseProxy. p50-ns and p99-ns are per call.
func BenchmarkProxiedCall(b *testing.B) {
	echo := mcpserver.NewMCPServer("echo", "1.0.0", mcpserver.WithToolCapabilities(true))
	echo.AddTool(mcp.NewTool("echo", mcp.WithString("message")), echoHandler)
	backend := httptest.NewServer(mcpserver.NewStreamableHTTPServer(echo))
	b.Cleanup(backend.Close)

	call := func(c *client.Client, name string) func(b *testing.B) {
		return func(b *testing.B) {
			req := mcp.CallToolRequest{}
			req.Params.Name = name
			req.Params.Arguments = map[string]any{"message": "hello"}
			timed(b, func() {
				res, err := c.CallTool(b.Context(), req)
				if err != nil || res.IsError {
					b.Fatal(err, res)
				}
			})
		}
	}
	b.Run("direct", call(benchClient(b, backend.URL+"/mcp", mcp.ProtocolVersion20251125), "echo"))
	b.Run("direct/2026-07-28", call(benchClient(b, backend.URL+"/mcp", ""), "echo"))
	for _, pin := range []string{"", "lean-off", mcp.ProtocolVersion20251125, "2026-07-28"} {
		line := "  - {name: echo, url: " + backend.URL + "/mcp}\n"
		name := "vmcp/backend-negotiated"
		var opts []func(*Options)
		switch pin {
		case "":
		case "lean-off":
			name = "vmcp/lean-off"
			opts = append(opts, func(o *Options) { o.DisableRawCalls = true })
		default:
			line = "  - {name: echo, url: " + backend.URL + "/mcp, protocol_version: \"" + pin + "\"}\n"
			name = "vmcp/backend-" + pin
		}
		_, u := startGateway(b, nil, false, "", line, opts...)
		b.Run(name, call(benchClient(b, u, mcp.ProtocolVersion20251125), "echo_echo"))
	}

	// Floors: a small JSON POST answered by a trivial handler.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"{\"message\":\"hello\"}"}]}}`+"\n")
	}))
	b.Cleanup(plain.Close)
	target, _ := url.Parse(plain.URL)
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	b.Cleanup(proxy.Close)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	post := func(u string) func(b *testing.B) {
		return func(b *testing.B) {
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"}}}`
			timed(b, func() {
				resp, err := hc.Post(u, "application/json", strings.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			})
		}
	}
	b.Run("floor/http", post(plain.URL))
	b.Run("floor/reverse-proxy", post(proxy.URL))
}

// benchClient is an initialized mcp-go client: on a session of the given
// version, or negotiated ("": 2026-07-28, stateless).
func benchClient(b *testing.B, u, version string) *client.Client {
	tr, err := transport.NewStreamableHTTP(u, transport.WithHTTPLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	var opts []client.ClientOption
	if version != "" {
		opts = append(opts, client.WithProtocolVersion(version))
	}
	c := client.NewClient(tr, opts...)
	if err := c.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	if _, err := c.Initialize(b.Context(), mcp.InitializeRequest{Params: mcp.InitializeParams{ClientInfo: mcp.Implementation{Name: "bench"}}}); err != nil {
		b.Fatal(err)
	}
	return c
}

// timed runs op b.N times after a short warm-up and reports the median and
// 99th percentile of single calls.
func timed(b *testing.B, op func()) {
	for range 50 {
		op()
	}
	d := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		op()
		d[i] = time.Since(t0)
	}
	b.StopTimer()
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2]), "p50-ns")
	b.ReportMetric(float64(d[len(d)*99/100]), "p99-ns")
}

// BenchmarkCompositeChain: a composite of n read-only echo steps in a chain
// (each echoing the previous step's message) through the gateway, against
// an HTTP backend; per-step cost = (chain n − chain 1) / (n − 1).
func BenchmarkCompositeChain(b *testing.B) {
	echo := mcpserver.NewMCPServer("echo", "1.0.0", mcpserver.WithToolCapabilities(true))
	tool := mcp.NewTool("echo", mcp.WithString("message"))
	tool.Annotations = mcp.ToolAnnotation{ReadOnlyHint: mcp.ToBoolPtr(true)}
	echo.AddTool(tool, func(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(req.GetString("message", "")), nil
	})
	backend := httptest.NewServer(mcpserver.NewStreamableHTTPServer(echo))
	b.Cleanup(backend.Close)
	var sb strings.Builder
	sb.WriteString("composite_tools:\n")
	for _, n := range []int{1, 10} {
		fmt.Fprintf(&sb, "  - name: chain_%d\n    steps:\n", n)
		for i := range n {
			msg := "hello"
			if i > 0 {
				msg = fmt.Sprintf("{{ steps.s%d.output.text }}", i-1)
			}
			fmt.Fprintf(&sb, "      - {id: s%d, tool: echo.echo, arguments: {message: %q}}\n", i, msg)
		}
	}
	_, u := startGateway(b, nil, false, sb.String(), "  - {name: echo, url: "+backend.URL+"/mcp}\n")
	c := benchClient(b, u, mcp.ProtocolVersion20251125)
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("steps=%d", n), func(b *testing.B) {
			req := mcp.CallToolRequest{}
			req.Params.Name = fmt.Sprintf("chain_%d", n)
			timed(b, func() {
				res, err := c.CallTool(b.Context(), req)
				if err != nil || res.IsError {
					b.Fatal(err, res)
				}
			})
		})
	}
}
