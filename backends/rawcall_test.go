package backends

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// scriptedBackend is a streamable-HTTP MCP server whose tools/call replies
// are fixed bytes (so both call paths see the very same reply), answered as
// JSON or as an SSE stream that may carry notifications and a request to
// the client before the result.
type scriptedBackend struct {
	t *testing.T

	mu    sync.Mutex
	calls []scriptedCall
	// answers receives the client's responses to requests the backend sent.
	answers chan json.RawMessage
	// hung is signalled when the hang tool has started.
	hung chan struct{}
}

type scriptedCall struct {
	id     string
	tool   string
	params json.RawMessage
	header http.Header
}

// scriptedResults are the results (after `"result":`) of the JSON tools.
var scriptedResults = map[string]string{
	// unknown fields in a content item, annotations, _meta, an unknown
	// top-level field, no resultType
	"text": `{"content":[{"type":"text","text":"hi \u00e9\u2028","annotations":{"audience":["user"],"priority":0.5},"x-extra":{"keep":[1,2.50,"x"]}}],"_meta":{"k":"v","n":1},"unknownTop":true}`,
	// an image, audio, a resource link and a content type mcp-go does not know
	"media":      `{"content":[{"type":"image","data":"aGk=","mimeType":"image/png"},{"type":"audio","data":"AAA=","mimeType":"audio/wav"},{"type":"resource_link","uri":"file:///x","name":"x"},{"type":"hologram","payload":{"a":[1,2]}}]}`,
	"structured": `{"content":[{"type":"text","text":"{\"n\":1}"}],"structuredContent":{"n":1,"deep":{"x":null,"big":12345678901234567890}}}`,
	"fails":      `{"content":[{"type":"text","text":"bad input"}],"isError":true}`,
	"nocontent":  `{"structuredContent":{"a":1}}`,
	"resulttype": `{"resultType":"complete","content":[{"type":"text","text":"ok"}]}`,
}

func (b *scriptedBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	reply := func(result string) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`+"\n", msg.ID, result)
	}
	switch {
	case msg.Method == "": // the client's answer to our request
		b.answers <- body
		w.WriteHeader(http.StatusAccepted)
		return
	case len(msg.ID) == 0: // a notification
		w.WriteHeader(http.StatusAccepted)
		return
	case msg.Method == "initialize":
		w.Header().Set("Mcp-Session-Id", "sess-1")
		reply(`{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"scripted","version":"1"}}`)
		return
	case msg.Method == "ping":
		reply(`{}`)
		return
	case msg.Method == "tools/list":
		var tools []string
		for _, n := range []string{"text", "media", "structured", "fails", "nocontent", "resulttype", "progress", "elicit", "rpcerror", "wrongid", "gone", "hang"} {
			tools = append(tools, fmt.Sprintf(`{"name":%q,"inputSchema":{"type":"object"}}`, n))
		}
		reply(`{"tools":[` + strings.Join(tools, ",") + `]}`)
		return
	case msg.Method != "tools/call":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no %s"}}`, msg.ID, msg.Method)
		return
	}
	if r.Header.Get("Mcp-Session-Id") != "sess-1" {
		http.Error(w, "unknown session", http.StatusNotFound)
		return
	}
	var p struct {
		Name string `json:"name"`
		Meta struct {
			ProgressToken json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
	}
	_ = json.Unmarshal(msg.Params, &p)
	b.mu.Lock()
	b.calls = append(b.calls, scriptedCall{id: string(msg.ID), tool: p.Name, params: msg.Params, header: r.Header.Clone()})
	b.mu.Unlock()
	if res, ok := scriptedResults[p.Name]; ok {
		reply(res)
		return
	}
	sse := func(msgs ...string) {
		for _, m := range msgs {
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", m)
		}
		w.(http.Flusher).Flush()
	}
	switch p.Name {
	case "progress":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		sse(fmt.Sprintf(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":%s,"progress":1,"total":2}}`, p.Meta.ProgressToken),
			`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"working"}}`,
			fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"done"}]}}`, msg.ID))
	case "elicit":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		sse(`{"jsonrpc":"2.0","id":"q-1","method":"elicitation/create","params":{"message":"name?","requestedSchema":{"type":"object","properties":{"n":{"type":"string"}}}}}`)
		var ans json.RawMessage
		select {
		case ans = <-b.answers:
		case <-time.After(10 * time.Second):
			b.t.Error("no answer to the elicitation")
			return
		}
		var a struct {
			ID     string `json:"id"`
			Result struct {
				Action  string         `json:"action"`
				Content map[string]any `json:"content"`
			} `json:"result"`
		}
		_ = json.Unmarshal(ans, &a)
		sse(fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"answer %s %s %v"}]}}`, msg.ID, a.ID, a.Result.Action, a.Result.Content["n"]))
	case "rpcerror":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32602,"message":"bad arguments"}}`, msg.ID)
	case "wrongid":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":"someone-else","result":{"content":[]}}`)
	case "gone":
		http.Error(w, "session gone", http.StatusNotFound)
	case "hang":
		b.hung <- struct{}{}
		<-r.Context().Done()
	}
}

