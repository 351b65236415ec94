package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// tools/call of a plain backend tool on a 2025-11-25 HTTP session, served
// without mcp-go's request handling.
//
// mcp-go's streamable-HTTP server spends most of a proxied call's front
// CPU around the tool handler: decoding the message three times (envelope,
// era, request with its arguments into maps), setting up a notification
// forwarder goroutine and a request-scoped SSE channel, and re-encoding the
// result. For the plainest and commonest request (a legacy client calling
// a backend tool, nothing to say back mid-call) the toolsList mount
// (toolslist.go) hands the request to fastCall, which runs the very same
// handler chain (recovery, the SERVER span when telemetry is on, then
// toolHandler: authorization, the one-node plan, audit) with the same
// context (the mcp-go session, the HTTP context function's values) and
// writes what mcp-go would write: 200, Content-Type application/json, the
// response with the request's own id bytes, a newline.
//
// It is taken only when mcp-go would do nothing else with the request,
// checked before anything runs; otherwise mcp-go serves it:
//
//   - everything the tools/list fast path requires (a live session
//     registered through the mount, POST, JSON, legacy protocol, nothing
//     queued for the session, mcp-go saw the session recently, no DNS
//     rebinding);
//   - one JSON-RPC request, method tools/call, a string or number id, params
//     holding only name, arguments (an object, or none) and _meta without a
//     progress token (progress goes out mid-call) or protocol keys;
//   - the name is a backend tool of the current catalogue (not a
//     composite, not a run tool);
//   - the session's client declared neither elicitation, sampling nor roots
//     (a backend's request would need mcp-go's request-scoped SSE stream);
//   - no mcp-go hook observes tool calls (OnRequestInitialization,
//     OnBeforeAny, OnSuccess, OnBeforeCallTool, OnAfterCallTool; vmcp
//     installs none; OnError hooks are called on a handler error, as mcp-go
//     does).
//
// Log messages a backend sends during the call go to this response, as
// mcp-go does: the first one turns it into an SSE stream (event: message),
// and the result is its last event. A notifications/cancelled for the
// request's id (over another POST of the session) cancels it, as mcp-go's
// in-flight table does.

// fastStream is the response of a call served by fastCall: notifications
// sent during the call are written to it.
type fastStream struct {
	mu       sync.Mutex
	w        http.ResponseWriter
	upgraded bool
	done     bool
}

type fastStreamKey struct{}

// send writes a notification as an SSE event; false when the call's
// response is already written (the caller sends it the usual way).
func (s *fastStream) send(method string, params map[string]any) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return false
	}
	b, err := json.Marshal(mcp.JSONRPCNotification{JSONRPC: mcp.JSONRPC_VERSION,
		Notification: mcp.Notification{Method: method, Params: mcp.NotificationParams{AdditionalFields: params}}})
	if err != nil {
		return false
	}
	s.upgrade()
	_, _ = fmt.Fprintf(s.w, "event: message\ndata: %s\n\n", b)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
	return true
}

func (s *fastStream) upgrade() {
	if s.upgraded {
		return
	}
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Connection", "keep-alive")
	h.Set("Cache-Control", "no-cache")
	s.w.WriteHeader(http.StatusOK)
	s.upgraded = true
}

// finish writes the response (message is a complete JSON-RPC response).
func (s *fastStream) finish(message []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if s.upgraded {
		_, _ = fmt.Fprintf(s.w, "event: message\ndata: %s\n\n", message)
		if f, ok := s.w.(http.Flusher); ok {
			f.Flush()
		}
		return
	}
	s.w.Header().Set("Content-Type", "application/json")
	s.w.WriteHeader(http.StatusOK)
	_, _ = s.w.Write(message)
	_, _ = s.w.Write([]byte{'\n'})
}

// notifyFast sends a notification of the call in ctx to its fast response;
// false when ctx is no fast call (or its response is written).
func notifyFast(ctx context.Context, method string, params map[string]any) bool {
	s, ok := ctx.Value(fastStreamKey{}).(*fastStream)
	return ok && s.send(method, params)
}

// fastCalls tracks the fast calls in flight, for notifications/cancelled.
type fastCalls struct {
	m sync.Map // session id + "\x00" + raw request id → context.CancelFunc
}

func (f *fastCalls) key(session string, id []byte) string {
	return session + "\x00" + string(bytes.TrimSpace(id))
}

