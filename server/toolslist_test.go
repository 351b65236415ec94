package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/dsl"
)

// ---- helpers (shared with bench_gateway_test.go) ----

// synthSchema is a realistic raw input schema (~330 bytes).
const synthSchema = `{"type":"object","properties":{"query":{"type":"string","description":"Search query, e.g. service:checkout level:error"},"limit":{"type":"integer","minimum":1,"maximum":500,"default":50},"since":{"type":"string","format":"date-time"},"tags":{"type":"array","items":{"type":"string"}}},"required":["query"],"additionalProperties":false}`

// synthServer is an mcp-go server with n tools named tool_00… that echo
// their arguments.
func synthServer(name string, n int) *mcpserver.MCPServer {
	s := mcpserver.NewMCPServer(name, "1.0.0", mcpserver.WithToolCapabilities(true))
	for i := range n {
		s.AddTool(synthTool(fmt.Sprintf("tool_%02d", i)), echoHandler)
	}
	return s
}

func synthTool(name string) mcp.Tool {
	t := mcp.NewToolWithRawSchema(name, "Searches the "+name+" index and returns matching records, newest first, with their metadata.", json.RawMessage(synthSchema))
	t.Annotations = mcp.ToolAnnotation{Title: "Search " + name, ReadOnlyHint: mcp.ToBoolPtr(true)}
	return t
}

func echoHandler(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	b, _ := json.Marshal(req.GetArguments())
	return mcp.NewToolResultText(string(b)), nil
}

// startGateway serves a gateway whose backends are the given in-process
// servers (each a `builtin:` backend of the same name), plus the demo
// backends and workflows when demo is set. It returns the /mcp URL.
// extraYAML goes before `backends:`, backendsYAML into it.
func startGateway(tb testing.TB, servers map[string]*mcpserver.MCPServer, demo bool, extraYAML, backendsYAML string, opts ...func(*Options)) (*Gateway, string) {
	tb.Helper()
	var sb strings.Builder
	sb.WriteString("name: toolslist-test\n" + extraYAML + "backends:\n" + backendsYAML)
	var wfs []*dsl.Workflow
	if demo {
		d, ds := DemoConfig(nil)
		if len(ds) > 0 {
			tb.Fatal(ds)
		}
		for _, b := range d.Backends {
			fmt.Fprintf(&sb, "  - {name: %s, builtin: %s}\n", b.Name.Value, b.Builtin.Value)
		}
		wfs = d.LoadedWorkflows
	}
	names := make([]string, 0, len(servers))
	for n := range servers {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&sb, "  - {name: %s, builtin: %s}\n", n, n)
	}
	cfg, ds := dsl.LoadConfig("test.yaml", []byte(sb.String()), func(string) (string, bool) { return "", false })
	if len(ds) > 0 {
		tb.Fatal(ds)
	}
	cfg.LoadedWorkflows = append(cfg.LoadedWorkflows, wfs...)
	o := &Options{StatePath: filepath.Join(tb.TempDir(), "state.db"), InProcess: servers}
	for _, f := range opts {
		f(o)
	}
	g, err := New(cfg, o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := g.Start(ctx); err != nil {
		cancel()
		tb.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	tb.Cleanup(func() {
		srv.Close()
		cancel()
		_ = g.Close()
	})
	return g, srv.URL + "/mcp"
}

// setPageSize changes the page size of both paths.
func setPageSize(tb testing.TB, g *Gateway, n int) {
	tb.Helper()
	mcpserver.WithPaginationLimit(n)(g.mcp)
	if err := g.tl.setPageSize(n); err != nil {
		tb.Fatal(err)
	}
}

// rawPost sends one POST to /mcp and returns the response and its body.
func rawPost(tb testing.TB, hc *http.Client, url, sid, body string, hdr map[string]string) (*http.Response, []byte) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", mcp.ProtocolVersion20251125)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp, b
}

// rawSession opens a 2025-11-25 session with raw HTTP and waits until the
// fast path knows it.
func rawSession(tb testing.TB, g *Gateway, hc *http.Client, url string, hdr map[string]string) string {
	tb.Helper()
	resp, body := rawPost(tb, hc, url, "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, hdr)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || sid == "" {
		tb.Fatalf("initialize: %d %s", resp.StatusCode, body)
	}
	if resp, body := rawPost(tb, hc, url, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, hdr); resp.StatusCode != http.StatusAccepted {
		tb.Fatalf("initialized: %d %s", resp.StatusCode, body)
	}
	waitFor(tb, func() bool { _, ok := g.tl.sessions.Load(sid); return ok })
	return sid
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rpcResponse returns the JSON-RPC response in a body, JSON or SSE, and
// any notifications that came before it.
func rpcResponse(tb testing.TB, resp *http.Response, body []byte) (msg []byte, notes [][]byte) {
	tb.Helper()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return body, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var m struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal([]byte(data), &m) == nil && m.ID != nil {
			msg = []byte(data)
		} else {
			notes = append(notes, []byte(data))
		}
	}
	if msg == nil {
		tb.Fatalf("no response in SSE body %q", body)
	}
	return msg, notes
}