// answeringRelay accepts elicitations (saying which call context it got)
// and records notifications.
type answeringRelay struct {
	mu    sync.Mutex
	notes []mcp.JSONRPCNotification
}

func (r *answeringRelay) Elicit(ctx context.Context, b string, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	mark, _ := ctx.Value(ctxMark{}).(string)
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept,
		Content: map[string]any{"n": mark + "/" + req.Params.Message}}}, nil
}
func (r *answeringRelay) CreateMessage(ctx context.Context, b string, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	return nil, context.Canceled
}
func (r *answeringRelay) ListRoots(ctx context.Context, b string, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	return &mcp.ListRootsResult{}, nil
}
func (r *answeringRelay) Notify(ctx context.Context, b string, n mcp.JSONRPCNotification) {
	r.mu.Lock()
	r.notes = append(r.notes, n)
	r.mu.Unlock()
}

func startScripted(t *testing.T) (*scriptedBackend, string) {
	b := &scriptedBackend{t: t, answers: make(chan json.RawMessage, 4), hung: make(chan struct{}, 4)}
	ts := httptest.NewServer(b)
	t.Cleanup(ts.Close)
	return b, ts.URL + "/mcp"
}

func scriptedManager(t *testing.T, url string, disable bool, relay Relay) *Manager {
	t.Helper()
	m, err := NewManager([]Spec{{Name: "s", URL: url, Headers: map[string]string{"X-Team": "blue"}}},
		&Options{Relay: relay, DisableRawCalls: disable, Health: HealthPolicy{FailureThreshold: 100}})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	if st := m.Status()[0]; st.State != StateReady {
		t.Fatalf("status %+v", st)
	}
	return m
}

