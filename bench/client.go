package main

// Clients: an mcp-go client per session (the real thing), and a lean raw
// JSON-RPC session (one POST per request, no decoding beyond what the
// check needs) for saturation runs and byte-level comparisons.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

const (
	eraLegacy = mcp.ProtocolVersion20251125 // session-based
	eraModern = "2026-07-28"                // stateless requests
)

// newHTTPClient is one session's HTTP client: its own connection pool, as
// a separate client process would have.
func newHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 8
	return &http.Client{Transport: tr}
}

// session is an mcp-go client with its HTTP client.
type session struct {
	*client.Client
	hc *http.Client
}

func (s *session) Close() {
	_ = s.Client.Close()
	s.hc.CloseIdleConnections()
}

// dial opens and initializes an mcp-go client session to url.
func dial(ctx context.Context, url, era string, opts ...client.ClientOption) (*session, error) {
	hc := newHTTPClient()
	tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(hc))
	if err != nil {
		return nil, err
	}
	return startSession(ctx, tr, hc, era, opts...)
}

// dialListening is dial with the legacy standalone GET stream open (to get
// list_changed) and a notification callback.
func dialListening(ctx context.Context, url string, onNote func(mcp.JSONRPCNotification)) (*session, error) {
	hc := newHTTPClient()
	tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(hc), transport.WithContinuousListening())
	if err != nil {
		return nil, err
	}
	c := client.NewClient(tr, client.WithProtocolVersion(eraLegacy))
	c.OnNotification(onNote)
	return initSession(ctx, c, hc, eraLegacy)
}

func startSession(ctx context.Context, tr transport.Interface, hc *http.Client, era string, opts ...client.ClientOption) (*session, error) {
	if era == eraLegacy {
		opts = append(opts, client.WithProtocolVersion(eraLegacy))
	}
	return initSession(ctx, client.NewClient(tr, opts...), hc, era)
}

func initSession(ctx context.Context, c *client.Client, hc *http.Client, era string) (*session, error) {
	if err := c.Start(context.Background()); err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := c.Initialize(ictx, mcp.InitializeRequest{Params: mcp.InitializeParams{
		ClientInfo: mcp.Implementation{Name: "vmcp-bench", Version: "1"}}})
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("initialize: %w", err)
	}
	if res.ProtocolVersion != era {
		_ = c.Close()
		return nil, fmt.Errorf("negotiated %q, want %q", res.ProtocolVersion, era)
	}
	return &session{Client: c, hc: hc}, nil
}

// dialN opens n sessions (concurrently, a few at a time).
func dialN(ctx context.Context, n int, url, era string) ([]*session, error) {
	out := make([]*session, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			s, err := dial(ctx, url, era)
			out[i] = s
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		closeAll(out)
		return nil, first
	}
	return out, nil
}

func closeAll(ss []*session) {
	for _, s := range ss {
		if s != nil {
			s.Close()
		}
	}
}

// callEcho calls an echo tool and checks the answer.
func callEcho(ctx context.Context, c *client.Client, tool, msg string, sleepMS int) error {
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = json.RawMessage(fmt.Sprintf(`{"msg":%q,"sleep_ms":%d}`, msg, sleepMS))
	return echoed(c, ctx, req, msg)
}

// echoed makes the call and checks that it echoed msg.
func echoed(c *client.Client, ctx context.Context, req mcp.CallToolRequest, msg string) error {
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return err
	}
	if got := resultText(res); res.IsError || got != msg {
		return fmt.Errorf("%s: wrong answer %q (isError %v), want %q", req.Params.Name, got, res.IsError, msg)
	}
	return nil
}

// callEchoTraced is callEcho with a W3C traceparent in the request's
// _meta, as a traced agent sends one (a fixed trace per worker w).
func callEchoTraced(ctx context.Context, c *client.Client, tool, msg string, w int) error {
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = json.RawMessage(fmt.Sprintf(`{"msg":%q,"sleep_ms":0}`, msg))
	req.Params.Meta = &mcp.Meta{AdditionalFields: map[string]any{
		"traceparent": fmt.Sprintf("00-4bf92f3577b34da6a3ce929d%08x-00f067aa0ba902b7-01", w)}}
	return echoed(c, ctx, req, msg)
}

func resultText(res *mcp.CallToolResult) string {
	var sb strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			sb.WriteString(tc.Text)
		}
	}
	return sb.String()
}

// ---------------------------------------------------------------------------
// raw JSON-RPC over streamable HTTP (2025-11-25 session)

// rawSession speaks JSON-RPC over POSTs with a session id.
type rawSession struct {
	url string
	hc  *http.Client
	sid string
	id  atomic.Int64
}

// rawDial initializes a 2025-11-25 session with plain POSTs.
func rawDial(ctx context.Context, url string, hc *http.Client) (*rawSession, error) {
	if hc == nil {
		hc = newHTTPClient()
	}
	s := &rawSession{url: url, hc: hc}
	hdr, _, err := s.post(ctx, "initialize", json.RawMessage(`{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"vmcp-bench-raw","version":"1"}}`), true)
	if err != nil {
		return nil, fmt.Errorf("initialize: %w", err)
	}
	s.sid = hdr.Get("Mcp-Session-Id")
	if s.sid == "" {
		return nil, errors.New("initialize: no Mcp-Session-Id")
	}
	if _, _, err := s.post(ctx, "notifications/initialized", nil, false); err != nil {
		return nil, fmt.Errorf("notifications/initialized: %w", err)
	}
	return s, nil
}