func jsonEqual(a, b []byte) bool {
	var va, vb any
	return json.Unmarshal(a, &va) == nil && json.Unmarshal(b, &vb) == nil && reflect.DeepEqual(va, vb)
}

func listBody(id, cursor string) string {
	if cursor == "" {
		return `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/list"}`
	}
	return `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/list","params":{"cursor":"` + cursor + `"}}`
}

type listPage struct {
	Result struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
		NextCursor string `json:"nextCursor"`
	} `json:"result"`
}

func decodePage(tb testing.TB, msg []byte) listPage {
	tb.Helper()
	var p listPage
	if err := json.Unmarshal(msg, &p); err != nil {
		tb.Fatalf("%v: %.200s", err, msg)
	}
	return p
}

// both sends the same request through the fast path and through mcp-go
// and checks the answers agree: status, Content-Type, no Mcp-Session-Id,
// and the JSON-RPC message — byte for byte when mcp-go answered JSON. It
// reports whether the fast path served it and returns its message.
func both(t *testing.T, g *Gateway, hc *http.Client, url, sid, body string, hdr map[string]string) (fast bool, msg []byte) {
	t.Helper()
	before := g.tl.served.Load()
	fr, fb := rawPost(t, hc, url, sid, body, hdr)
	fast = g.tl.served.Load() > before
	g.tl.off.Store(true)
	sr, sb := rawPost(t, hc, url, sid, body, hdr)
	g.tl.off.Store(false)
	if fr.StatusCode != sr.StatusCode {
		t.Fatalf("status: fast path %d, mcp-go %d (%s)", fr.StatusCode, sr.StatusCode, sb)
	}
	if fast {
		if ct := fr.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("fast path Content-Type %q", ct)
		}
		if fr.Header.Get("Mcp-Session-Id") != "" || sr.Header.Get("Mcp-Session-Id") != "" {
			t.Fatal("Mcp-Session-Id on a tools/list response")
		}
	}
	fm, _ := rpcResponse(t, fr, fb)
	sm, _ := rpcResponse(t, sr, sb)
	if !json.Valid(fm) || sr.Header.Get("Content-Type") == "application/json" && fr.Header.Get("Content-Type") == "application/json" {
		if !bytes.Equal(fb, sb) {
			t.Fatalf("bytes differ:\nfast   %.300s\nmcp-go %.300s", fb, sb)
		}
	} else if !jsonEqual(fm, sm) {
		t.Fatalf("answers differ:\nfast   %.300s\nmcp-go %.300s", fm, sm)
	}
	return fast, fm
}

// walk lists every page through one path, checking each against the
// other path, and returns the names in order and the cursors used.
func walk(t *testing.T, g *Gateway, hc *http.Client, url, sid string) (names, cursors []string) {
	t.Helper()
	cursor := ""
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatal("cursor loop")
		}
		fast, msg := both(t, g, hc, url, sid, listBody(fmt.Sprint(i+1), cursor), nil)
		if !fast {
			t.Fatalf("page %d (cursor %q) was not served by the fast path", i, cursor)
		}
		p := decodePage(t, msg)
		for _, tl := range p.Result.Tools {
			names = append(names, tl.Name)
		}
		if p.Result.NextCursor == "" {
			return names, cursors
		}
		cursor = p.Result.NextCursor
		cursors = append(cursors, cursor)
	}
}

// ---- tests ----

