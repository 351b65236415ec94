package backends

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// The lean tools/call path of a streamable-HTTP backend.
//
// mcp-go's client encodes a tools/call from typed structs and decodes the
// result into mcp.CallToolResult (every content item parsed into its Go
// type) although vmcp only keeps the result's raw bytes (the tap). For a
// streamable-HTTP session on a protocol before 2026-07-28, a tools/call
// is sent here instead, on the session mcp-go opened and over the same
// HTTP client (so the same connection pool and outgoing credentials):
//
//   - the request is written directly: the backend's tool name, the
//     arguments (compacted, as encoding/json would), the _meta vmcp sends
//     (the progress token it substitutes, trace context), a JSON-RPC id of
//     its own (from 2^40 up, apart from mcp-go's), the session's
//     Mcp-Session-Id and Mcp-Protocol-Version and the backend's configured
//     headers;
//   - a JSON response is checked (a JSON-RPC response with our id, a
//     result object or an error) and its result's bytes are kept as they
//     came: no content item is decoded (a missing resultType is fine);
//   - an SSE response is read here, event by event, exactly as mcp-go's
//     transport reads it: notifications go to the handler the mcp-go
//     client installed (progress, logs, list_changed), requests the
//     backend sends mid-call (elicitation, sampling, roots, ping) go to the
//     client's request handler, whose answer is POSTed back on the session
//     — so vmcp's relays (server/relay.go, server/bridge.go) see the same
//     calls with the same context as on mcp-go's path;
//   - 404 ends the session (the backend is reconnected), 401 is an
//     authorization error; cancellation and backends[].timeout end the
//     HTTP request, as mcp-go does over HTTP.
//
// What stays on mcp-go's path: stdio, in-process and legacy SSE backends,
// backends speaking 2026-07-28 (input_required round trips, per-request
// _meta and headers), every other method, and an SSE stream that ends
// before the result after announcing event ids (SEP-1699 polling: mcp-go
// would reconnect; here the call fails with a clear error — no backend
// vmcp knows does this on tools/call).

// rawSession is what the lean path needs of one backend session.
type rawSession struct {
	c        *Conn
	url      string
	hc       *http.Client
	st       *transport.StreamableHTTP
	tap      *tap
	protocol string
	seq      atomic.Int64
	h1       *h1Pool // plain-HTTP exchanges on the caller's goroutine (h1.go); nil: net/http
}

// rawIDBase keeps the lean path's JSON-RPC ids apart from mcp-go's (which
// count from 1 on the same session).
const rawIDBase = 1 << 40

// newRawSession returns the lean path for a freshly initialised session,
// or nil when the call must go through mcp-go.
func newRawSession(c *Conn, tr transport.Interface, hc *http.Client, tp *tap, protocol string) *rawSession {
	st, ok := tr.(*transport.StreamableHTTP)
	if !ok || hc == nil || tp == nil || c.m.opts.DisableRawCalls || mcp.IsModernProtocol(protocol) || protocol == "" {
		return nil
	}
	if n, r := tp.handlers(); n == nil || r == nil {
		return nil
	}
	rs := &rawSession{c: c, url: c.spec.URL, hc: hc, st: st, tap: tp, protocol: protocol, h1: newH1Pool(c.spec.URL, hc)}
	rs.seq.Store(rawIDBase)
	return rs
}

// header sets what every request on the session carries.
func (rs *rawSession) header(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json, text/event-stream")
	if sid := rs.st.GetSessionId(); sid != "" {
		h.Set(transport.HeaderKeySessionID, sid)
	}
	h.Set(transport.HeaderKeyProtocolVersion, rs.protocol)
	for k, v := range rs.c.spec.Headers {
		h.Set(k, v)
	}
}

// rawResult is a tools/call result as vmcp keeps it.
type rawResult struct {
	Content           json.RawMessage `json:"content"`
	StructuredContent json.RawMessage `json:"structuredContent"`
	IsError           bool            `json:"isError"`
	Meta              json.RawMessage `json:"_meta"`
}

// rawEnvelope is one JSON-RPC message from the backend.
type rawEnvelope struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// errNoResult is a response with neither result nor error.
var errNoResult = errors.New("no result")