// The lean path and mcp-go's client give the same result, byte for byte,
// for the same backend replies (JSON and SSE, notifications and a
// mid-call elicitation included), and the same errors.
func TestRawCallMatchesClient(t *testing.T) {
	b, url := startScripted(t)
	fastRelay, slowRelay := &answeringRelay{}, &answeringRelay{}
	fast := scriptedManager(t, url, false, fastRelay)
	slow := scriptedManager(t, url, true, slowRelay)
	if fast.byName["s"].raw == nil || slow.byName["s"].raw != nil {
		t.Fatal("the lean path is not set up as configured")
	}
	ctx := context.WithValue(t.Context(), ctxMark{}, "call-ctx")
	for _, tool := range []string{"text", "media", "structured", "fails", "nocontent", "resulttype", "progress", "elicit", "rpcerror"} {
		var meta map[string]any
		if tool == "progress" {
			meta = map[string]any{"progressToken": "client-tok", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
		}
		args := json.RawMessage(`{ "a" : [1, 2],"s":"x" }`)
		b.mu.Lock()
		n := len(b.calls)
		b.mu.Unlock()
		got, gerr := fast.CallTool(ctx, "s", tool, args, meta)
		want, werr := slow.CallTool(ctx, "s", tool, args, meta)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("%s: lean path error %v, mcp-go error %v", tool, gerr, werr)
		}
		if gerr != nil {
			if tool != "rpcerror" || !strings.Contains(gerr.Error(), "bad arguments") {
				t.Fatalf("%s: %v", tool, gerr)
			}
		} else {
			for _, f := range [][3]any{{"content", got.Content, want.Content}, {"structuredContent", got.StructuredContent, want.StructuredContent}, {"_meta", got.Meta, want.Meta}} {
				if string(f[1].(json.RawMessage)) != string(f[2].(json.RawMessage)) {
					t.Errorf("%s: %s differs:\nlean   %s\nmcp-go %s", tool, f[0], f[1], f[2])
				}
			}
			if got.IsError != want.IsError {
				t.Errorf("%s: isError %v vs %v", tool, got.IsError, want.IsError)
			}
			// And both are the backend's own bytes.
			if res, ok := scriptedResults[tool]; ok {
				var sent map[string]json.RawMessage
				_ = json.Unmarshal([]byte(res), &sent)
				if sent["content"] == nil {
					sent["content"] = json.RawMessage("[]")
				}
				if string(got.Content) != string(sent["content"]) || string(got.StructuredContent) != string(sent["structuredContent"]) ||
					string(got.Meta) != string(sent["_meta"]) || got.IsError != (string(sent["isError"]) == "true") {
					t.Errorf("%s: not the backend's bytes: %s %s %s", tool, got.Content, got.StructuredContent, got.Meta)
				}
			}
		}
		// The two requests the backend saw: the lean one first.
		b.mu.Lock()
		seen := append([]scriptedCall(nil), b.calls[n:]...)
		b.mu.Unlock()
		if len(seen) != 2 {
			t.Fatalf("%s: backend saw %d calls", tool, len(seen))
		}
		if id, err := strconv.ParseInt(seen[0].id, 10, 64); err != nil || id <= rawIDBase {
			t.Errorf("%s: the first call (id %s) did not take the lean path", tool, seen[0].id)
		}
		if id, _ := strconv.ParseInt(seen[1].id, 10, 64); id >= rawIDBase {
			t.Errorf("%s: the DisableRawCalls call took the lean path", tool)
		}
		var lp, sp any
		_ = json.Unmarshal(seen[0].params, &lp)
		_ = json.Unmarshal(seen[1].params, &sp)
		if fmt.Sprint(lp) != fmt.Sprint(sp) {
			t.Errorf("%s: params differ:\nlean   %s\nmcp-go %s", tool, seen[0].params, seen[1].params)
		}
		for _, h := range []string{"Mcp-Session-Id", "Mcp-Protocol-Version", "X-Team", "Content-Type", "Accept"} {
			if seen[0].header.Get(h) != seen[1].header.Get(h) || seen[0].header.Get(h) == "" {
				t.Errorf("%s: header %s: lean %q, mcp-go %q", tool, h, seen[0].header.Get(h), seen[1].header.Get(h))
			}
		}
		switch tool {
		case "elicit":
			if !strings.Contains(string(got.Content), "answer q-1 accept call-ctx/name?") {
				t.Errorf("elicitation relay: %s", got.Content)
			}
		case "progress":
			if !strings.Contains(string(seen[0].params), `"progressToken":"vmcp-`) || !strings.Contains(string(seen[0].params), `"traceparent":"00-0af7`) {
				t.Errorf("lean _meta: %s", seen[0].params)
			}
		}
	}
	// The same notifications were relayed, the progress under the
	// client's own token.
	fastRelay.mu.Lock()
	slowRelay.mu.Lock()
	defer fastRelay.mu.Unlock()
	defer slowRelay.mu.Unlock()
	if len(fastRelay.notes) != 2 || fmt.Sprint(fastRelay.notes) != fmt.Sprint(slowRelay.notes) {
		t.Fatalf("notifications: lean %v, mcp-go %v", fastRelay.notes, slowRelay.notes)
	}
	if tok := fastRelay.notes[0].Params.AdditionalFields["progressToken"]; tok != "client-tok" {
		t.Fatalf("progress relayed with token %v", tok)
	}
}

// A reply for another request, and a session the backend no longer
// knows, fail the call clearly; the unknown session also marks the
// backend lost, so it is reconnected.
func TestRawCallBadReplies(t *testing.T) {
	_, url := startScripted(t)
	m := scriptedManager(t, url, false, &answeringRelay{})
	_, err := m.CallTool(t.Context(), "s", "wrongid", nil, nil)
	if err == nil || !strings.Contains(err.Error(), `response carries id "someone-else"`) {
		t.Fatalf("wrong id: %v", err)
	}
	_, err = m.CallTool(t.Context(), "s", "text", json.RawMessage(`{"a":`), nil)
	if err == nil || !strings.Contains(err.Error(), "arguments") {
		t.Fatalf("bad arguments: %v", err)
	}
	_, err = m.CallTool(t.Context(), "s", "gone", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "session terminated") {
		t.Fatalf("gone: %v", err)
	}
	waitFor(t, 5*time.Second, func() bool { return m.Status()[0].Connects >= 2 && m.Status()[0].State == StateReady })
	if _, err := m.CallTool(t.Context(), "s", "text", nil, nil); err != nil {
		t.Fatalf("after reconnecting: %v", err)
	}
}