// cancelled cancels the fast call a notifications/cancelled names (the
// notification still goes on to mcp-go).
func (f *fastCalls) cancelled(session string, body []byte) {
	if !bytes.Contains(body, []byte(`"notifications/cancelled"`)) {
		return
	}
	var n struct {
		Method string `json:"method"`
		Params struct {
			RequestID json.RawMessage `json:"requestId"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &n) != nil || n.Method != string(mcp.MethodNotificationCancelled) || len(n.Params.RequestID) == 0 {
		return
	}
	if c, ok := f.m.Load(f.key(session, n.Params.RequestID)); ok {
		c.(context.CancelFunc)()
	}
}

// observesToolCalls reports mcp-go hooks that would see a successful
// tools/call (OnError hooks are called by fastCall itself).
func observesToolCalls(h *mcpserver.Hooks) bool {
	return h != nil && len(h.OnRequestInitialization)+len(h.OnBeforeAny)+len(h.OnSuccess)+
		len(h.OnBeforeCallTool)+len(h.OnAfterCallTool) > 0
}

// fastCall serves a tools/call body if it qualifies (see above) and
// reports whether it did; if not, nothing was written or run.
func (g *Gateway) fastCall(w http.ResponseWriter, r *http.Request, ls *liveSession, body []byte) bool {
	if !bytes.Contains(body, []byte(`"tools/call"`)) || ls.session == nil {
		return false
	}
	var msg struct {
		JSONRPC string                     `json:"jsonrpc"`
		ID      json.RawMessage            `json:"id"`
		Method  string                     `json:"method"`
		Result  json.RawMessage            `json:"result"`
		Error   json.RawMessage            `json:"error"`
		Params  map[string]json.RawMessage `json:"params"`
	}
	if json.Unmarshal(body, &msg) != nil || msg.JSONRPC != mcp.JSONRPC_VERSION || msg.Method != string(mcp.MethodToolsCall) ||
		msg.Result != nil || msg.Error != nil || !plainID(msg.ID) {
		return false
	}
	if v := r.Header.Get(mcp.HeaderProtocolVersion); v != "" && (!mcp.IsValidProtocolVersion(v) || mcp.IsModernProtocol(v)) {
		return false
	}
	var name string
	var args json.RawMessage
	var meta *mcp.Meta
	for k, v := range msg.Params {
		switch k {
		case "name":
			if json.Unmarshal(v, &name) != nil {
				return false
			}
		case "arguments":
			if t := bytes.TrimSpace(v); len(t) == 0 || t[0] != '{' {
				return false
			}
			args = v
		case "_meta":
			if json.Unmarshal(v, &meta) != nil || meta == nil || meta.ProgressToken != nil {
				return false
			}
			for mk := range meta.AdditionalFields {
				if strings.HasPrefix(mk, "io.modelcontextprotocol/") {
					return false
				}
			}
		default:
			return false
		}
	}
	te := g.cat.Load().tools[name]
	if te == nil || te.composite || te.backend == "" {
		return false
	}
	if s, ok := ls.session.(mcpserver.SessionWithClientInfo); ok {
		if c := s.GetClientCapabilities(); c.Elicitation != nil || c.Sampling != nil || c.Roots != nil {
			return false
		}
	}

	g.tl.callsServed.Add(1)
	ctx := g.httpContext(g.mcp.WithContext(r.Context(), ls.session), r)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	key := g.fast.key(ls.session.SessionID(), msg.ID)
	g.fast.m.Store(key, cancel)
	defer g.fast.m.Delete(key)
	stream := &fastStream{w: w}
	ctx = context.WithValue(ctx, fastStreamKey{}, stream)

	req := mcp.CallToolRequest{Request: mcp.Request{Method: string(mcp.MethodToolsCall)}, Header: r.Header}
	req.Params.Name, req.Params.RawArguments, req.Params.Meta = name, args, meta
	handler := g.toolHandler(name)
	if g.tel != nil {
		handler = g.traceToolCall(handler, g.fastServerRequest(name, clientAddr(ctx), ls.session.SessionID(), meta))
	}
	res, err := func() (res *mcp.CallToolResult, err error) {
		defer func() { // mcp-go's WithRecovery
			if p := recover(); p != nil {
				res, err = nil, fmt.Errorf("panic recovered in %s tool handler: %v", name, p)
			}
		}()
		return handler(ctx, req)
	}()
	var out any
	switch {
	case err != nil:
		var id any
		_ = json.Unmarshal(msg.ID, &id)
		for _, h := range g.mcp.GetHooks().OnError {
			h(ctx, id, mcp.MethodToolsCall, &req, err)
		}
		out = mcp.JSONRPCError{JSONRPC: mcp.JSONRPC_VERSION, ID: mcp.NewRequestId(int64(0)), Error: mcp.NewJSONRPCErrorDetails(mcp.INTERNAL_ERROR, err.Error(), nil)}
	case res == nil:
		out = mcp.JSONRPCError{JSONRPC: mcp.JSONRPC_VERSION, ID: mcp.NewRequestId(int64(0)),
			Error: mcp.NewJSONRPCErrorDetails(mcp.INTERNAL_ERROR, fmt.Sprintf("tool '%s' handler returned no result", name), nil)}
	default:
		if b, ok := encodeCallResult(res, msg.ID); ok {
			stream.finish(b)
			return true
		}
		out = mcp.NewJSONRPCResultResponse(mcp.NewRequestId(int64(0)), res)
	}
	stream.finish(withID(out, msg.ID))
	return true
}

// encodeCallResult writes the response to a tools/call whose result
// passThrough rebuilt (every content item the backend's raw bytes) without
// encoding/json's reflection over mcp-go's types: the bytes json.Marshal
// makes of mcp.NewJSONRPCResultResponse(id, res). mcp.CallToolResult
// marshals as a map (keys sorted: _meta, content, isError,
// structuredContent), and encoding/json compacts, with HTML escaping, what
// each Marshaler returns — every raw item, then the result, then the
// envelope: one compacting pass over the assembled result is the same
// (compacting is idempotent). ok is false for anything else (a field
// this does not write, a content item that is not raw bytes, invalid
// JSON): the caller then marshals as before, errors included.
func encodeCallResult(res *mcp.CallToolResult, id json.RawMessage) ([]byte, bool) {
	if res.ResultType != "" || len(res.InputRequests) > 0 || res.RequestState != "" ||
		(res.StructuredContent != nil && len(res.RawStructuredContent) == 0) {
		return nil, false
	}
	n := 64
	for _, c := range res.Content {
		// passThrough's items are single JSON values (json.Unmarshal
		// split them); an empty one would be mcp-go's marshal error.
		rc, ok := c.(rawContent)
		if !ok || len(bytes.TrimSpace(rc.raw)) == 0 {
			return nil, false
		}
		n += len(rc.raw) + 1
	}
	n += len(res.RawStructuredContent)
	r := make([]byte, 0, n)
	r = append(r, '{')
	if res.Meta != nil {
		mb, err := json.Marshal(res.Meta)
		if err != nil {
			return nil, false
		}
		r = append(r, `"_meta":`...)
		r = append(append(r, mb...), ',')
	}
	r = append(r, `"content":[`...)
	for i, c := range res.Content {
		if i > 0 {
			r = append(r, ',')
		}
		r = append(r, c.(rawContent).raw...)
	}
	r = append(r, ']')
	if res.IsError {
		r = append(r, `,"isError":true`...)
	}
	if len(res.RawStructuredContent) > 0 {
		r = append(r, `,"structuredContent":`...)
		r = append(r, res.RawStructuredContent...)
	}
	r = append(r, '}')
	var b bytes.Buffer
	b.Grow(len(respHead) + len(id) + len(r) + 16)
	b.Write(respHead)
	b.Write(id)
	b.WriteString(`,"result":`)
	if err := compactHTML(&b, r); err != nil {
		return nil, false
	}
	b.WriteByte('}')
	return b.Bytes(), true
}

// compactHTML appends src compacted with <, >, &, U+2028 and U+2029
// escaped in strings: what encoding/json does with a Marshaler's output.
func compactHTML(dst *bytes.Buffer, src []byte) error {
	n := dst.Len()
	if err := json.Compact(dst, src); err != nil {
		dst.Truncate(n)
		return err
	}
	c := dst.Bytes()[n:]
	if bytes.IndexAny(c, "<>&\u2028\u2029") < 0 {
		return nil
	}
	esc := append([]byte(nil), c...)
	dst.Truncate(n)
	json.HTMLEscape(dst, esc)
	return nil
}

// withID encodes a response made with id 0 and puts the request's own id
// bytes in its place (mcp-go writes the id it decoded, the same value).
func withID(resp any, id json.RawMessage) []byte {
	b, err := json.Marshal(resp)
	head := append(append([]byte{}, respHead...), '0')
	if err != nil || !bytes.HasPrefix(b, head) {
		b, _ = json.Marshal(mcp.JSONRPCError{JSONRPC: mcp.JSONRPC_VERSION, ID: mcp.NewRequestId(int64(0)),
			Error: mcp.NewJSONRPCErrorDetails(mcp.INTERNAL_ERROR, fmt.Sprintf("encoding the result: %v", err), nil)})
	}
	out := make([]byte, 0, len(b)+len(id))
	out = append(out, respHead...)
	out = append(out, id...)
	return append(out, b[len(head):]...)
}
