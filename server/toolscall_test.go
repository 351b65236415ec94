package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// resultsBackend is an mcp-go server over streamable HTTP whose tools
// return every kind of result vmcp passes through.
func resultsBackend(t *testing.T) string {
	s := mcpserver.NewMCPServer("results", "1", mcpserver.WithToolCapabilities(true), mcpserver.WithLogging())
	add := func(name string, h mcpserver.ToolHandlerFunc) { s.AddTool(mcp.NewTool(name), h) }
	add("text", func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		tc := mcp.NewTextContent("hé \u2028 <b>&</b> " + string(req.Params.RawArguments))
		tc.Annotations = &mcp.Annotations{Audience: []mcp.Role{mcp.RoleUser}, Priority: ptrF(0.5)}
		return &mcp.CallToolResult{Result: mcp.Result{Meta: &mcp.Meta{AdditionalFields: map[string]any{"k": "v"}}}, Content: []mcp.Content{tc}}, nil
	})
	add("image", func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultImage("a caption", "aGk=", "image/png"), nil
	})
	add("structured", func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultStructured(map[string]any{"n": 1, "deep": map[string]any{"x": nil, "list": []any{1.5, "a"}}}, `{"n":1}`), nil
	})
	add("fails", func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultError("bad input"), nil
	})
	add("unknown", func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{
			rawContent{raw: []byte(`{"type":"hologram","payload":{"a":[1,2]},"x-extra":true}`)},
			rawContent{raw: []byte(`{"type":"text","text":"t","x-more":{"keep":"me"}}`)},
		}}, nil
	})
	add("boom", func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return nil, errors.New("backend exploded")
	})
	add("logs", func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		_ = mcpserver.ServerFromContext(ctx).SendNotificationToClient(ctx, "notifications/message", map[string]any{"level": "info", "logger": "results", "data": "working"})
		// mcp-go's POST forwarder drops a notification it takes off the
		// session's channel as the request ends (it then finds the request
		// done), here and in vmcp's mcp-go path: give it time to go out
		// before the result, so both paths have something to compare.
		time.Sleep(50 * time.Millisecond)
		return mcp.NewToolResultText("done"), nil
	})
	h := mcpserver.NewStreamableHTTPServer(s)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			// No standalone stream: a log message sent during a call can
			// only travel on that call's response (else which stream
			// carries it is a race, on either path).
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.URL + "/mcp"
}