// The fast path answers the demo gateway's tools/list with the bytes
// mcp-go produces, for several id shapes.
func TestToolsListMatchesMCPGo(t *testing.T) {
	g, url := startGateway(t, nil, true, "", "")
	hc := &http.Client{}
	sid := rawSession(t, g, hc, url, nil)
	// On a session that has had no notification mcp-go answers JSON, so
	// both() below compares bytes.
	g.tl.off.Store(true)
	if resp, _ := rawPost(t, hc, url, sid, listBody("1", ""), nil); resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("mcp-go answered %q", resp.Header.Get("Content-Type"))
	}
	g.tl.off.Store(false)
	for _, id := range []string{`1`, `"req-1"`, `-7`, `""`} {
		fast, msg := both(t, g, hc, url, sid, listBody(id, ""), nil)
		if !fast {
			t.Fatalf("id %s: not served by the fast path", id)
		}
		if got := bytes.TrimSpace(msg); !bytes.HasPrefix(got, []byte(`{"jsonrpc":"2.0","id":`+id+`,"result":{"tools":[`)) {
			t.Fatalf("id %s: %.80s", id, got)
		}
	}
	// The id goes back as sent (mcp-go decodes it into a float64: it would
	// answer 9007199254740992).
	resp, body := rawPost(t, hc, url, sid, listBody("9007199254740993", ""), nil)
	if !bytes.HasPrefix(body, []byte(`{"jsonrpc":"2.0","id":9007199254740993,"result":`)) {
		t.Fatalf("%d %.80s", resp.StatusCode, body)
	}
	// With params, _meta (legacy) and whitespace.
	fast, msg := both(t, g, hc, url, sid, "{ \"method\" : \"tools/list\", \"params\": {\"_meta\": {\"progressToken\": 3}}, \"id\": 12, \"jsonrpc\": \"2.0\" }", nil)
	if !fast {
		t.Fatal("request with _meta not served by the fast path")
	}
	names := map[string]bool{}
	for _, tl := range decodePage(t, msg).Result.Tools {
		names[tl.Name] = true
	}
	for _, want := range []string{"investigate_incident", "logs_search", "incidents_get_incident", "vmcp_run_resume"} {
		if !names[want] {
			t.Errorf("tools/list lacks %s", want)
		}
	}
	// An mcp-go client on a session lists through the fast path.
	before := g.tl.served.Load()
	c := newClient(t, url, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	res, err := c.ListTools(t.Context(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tools) != len(names) || g.tl.served.Load() == before {
		t.Fatalf("client listed %d tools (want %d), fast path served %d", len(res.Tools), len(names), g.tl.served.Load()-before)
	}
}

// With a tiny page size every tool is listed exactly once, and the
// cursors of each path work in the other.
func TestToolsListPagination(t *testing.T) {
	g, url := startGateway(t, nil, true, "", "")
	hc := &http.Client{}
	sid := rawSession(t, g, hc, url, nil)
	all := g.tl.cur.Load().tools
	setPageSize(t, g, 3)
	names, cursors := walk(t, g, hc, url, sid)
	if len(cursors) < 3 {
		t.Fatalf("only %d cursors", len(cursors))
	}
	seen := map[string]int{}
	for _, n := range names {
		seen[n]++
	}
	for _, tl := range all {
		if seen[tl.Name] != 1 {
			t.Errorf("%s listed %d times", tl.Name, seen[tl.Name])
		}
	}
	if len(names) != len(all) {
		t.Fatalf("%d names listed, %d tools", len(names), len(all))
	}
	// mcp-go's own walk issues the same cursors, and the fast path takes
	// them (both() above already sent each fast cursor to mcp-go).
	g.tl.off.Store(true)
	var mcpCursors []string
	for cursor := ""; ; {
		resp, body := rawPost(t, hc, url, sid, listBody(`"x"`, cursor), nil)
		msg, _ := rpcResponse(t, resp, body)
		cursor = decodePage(t, msg).Result.NextCursor
		if cursor == "" {
			break
		}
		mcpCursors = append(mcpCursors, cursor)
	}
	g.tl.off.Store(false)
	if !slices.Equal(mcpCursors, cursors) {
		t.Fatalf("cursors differ:\nfast   %v\nmcp-go %v", cursors, mcpCursors)
	}
	for _, c := range mcpCursors {
		if fast, _ := both(t, g, hc, url, sid, listBody(`"y"`, c), nil); !fast {
			t.Fatalf("cursor %q not served by the fast path", c)
		}
	}
	// A page size that divides the list: mcp-go sends a cursor with the
	// last full page and then an empty page; so does the fast path.
	setPageSize(t, g, len(all))
	names, cursors = walk(t, g, hc, url, sid)
	if len(names) != len(all) || len(cursors) != 1 {
		t.Fatalf("exact page: %d names, cursors %v", len(names), cursors)
	}
	// The mcp-go client follows the fast path's cursors.
	setPageSize(t, g, 4)
	before := g.tl.served.Load()
	c := newClient(t, url, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	res, err := c.ListTools(t.Context(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if pages := int(g.tl.served.Load() - before); len(res.Tools) != len(all) || pages != len(all)/4+1 {
		t.Fatalf("client: %d tools over %d fast pages", len(res.Tools), pages)
	}
}

// The default page size is mcp-go's: with more than 500 tools both paths
// page identically.
func TestToolsListDefaultPageSize(t *testing.T) {
	g, url := startGateway(t, map[string]*mcpserver.MCPServer{"alpha": synthServer("alpha", 300), "beta": synthServer("beta", 300)}, false, "", "")
	hc := &http.Client{}
	sid := rawSession(t, g, hc, url, nil)
	names, cursors := walk(t, g, hc, url, sid)
	if len(names) != 604 || len(cursors) != 1 {
		t.Fatalf("%d tools, cursors %v", len(names), cursors)
	}
}

// Requests the fast path must not answer reach mcp-go unchanged (the same
// status and message as with the fast path off).
func TestToolsListFallsThrough(t *testing.T) {
	g, url := startGateway(t, nil, true, "", "")
	hc := &http.Client{}
	sid := rawSession(t, g, hc, url, nil)
	modern := `{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	modernHdr := map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}
	unknown := "mcp-session-00000000-0000-4000-8000-000000000000"
	for _, tc := range []struct {
		name, sid, body string
		hdr             map[string]string
		status          int
		want            string
	}{
		{"unknown session", unknown, listBody("1", ""), nil, http.StatusNotFound, ""},
		{"no session", "", listBody("1", ""), nil, http.StatusNotFound, ""},
		{"modern request", sid, modern, modernHdr, http.StatusOK, `"resultType":"complete"`},
		{"modern header only", sid, listBody("1", ""), map[string]string{"Mcp-Protocol-Version": "2026-07-28"}, http.StatusBadRequest, ""},
		{"unsupported version header", sid, listBody("1", ""), map[string]string{"Mcp-Protocol-Version": "1999-01-01"}, http.StatusBadRequest, ""},
		{"batch", sid, "[" + listBody("1", "") + "]", nil, http.StatusBadRequest, `"code":-32700`},
		{"notification", sid, `{"jsonrpc":"2.0","method":"tools/list"}`, nil, http.StatusAccepted, ""},
		{"null id", sid, `{"jsonrpc":"2.0","id":null,"method":"tools/list"}`, nil, http.StatusAccepted, ""},
		{"id out of range", sid, `{"jsonrpc":"2.0","id":1e400,"method":"tools/list"}`, nil, http.StatusOK, `"code":-32700`},
		{"object id", sid, `{"jsonrpc":"2.0","id":{},"method":"tools/list"}`, nil, http.StatusOK, ""},
		{"wrong jsonrpc", sid, `{"jsonrpc":"1.0","id":1,"method":"tools/list"}`, nil, http.StatusOK, "Invalid JSON-RPC version"},
		{"bad params", sid, `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":5}}`, nil, http.StatusOK, `"code":-32600`},
		{"cursor not issued", sid, listBody("1", base64.StdEncoding.EncodeToString([]byte("logs"))), nil, http.StatusOK, `"logs_search"`},
		{"cursor not base64", sid, listBody("1", "!!"), nil, http.StatusOK, `"code":-32602`},
		{"content type", sid, listBody("1", ""), map[string]string{"Content-Type": "text/plain"}, http.StatusBadRequest, ""},
		{"trailing garbage", sid, listBody("1", "") + "x", nil, http.StatusBadRequest, `"code":-32700`},
		{"other method", sid, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"incidents_get_incident","arguments":{"id":"INC-1042"}}}`, nil, http.StatusOK, "checkout"},
		{"body over 4 MiB", sid, `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"` + strings.Repeat("a", MaxRequestBody) + `"}}`, nil, http.StatusBadRequest, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fast, msg := both(t, g, hc, url, tc.sid, tc.body, tc.hdr)
			if fast {
				t.Fatal("served by the fast path")
			}
			resp, body := rawPost(t, hc, url, tc.sid, tc.body, tc.hdr)
			if resp.StatusCode != tc.status || !strings.Contains(string(msg), tc.want) {
				t.Fatalf("%d %.300s", resp.StatusCode, body)
			}
		})
	}
	// A deleted session is forgotten: mcp-go answers 404.
	req, _ := http.NewRequest(http.MethodDelete, url, nil)
	req.Header.Set("Mcp-Session-Id", sid)
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	if _, ok := g.tl.sessions.Load(sid); ok {
		t.Fatal("deleted session still tracked")
	}
	if fast, _ := both(t, g, hc, url, sid, listBody("1", ""), nil); fast {
		t.Fatal("deleted session served by the fast path")
	}
}

// Queued notifications go out with the next POST (mcp-go drains them), and
// mcp-go sees a request of a session at least once per sessionRefresh.
func TestToolsListLeavesSessionWorkToMCPGo(t *testing.T) {
	g, url := startGateway(t, nil, true, "", "")
	hc := &http.Client{}
	sid := rawSession(t, g, hc, url, nil)
	if err := g.mcp.SendNotificationToSpecificClient(sid, "notifications/message", map[string]any{"level": "info", "data": "queued"}); err != nil {
		t.Fatal(err)
	}
	before := g.tl.served.Load()
	resp, body := rawPost(t, hc, url, sid, listBody("1", ""), nil)
	if _, notes := rpcResponse(t, resp, body); len(notes) != 1 || !strings.Contains(string(notes[0]), "queued") || g.tl.served.Load() != before {
		t.Fatalf("queued notification: fast=%v %.200s", g.tl.served.Load() != before, body)
	}
	if fast, _ := both(t, g, hc, url, sid, listBody("2", ""), nil); !fast {
		t.Fatal("not served by the fast path once the queue is empty")
	}
	// mcp-go now answers this session in SSE for good (a sticky flag set by
	// any notification); the fast path keeps answering JSON.
	g.tl.off.Store(true)
	resp, _ = rawPost(t, hc, url, sid, listBody("2", ""), nil)
	g.tl.off.Store(false)
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("mcp-go answered %q after a notification", ct)
	}
	v, _ := g.tl.sessions.Load(sid)
	v.(*liveSession).seen.Store(time.Now().Add(-2 * sessionRefresh).UnixNano())
	before = g.tl.served.Load()
	rawPost(t, hc, url, sid, listBody("3", ""), nil)
	rawPost(t, hc, url, sid, listBody("4", ""), nil)
	if n := g.tl.served.Load() - before; n != 1 {
		t.Fatalf("after a quiet period: %d of 2 served by the fast path, want the second only", n)
	}
}

// After a backend change the fast path serves the new list.
func TestToolsListAfterBackendChange(t *testing.T) {
	extra := synthServer("extra", 2)
	g, url := startGateway(t, map[string]*mcpserver.MCPServer{"extra": extra}, true, "", "")
	hc := &http.Client{}
	sid := rawSession(t, g, hc, url, nil)
	has := func(name string) bool {
		resp, body := rawPost(t, hc, url, sid, listBody("1", ""), nil)
		msg, _ := rpcResponse(t, resp, body)
		for _, tl := range decodePage(t, msg).Result.Tools {
			if tl.Name == name {
				return true
			}
		}
		return false
	}
	if !has("extra_tool_01") || has("extra_added") {
		t.Fatal("initial list")
	}
	extra.AddTool(synthTool("added"), echoHandler)
	waitFor(t, func() bool { return has("extra_added") })
	// The change queued a list_changed notification for this session: the
	// fast path leaves requests to mcp-go until it is delivered, then
	// serves the new list itself.
	waitFor(t, func() bool {
		fast, _ := both(t, g, hc, url, sid, listBody("2", ""), nil)
		return fast
	})
	extra.DeleteTools("tool_01")
	waitFor(t, func() bool { return !has("extra_tool_01") })
	both(t, g, hc, url, sid, listBody("3", ""), nil)
}

// Authentication runs first: another principal cannot list on a session
// it does not own.
func TestToolsListBehindAuth(t *testing.T) {
	g, url := startGateway(t, nil, true, `incoming_auth:
  type: tokens
  tokens:
    - {principal: alice, sha256: "`+sha("alice-token")+`"}
    - {principal: bob, sha256: "`+sha("bob-token")+`"}
`, "")
	hc := &http.Client{}
	alice := map[string]string{"Authorization": "Bearer alice-token"}
	bob := map[string]string{"Authorization": "Bearer bob-token"}
	sid := rawSession(t, g, hc, url, alice)
	before := g.tl.served.Load()
	if resp, body := rawPost(t, hc, url, sid, listBody("1", ""), bob); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob on alice's session: %d %s", resp.StatusCode, body)
	}
	if resp, _ := rawPost(t, hc, url, sid, listBody("1", ""), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	if resp, _ := rawPost(t, hc, url, sid, listBody("1", ""), alice); resp.StatusCode != http.StatusOK || g.tl.served.Load() != before+1 {
		t.Fatalf("alice: %d, served %d", resp.StatusCode, g.tl.served.Load()-before)
	}
}