// encodeCall writes the tools/call request (meta: see meta.go).
func encodeCall(id int64, tool string, args json.RawMessage, meta *callMeta) ([]byte, error) {
	bs := make([]byte, 0, 224+len(tool)+len(args)) // room for the traceparent _meta
	bs = append(bs, `{"jsonrpc":"2.0","id":`...)
	bs = strconv.AppendInt(bs, id, 10)
	bs = append(bs, `,"method":"tools/call","params":{`...)
	if meta != nil && !meta.empty() {
		var err error
		bs = append(bs, `"_meta":`...)
		if bs, err = meta.appendJSON(bs); err != nil {
			return nil, fmt.Errorf("failed to marshal request: %w", err)
		}
		bs = append(bs, ',')
	}
	bs = append(bs, `"name":`...)
	bs = appendJSONString(bs, tool)
	bs = append(bs, `,"arguments":`...)
	b := bytes.NewBuffer(bs)
	if err := json.Compact(b, args); err != nil {
		return nil, fmt.Errorf("failed to marshal request: arguments: %w", err)
	}
	b.WriteString("}}")
	return b.Bytes(), nil
}

// appendJSONString appends s as encoding/json encodes a string: plain
// printable ASCII as is, anything else through json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			sb, _ := json.Marshal(s)
			return append(b, sb...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// callTool sends one tools/call and returns its result. ctx is the
// tracked call context (conn.begin): its deadline and cancellation end the
// HTTP request, and it is what server requests received mid-call are
// handled with.
func (rs *rawSession) callTool(ctx context.Context, tool string, args json.RawMessage, meta *callMeta) (*rawResult, error) {
	id := rs.seq.Add(1)
	body, err := encodeCall(id, tool, args, meta)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, transport.NewError(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rs.url, bytes.NewReader(body))
	if err != nil {
		return nil, transport.NewError(fmt.Errorf("failed to create request: %w", err))
	}
	rs.header(req.Header)
	resp, err := rs.do(req)
	if err != nil {
		return nil, transport.NewError(fmt.Errorf("failed to send request: %w", err))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusAccepted:
	case http.StatusNotFound:
		return nil, transport.NewError(fmt.Errorf("failed to send request: %w", transport.ErrSessionTerminated))
	case http.StatusUnauthorized:
		return nil, transport.NewError(&transport.AuthorizationRequiredError{})
	default:
		b, _ := io.ReadAll(resp.Body)
		var env rawEnvelope
		if json.Unmarshal(b, &env) == nil && len(env.Error) > 0 {
			return nil, rpcError(env.Error)
		}
		return nil, transport.NewError(fmt.Errorf("request failed with status %d: %s", resp.StatusCode, b))
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch mt {
	case "application/json":
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, transport.NewError(fmt.Errorf("failed to decode response: %w", err))
		}
		return rs.response(id, b)
	case "text/event-stream":
		return rs.stream(ctx, id, resp.Body)
	default:
		return nil, transport.NewError(fmt.Errorf("unexpected content type: %s", resp.Header.Get("Content-Type")))
	}
}

// response checks one JSON response and decodes its result's fields.
func (rs *rawSession) response(id int64, b []byte) (*rawResult, error) {
	var env struct {
		rawEnvelope
		Result *rawResult `json:"result"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		// Tell an unreadable message from a result of the wrong shape
		// (mcp-go's path: the result is kept raw, then unreadable).
		var plain rawEnvelope
		if json.Unmarshal(b, &plain) != nil || len(plain.Result) == 0 {
			return nil, transport.NewError(fmt.Errorf("failed to decode response: %w", err))
		}
		return nil, fmt.Errorf("%w: %w", errUnreadable, err)
	}
	if !sameID(env.ID, id) {
		return nil, transport.NewError(fmt.Errorf("response carries id %s, not the request's %d", env.ID, id))
	}
	if len(env.Error) > 0 && string(env.Error) != "null" {
		return nil, rpcError(env.Error)
	}
	if env.Result == nil {
		return nil, errNoResult
	}
	return env.Result, nil
}

var errUnreadable = errors.New("unreadable result")

// rpcError is the error of a JSON-RPC error response, as mcp-go's client
// reports it.
func rpcError(raw json.RawMessage) error {
	var d mcp.JSONRPCErrorDetails
	if err := json.Unmarshal(raw, &d); err != nil {
		return transport.NewError(fmt.Errorf("failed to decode response: %w", err))
	}
	return d.AsError()
}

// sameID reports whether a response's id is the request's.
func sameID(raw json.RawMessage, id int64) bool {
	s := string(raw)
	if s == strconv.FormatInt(id, 10) {
		return true
	}
	f, err := strconv.ParseFloat(s, 64)
	return err == nil && f == float64(id)
}

// stream reads an SSE response until the result of request id: the same
// event parsing as mcp-go's transport, the same handlers for what is not
// the result.
func (rs *rawSession) stream(ctx context.Context, id int64, body io.ReadCloser) (*rawResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		_ = body.Close() // interrupts a blocked read
	}()
	notify, request := rs.tap.handlers()
	br := bufio.NewReader(body)
	var event, data string
	var sawID bool
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if ctx.Err() != nil {
				return nil, transport.NewError(ctx.Err())
			}
			if err == io.EOF && data != "" {
				if r, done, herr := rs.event(ctx, id, data, notify, request); done {
					return r, herr
				}
			}
			if err == io.EOF {
				if sawID {
					return nil, transport.NewError(errors.New("the backend ended its event stream before the result (stream resumption is not supported on this path)"))
				}
				return nil, transport.NewError(errors.New("unexpected nil response"))
			}
			return nil, transport.NewError(fmt.Errorf("SSE stream error: %w", err))
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if data != "" {
				if r, done, herr := rs.event(ctx, id, data, notify, request); done {
					return r, herr
				}
			}
			event, data = "", ""
			continue
		}
		switch {
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(line[len("event:"):])
		case strings.HasPrefix(line, "data:"):
			d := strings.TrimPrefix(line[len("data:"):], " ")
			if data != "" {
				data += "\n" + d
			} else {
				data = d
			}
		case strings.HasPrefix(line, "id:"):
			sawID = true
		}
		_ = event // every event type carries a JSON-RPC message, as in mcp-go
	}
}

// event handles one SSE event; done is set when it was the result.
func (rs *rawSession) event(ctx context.Context, id int64, data string, notify func(mcp.JSONRPCNotification), request transport.RequestHandler) (*rawResult, bool, error) {
	var env rawEnvelope
	if err := json.Unmarshal([]byte(data), &env); err != nil {
		rs.c.m.log.Debug("backend sent an unreadable event", "backend", rs.c.spec.Name, "err", err)
		return nil, false, nil
	}
	noID := len(env.ID) == 0 || string(env.ID) == "null"
	switch {
	case noID && env.Method != "":
		var n mcp.JSONRPCNotification
		if err := json.Unmarshal([]byte(data), &n); err == nil && notify != nil {
			notify(n)
		}
		return nil, false, nil
	case noID:
		return nil, false, nil
	case env.Method != "":
		var req transport.JSONRPCRequest
		if err := json.Unmarshal([]byte(data), &req); err == nil {
			// As in mcp-go, the handler's context ends with the
			// stream (the call returned or was cancelled).
			go rs.serve(ctx, req, request)
		}
		return nil, false, nil
	}
	if !sameID(env.ID, id) {
		return nil, false, nil // not this call's (mcp-go takes any)
	}
	r, err := rs.response(id, []byte(data))
	return r, true, err
}

// serve answers a request the backend sent during a call, with the mcp-go
// client's handler (as its transport does), and POSTs the answer back.
func (rs *rawSession) serve(ctx context.Context, req transport.JSONRPCRequest, handler transport.RequestHandler) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var resp *transport.JSONRPCResponse
	func() {
		defer func() {
			if r := recover(); r != nil {
				rs.c.m.log.Error("panic handling a backend request", "backend", rs.c.spec.Name, "method", req.Method, "panic", r)
				resp = transport.NewJSONRPCErrorResponse(req.ID, mcp.INTERNAL_ERROR, fmt.Sprintf("internal error: panic in request handler: %v", r), nil)
			}
		}()
		var err error
		resp, err = handler(rctx, req)
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled):
			resp = transport.NewJSONRPCErrorResponse(req.ID, mcp.REQUEST_INTERRUPTED, "request was cancelled", nil)
		case errors.Is(err, context.DeadlineExceeded):
			resp = transport.NewJSONRPCErrorResponse(req.ID, mcp.REQUEST_INTERRUPTED, "request timed out", nil)
		case req.Method == string(mcp.MethodSamplingCreateMessage):
			resp = transport.NewJSONRPCErrorResponse(req.ID, mcp.INTERNAL_ERROR, fmt.Sprintf("sampling request failed: %v", err), nil)
		default:
			resp = transport.NewJSONRPCErrorResponse(req.ID, mcp.INTERNAL_ERROR, err.Error(), nil)
		}
	}()
	if resp == nil {
		return
	}
	b, err := json.Marshal(resp)
	if err != nil {
		rs.c.m.log.Error("cannot encode the answer to a backend request", "backend", rs.c.spec.Name, "err", err)
		return
	}
	hr, err := http.NewRequestWithContext(rctx, http.MethodPost, rs.url, bytes.NewReader(b))
	if err != nil {
		return
	}
	rs.header(hr.Header)
	res, err := rs.do(hr)
	if err != nil {
		if rctx.Err() == nil {
			rs.c.m.log.Warn("sending the answer to a backend request failed", "backend", rs.c.spec.Name, "err", err)
		}
		return
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusAccepted {
		rs.c.m.log.Warn("the backend refused the answer to its request", "backend", rs.c.spec.Name, "status", res.StatusCode)
	}
}