// A tools/call served without mcp-go writes the very bytes mcp-go writes,
// for every kind of backend result (text with annotations and _meta,
// images, structured content, isError, unknown content types and fields,
// a backend error, a log message sent mid-call), and mcp-go still serves
// what the fast path leaves alone.
func TestFastCallMatchesMCPGo(t *testing.T) {
	g, u := startGateway(t, nil, false, "", "  - {name: b, url: "+resultsBackend(t)+"}\n")
	hc := &http.Client{}
	call := func(off bool, tool, id string) (*http.Response, []byte, int64) {
		t.Helper()
		g.tl.callOff.Store(off)
		defer g.tl.callOff.Store(false)
		sid := rawSession(t, g, hc, u, nil) // a fresh session: no sticky SSE from earlier notifications
		before := g.tl.callsServed.Load()
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":%q,"arguments":{"n": 12345678901234567890},"_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}`, id, tool)
		resp, b := rawPost(t, hc, u, sid, body, nil)
		return resp, b, g.tl.callsServed.Load() - before
	}
	for _, tc := range []struct {
		tool, id string
		fast     bool
	}{
		{"b_text", "7", true}, {"b_image", `"str-id"`, true}, {"b_structured", "-3", true}, {"b_fails", "8", true},
		{"b_unknown", "9", true}, {"b_boom", "10", true}, {"b_logs", "11", true},
		{"b_nosuch", "12", false}, {"vmcp_run_list", "13", false},
	} {
		fr, fb, served := call(false, tc.tool, tc.id)
		sr, sb, _ := call(true, tc.tool, tc.id)
		if (served == 1) != tc.fast {
			t.Errorf("%s: served by the fast path: %d, want %v", tc.tool, served, tc.fast)
		}
		if fr.StatusCode != sr.StatusCode || fr.Header.Get("Content-Type") != sr.Header.Get("Content-Type") || string(fb) != string(sb) {
			t.Errorf("%s: fast path answered\n%d %s %s\nmcp-go answered\n%d %s %s", tc.tool,
				fr.StatusCode, fr.Header.Get("Content-Type"), fb, sr.StatusCode, sr.Header.Get("Content-Type"), sb)
		}
		if tc.tool == "b_logs" && (!strings.HasPrefix(fr.Header.Get("Content-Type"), "text/event-stream") || !strings.Contains(string(fb), `"data":"working"`)) {
			t.Errorf("the log message did not reach the fast response: %s", fb)
		}
		if tc.tool == "b_text" && !strings.Contains(string(fb), "12345678901234567890") {
			t.Errorf("the arguments lost precision: %s", fb)
		}
	}
}

// Requests the fast path must leave to mcp-go: a progress token, a
// session whose client can be asked things, a modern request, a batch.
func TestFastCallStepsAside(t *testing.T) {
	g, u := startGateway(t, nil, false, "", "  - {name: b, url: "+resultsBackend(t)+"}\n")
	hc := &http.Client{}
	sid := rawSession(t, g, hc, u, nil)
	for name, body := range map[string]string{
		"progress token": `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"b_text","_meta":{"progressToken":"p"}}}`,
		"array args":     `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"b_text","arguments":[1]}}`,
		"extra param":    `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"b_text","task":{}}}`,
		"null id":        `{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"b_text"}}`,
		"batch":          `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"b_text"}}]`,
		"modern meta":    `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"b_text","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
	} {
		before := g.tl.callsServed.Load()
		rawPost(t, hc, u, sid, body, nil)
		if g.tl.callsServed.Load() != before {
			t.Errorf("%s: served by the fast path", name)
		}
	}
	// A client that declared elicitation: backends may ask it things.
	resp, body := rawPost(t, hc, u, "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{}},"clientInfo":{"name":"raw","version":"1"}}}`, nil)
	esid := resp.Header.Get("Mcp-Session-Id")
	if esid == "" {
		t.Fatalf("initialize: %s", body)
	}
	rawPost(t, hc, u, esid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil)
	waitFor(t, func() bool { _, ok := g.tl.sessions.Load(esid); return ok })
	before := g.tl.callsServed.Load()
	if resp, body := rawPost(t, hc, u, esid, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"b_text"}}`, nil); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "hé") {
		t.Fatalf("call: %d %s", resp.StatusCode, body)
	}
	if g.tl.callsServed.Load() != before {
		t.Error("a client that declared elicitation was served by the fast path")
	}
	// And an ordinary call is served by it.
	rawPost(t, hc, u, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b_text"}}`, nil)
	if g.tl.callsServed.Load() != before+1 {
		t.Error("a plain call was not served by the fast path")
	}
}
func ptrF(f float64) *float64 { return &f }