// Cancelling the caller's context ends a lean call that waits on the
// backend, and the backend sees its request end.
func TestRawCallCancel(t *testing.T) {
	b, url := startScripted(t)
	m := scriptedManager(t, url, false, &answeringRelay{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := m.CallTool(ctx, "s", "hang", nil, nil)
		done <- err
	}()
	select {
	case <-b.hung:
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached the backend")
	}
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "canceled") {
			t.Fatalf("cancelled call: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled call did not return")
	}
	if st := m.Status()[0]; st.CircuitOpen || st.State != StateReady {
		t.Fatalf("a cancelled call counted against the backend: %+v", st)
	}
}

// With Options.TraceContext set (telemetry traces on), both call paths
// send the backend a valid _meta carrying that traceparent (and the
// substituted progress token when the client sent one), whatever the
// client's _meta was; the client's own trace keys are replaced, its other
// keys kept.
func TestCallInjectsTraceContext(t *testing.T) {
	b, url := startScripted(t)
	tc := TraceContext{Parent: testParent("03"), HasParent: true, State: "vmcp=1"}
	managers := map[string]*Manager{}
	for name, disable := range map[string]bool{"lean": false, "mcp-go": true} {
		m, err := NewManager([]Spec{{Name: "s", URL: url}}, &Options{DisableRawCalls: disable, Health: HealthPolicy{FailureThreshold: 100},
			TraceContext: func(context.Context) (TraceContext, bool) { return tc, true }})
		if err != nil {
			t.Fatal(err)
		}
		m.Start(t.Context())
		t.Cleanup(func() { _ = m.Close() })
		managers[name] = m
	}
	for mn, raw := range map[string]string{
		"none":         ``,
		"empty":        `{}`,
		"other":        `{"k":"<v>","n":[1,{"x":null}]}`,
		"client trace": `{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"c=1","baggage":"u=1","k":1}`,
		"token":        `{"progressToken":"client-tok","trace\u0070arent":"esc"}`,
	} {
		var meta map[string]any
		if raw != "" {
			_ = json.Unmarshal([]byte(raw), &meta)
		}
		for name, m := range managers {
			b.mu.Lock()
			n := len(b.calls)
			b.mu.Unlock()
			if _, err := m.CallTool(t.Context(), "s", "text", json.RawMessage(`{}`), meta); err != nil {
				t.Fatalf("%s %s: %v", mn, name, err)
			}
			b.mu.Lock()
			seen := b.calls[n]
			b.mu.Unlock()
			var p struct {
				Meta map[string]any `json:"_meta"`
			}
			if err := json.Unmarshal(seen.params, &p); err != nil || p.Meta == nil {
				t.Fatalf("%s %s: params %s: %v", mn, name, seen.params, err)
			}
			want := map[string]any{"traceparent": string(tc.Parent[:]), "tracestate": "vmcp=1"}
			for k, v := range meta {
				if !traceKey(k) {
					want[k] = v
				}
			}
			if tok, ok := p.Meta["progressToken"].(string); meta["progressToken"] != nil {
				if !ok || !strings.HasPrefix(tok, "vmcp-") {
					t.Errorf("%s %s: progressToken %v", mn, name, p.Meta["progressToken"])
				}
				want["progressToken"] = tok
			}
			if fmt.Sprint(p.Meta) != fmt.Sprint(want) {
				t.Errorf("%s %s: backend _meta %v, want %v", mn, name, p.Meta, want)
			}
			var orig map[string]any
			if raw != "" {
				_ = json.Unmarshal([]byte(raw), &orig)
			}
			if fmt.Sprint(meta) != fmt.Sprint(orig) {
				t.Errorf("%s %s: the caller's _meta was modified: %v", mn, name, meta)
			}
		}
	}
}