// Close ends the session (DELETE).
func (s *rawSession) Close() {
	req, _ := http.NewRequest(http.MethodDelete, s.url, nil)
	req.Header.Set("Mcp-Session-Id", s.sid)
	req.Header.Set("Mcp-Protocol-Version", eraLegacy)
	if resp, err := s.hc.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}

type rpcResponse struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// call sends one request and returns the raw result.
func (s *rawSession) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	_, res, err := s.post(ctx, method, params, true)
	return res, err
}

// request is a POST of body on the session (its id and protocol version
// once it has one).
func (s *rawSession) request(ctx context.Context, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if s.sid != "" {
		req.Header.Set("Mcp-Session-Id", s.sid)
		req.Header.Set("Mcp-Protocol-Version", eraLegacy)
	}
	return req, nil
}

func (s *rawSession) post(ctx context.Context, method string, params any, isRequest bool) (http.Header, json.RawMessage, error) {
	msg := map[string]any{"jsonrpc": "2.0", "method": method}
	var id int64
	if isRequest {
		id = s.id.Add(1)
		msg["id"] = id
	}
	if params != nil {
		msg["params"] = params
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, nil, err
	}
	req, err := s.request(ctx, body)
	if err != nil {
		return nil, nil, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if !isRequest {
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode/100 != 2 {
			return nil, nil, fmt.Errorf("HTTP %s", resp.Status)
		}
		return resp.Header, nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return nil, nil, fmt.Errorf("HTTP %s: %s", resp.Status, b)
	}
	want := fmt.Sprint(id)
	var r rpcResponse
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		found := false
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data:")
			if !ok {
				continue
			}
			var m rpcResponse
			if json.Unmarshal([]byte(strings.TrimSpace(data)), &m) == nil && string(m.ID) == want {
				r, found = m, true
				break
			}
		}
		if !found {
			return nil, nil, errors.New("SSE stream ended without the response")
		}
	} else {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, nil, fmt.Errorf("bad response %q: %w", truncate(string(b), 200), err)
		}
	}
	if r.Error != nil {
		return nil, nil, fmt.Errorf("JSON-RPC error %d: %s", r.Error.Code, r.Error.Message)
	}
	return resp.Header, r.Result, nil
}

// rawEcho calls an echo tool over the raw session and checks the answer.
func (s *rawSession) rawEcho(ctx context.Context, tool, msg string) error {
	res, err := s.call(ctx, "tools/call", map[string]any{"name": tool, "arguments": map[string]any{"msg": msg}})
	if err != nil {
		return err
	}
	var r struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		IsError bool `json:"isError"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if r.IsError || len(r.Content) != 1 || r.Content[0].Text != msg {
		return fmt.Errorf("%s: wrong answer %s, want %q", tool, truncate(string(res), 200), msg)
	}
	return nil
}

// pageRef is one tools/list page: the cursor it was asked with and its
// raw result.
type pageRef struct {
	cursor string
	result json.RawMessage
}

// listPages fetches every tools/list page, decoding each, and returns the
// pages and the tool names.
func (s *rawSession) listPages(ctx context.Context) ([]pageRef, []string, error) {
	var (
		pages []pageRef
		names []string
	)
	cursor := ""
	for i := 0; ; i++ {
		if i > 1000 {
			return nil, nil, errors.New("tools/list: more than 1000 pages")
		}
		var params any
		if cursor != "" {
			params = map[string]any{"cursor": cursor}
		}
		res, err := s.call(ctx, "tools/list", params)
		if err != nil {
			return nil, nil, err
		}
		var page struct {
			Tools []struct {
				Name string `json:"name"`
			} `json:"tools"`
			NextCursor string `json:"nextCursor"`
		}
		if err := json.Unmarshal(res, &page); err != nil {
			return nil, nil, err
		}
		pages = append(pages, pageRef{cursor: cursor, result: res})
		for _, t := range page.Tools {
			names = append(names, t.Name)
		}
		if page.NextCursor == "" {
			return pages, names, nil
		}
		cursor = page.NextCursor
	}
}

// fetchPages fetches the pages of a validated list again, without
// decoding them: each response must contain that page's result byte for
// byte (a cheap check, so the client's JSON decoding is not timed).
func (s *rawSession) fetchPages(ctx context.Context, ref []pageRef) error {
	for i, p := range ref {
		var params any
		if p.cursor != "" {
			params = map[string]any{"cursor": p.cursor}
		}
		body, err := s.postRaw(ctx, "tools/list", params)
		if err != nil {
			return err
		}
		if len(body) > len(p.result)+200 || !bytes.Contains(body, p.result) {
			return fmt.Errorf("tools/list page %d differs from the validated list (%d bytes, want about %d)", i, len(body), len(p.result))
		}
	}
	return nil
}

// postRaw sends one request and returns the response body undecoded
// (JSON responses only).
func (s *rawSession) postRaw(ctx context.Context, method string, params any) ([]byte, error) {
	msg := map[string]any{"jsonrpc": "2.0", "method": method, "id": s.id.Add(1)}
	if params != nil {
		msg["params"] = params
	}
	body, _ := json.Marshal(msg)
	req, err := s.request(ctx, body)
	if err != nil {
		return nil, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return nil, fmt.Errorf("HTTP %s (%s): %s", resp.Status, resp.Header.Get("Content-Type"), truncate(string(b), 200))
	}
	return b, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