// A notifications/cancelled for a call the fast path serves cancels it,
// and the backend's handler sees its request end.
func TestFastCallCancelled(t *testing.T) {
	s := mcpserver.NewMCPServer("slow", "1", mcpserver.WithToolCapabilities(true))
	started, ended, stop := make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{})
	s.AddTool(mcp.NewTool("hang"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		started <- struct{}{}
		select {
		case <-ctx.Done():
			ended <- struct{}{}
		case <-stop: // the test failed: let the server close
		}
		return nil, ctx.Err()
	})
	ts := httptest.NewServer(mcpserver.NewStreamableHTTPServer(s))
	t.Cleanup(ts.Close)
	g, u := startGateway(t, nil, false, "", "  - {name: b, url: "+ts.URL+"/mcp}\n")
	t.Cleanup(func() { close(stop) }) // runs first: a failed test does not hang in cleanup
	hc := &http.Client{}
	sid := rawSession(t, g, hc, u, nil)
	before := g.tl.callsServed.Load()
	done := make(chan []byte, 1)
	go func() {
		_, body := rawPost(t, hc, u, sid, `{"jsonrpc":"2.0","id":"c-1","method":"tools/call","params":{"name":"b_hang"}}`, nil)
		done <- body
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached the backend")
	}
	if g.tl.callsServed.Load() != before+1 {
		t.Fatal("the call was not served by the fast path")
	}
	rawPost(t, hc, u, sid, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"c-1","reason":"user"}}`, nil)
	select {
	case body := <-done:
		if !strings.Contains(string(body), `"id":"c-1"`) {
			t.Fatalf("answer: %s", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancelled call did not end")
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend's handler did not see the cancellation")
	}
}

// A catalogue rebuild that changes nothing tells no session that
// resources or prompts changed (each such notification would also take
// the session's next calls off the fast path).
func TestRebuildWithoutChangesNotifiesNobody(t *testing.T) {
	g, u := startGateway(t, nil, false, "", "  - {name: b, url: "+resultsBackend(t)+"}\n")
	sid := rawSession(t, g, &http.Client{}, u, nil)
	v, ok := g.tl.sessions.Load(sid)
	if !ok {
		t.Fatal("the session is not tracked")
	}
	ls := v.(*liveSession)
	before := len(ls.notify) // what startup may have queued
	if err := g.rebuild(false); err != nil {
		t.Fatal(err)
	}
	if n := len(ls.notify) - before; n != 0 {
		t.Fatalf("%d notifications queued by a rebuild that changed nothing", n)
	}
}

// encodeCallResult writes exactly what json.Marshal makes of mcp-go's
// response for every result passThrough builds, and declines the rest.
func TestEncodeCallResultMatchesMarshal(t *testing.T) {
	raw := func(s ...string) []mcp.Content {
		out := []mcp.Content{}
		for _, x := range s {
			out = append(out, rawContent{raw: []byte(x)})
		}
		return out
	}
	for i, res := range []*mcp.CallToolResult{
		{Content: raw(`{"type":"text","text":"hello"}`)},
		{Content: raw()},
		{Content: raw(` { "type" : "text",`+"\n\t"+`"text":"<b>&amp;</b> \u2028 é `+"\u2028\u2029"+`" } `, `{"type":"image","data":"aGk=","mimeType":"image/png"}`)},
		{Content: raw(`{"type":"text","text":"x"}`), IsError: true},
		{Content: raw(`{"type":"hologram","payload":{"a":[1, 2.50, 1e3]},"x":null}`), RawStructuredContent: json.RawMessage(` {"n": 1, "s":"<>"} `)},
		{Result: mcp.Result{Meta: &mcp.Meta{AdditionalFields: map[string]any{"k": "<v>", "a": 1}}}, Content: raw(`{"type":"text","text":"m"}`), IsError: true, RawStructuredContent: json.RawMessage(`[1,2]`)},
		{Result: mcp.Result{Meta: &mcp.Meta{ProgressToken: "p"}}, Content: raw(`{"type":"text","text":"m"}`)},
	} {
		for _, id := range []string{"7", `"str-id"`, "-3"} {
			got, ok := encodeCallResult(res, json.RawMessage(id))
			if !ok {
				t.Errorf("%d: declined", i)
				continue
			}
			want := withID(mcp.NewJSONRPCResultResponse(mcp.NewRequestId(int64(0)), res), json.RawMessage(id))
			if string(got) != string(want) {
				t.Errorf("%d: encodeCallResult wrote\n%s\njson.Marshal writes\n%s", i, got, want)
			}
		}
	}
	for i, res := range []*mcp.CallToolResult{
		{Content: raw(`{"type":"text","text":`)}, // invalid: the caller reports the encoding error
		{Content: raw(``)},
		{Content: []mcp.Content{mcp.NewTextContent("typed")}},
		{Content: raw(`{}`), StructuredContent: map[string]any{"a": 1}},
		{Result: mcp.Result{ResultType: mcp.ResultTypeComplete}, Content: raw(`{}`)},
	} {
		if b, ok := encodeCallResult(res, json.RawMessage("1")); ok {
			t.Errorf("%d: wrote %s, want it declined", i, b)
		}
	}
}
