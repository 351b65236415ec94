package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// MCP clients for the tests: a tap keeping raw results, notification
// collectors, and elicitation, sampling and roots handlers.

// era selects the protocol revision a test client speaks.
type era string

const (
	legacy era = mcp.ProtocolVersion20251125 // session-based
	modern era = "2026-07-28"                // stateless, input_required
)

var eras = []era{legacy, modern}

// tap keeps the raw bytes of every result, by method, and forwards the
// optional transport interfaces (server-to-client requests, the protocol
// version header).
type tap struct {
	transport.Interface
	mu      sync.Mutex
	results map[string][]json.RawMessage
}

func (t *tap) SendRequest(ctx context.Context, r transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	resp, err := t.Interface.SendRequest(ctx, r)
	if err == nil && resp != nil && resp.Error == nil {
		t.mu.Lock()
		if t.results == nil {
			t.results = map[string][]json.RawMessage{}
		}
		t.results[r.Method] = append(t.results[r.Method], append(json.RawMessage(nil), resp.Result...))
		t.mu.Unlock()
	}
	return resp, err
}

// raw returns the raw results seen for method, oldest first.
func (t *tap) raw(method string) []json.RawMessage {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]json.RawMessage(nil), t.results[method]...)
}

// last returns the most recent raw result for method.
func (t *tap) last(method string) json.RawMessage {
	r := t.raw(method)
	if len(r) == 0 {
		return nil
	}
	return r[len(r)-1]
}

func (t *tap) SetRequestHandler(h transport.RequestHandler) {
	t.Interface.(transport.BidirectionalInterface).SetRequestHandler(h)
}

// httpTap is a tap over streamable HTTP.
type httpTap struct{ *tap }

func (t httpTap) SetProtocolVersion(v string) {
	t.Interface.(transport.HTTPConnection).SetProtocolVersion(v)
}

// notes collects a client's notifications.
type notes struct {
	mu   sync.Mutex
	list []mcp.JSONRPCNotification
	ping chan struct{}
}

func newNotes() *notes { return &notes{ping: make(chan struct{}, 1)} }

func (n *notes) add(x mcp.JSONRPCNotification) {
	n.mu.Lock()
	n.list = append(n.list, x)
	n.mu.Unlock()
	select {
	case n.ping <- struct{}{}:
	default:
	}
}

// count returns how many notifications match.
func (n *notes) count(match func(mcp.JSONRPCNotification) bool) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, x := range n.list {
		if match(x) {
			c++
		}
	}
	return c
}

// method matches notifications by method.
func method(m string) func(mcp.JSONRPCNotification) bool {
	return func(x mcp.JSONRPCNotification) bool { return x.Method == m }
}

// waitCount waits until at least want notifications match.
func (n *notes) waitCount(match func(mcp.JSONRPCNotification) bool, want int, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if n.count(match) >= want {
			return true
		}
		select {
		case <-n.ping:
		case <-deadline.C:
			return n.count(match) >= want
		}
	}
}

// mcpClient is a connected test client.
type mcpClient struct {
	*client.Client
	tap   *tap
	notes *notes
}

// connect opens an MCP client to url in the given era. listen opens the
// legacy standalone GET stream (needed for list_changed on 2025-11-25).
func connect(t *testing.T, url string, e era, listen bool, opts ...client.ClientOption) *mcpClient {
	t.Helper()
	var topts []transport.StreamableHTTPCOption
	if listen {
		topts = append(topts, transport.WithContinuousListening())
	}
	tr, err := transport.NewStreamableHTTP(url, topts...)
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{Interface: tr}
	if e == legacy {
		opts = append(opts, client.WithProtocolVersion(string(legacy)))
	}
	c := client.NewClient(httpTap{tp}, opts...)
	return start(t, c, tp, e)
}

// connectStdio runs an MCP server command directly (no vmcp), for
// comparisons.
func connectStdio(t *testing.T, argv []string, opts ...client.ClientOption) *mcpClient {
	t.Helper()
	tr := transport.NewStdio(argv[0], nil, argv[1:]...)
	tp := &tap{Interface: tr}
	opts = append(opts, client.WithProtocolVersion(string(legacy)))
	return start(t, client.NewClient(tp, opts...), tp, legacy)
}

func start(t *testing.T, c *client.Client, tp *tap, e era) *mcpClient {
	t.Helper()
	n := newNotes()
	c.OnNotification(n.add)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	res, err := c.Initialize(ctx, mcp.InitializeRequest{Params: mcp.InitializeParams{
		ClientInfo: mcp.Implementation{Name: "vmcp-e2e", Version: "1"}}})
	if err != nil {
		t.Fatalf("initialize: %v", err)
	}
	if e == modern && res.ProtocolVersion != string(modern) {
		t.Fatalf("negotiated %q, want %q", res.ProtocolVersion, modern)
	}
	if e == legacy && res.ProtocolVersion != string(legacy) {
		t.Fatalf("negotiated %q, want %q", res.ProtocolVersion, legacy)
	}
	return &mcpClient{Client: c, tap: tp, notes: n}
}

// ctx returns a bounded context for one request.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// call calls a tool with raw JSON arguments.
func (c *mcpClient) call(t *testing.T, name, args string) (*mcp.CallToolResult, error) {
	t.Helper()
	return c.callMeta(t, name, args, nil)
}

func (c *mcpClient) callMeta(t *testing.T, name, args string, meta *mcp.Meta) (*mcp.CallToolResult, error) {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = json.RawMessage(args)
	req.Params.Meta = meta
	return c.CallTool(ctxFor(t, 30*time.Second), req)
}

// mustCall calls a tool and fails the test on a protocol error or an
// isError result.
func (c *mcpClient) mustCall(t *testing.T, name, args string) *mcp.CallToolResult {
	t.Helper()
	res, err := c.call(t, name, args)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if res.IsError {
		t.Fatalf("%s: isError result: %s", name, text(res))
	}
	return res
}

// toolNames lists the advertised tool names.
func (c *mcpClient) toolNames(t *testing.T) map[string]mcp.Tool {
	t.Helper()
	res, err := c.ListTools(ctxFor(t, 10*time.Second), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	out := map[string]mcp.Tool{}
	for _, tl := range res.Tools {
		out[tl.Name] = tl
	}
	return out
}

func text(res *mcp.CallToolResult) string {
	var sb strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			sb.WriteString(tc.Text)
		}
	}
	return sb.String()
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// rawField returns one top-level field of a raw JSON object ("" if
// absent), re-encoded compactly for comparison.
func rawField(t *testing.T, raw json.RawMessage, field string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not a JSON object: %s", raw)
	}
	v, ok := m[field]
	if !ok {
		return ""
	}
	return canonical(t, v)
}

// canonical re-encodes JSON with sorted keys.
func canonical(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("bad JSON %s: %v", raw, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// ---------------------------------------------------------------------------
// Elicitation and sampling handlers

type elicitor struct {
	mu      sync.Mutex
	calls   int
	last    mcp.ElicitationRequest
	action  mcp.ElicitationResponseAction
	content map[string]any
}

func (e *elicitor) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	e.last = req
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: e.action, Content: e.content}}, nil
}

func (e *elicitor) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls
}

type sampler struct {
	mu    sync.Mutex
	calls int
	last  mcp.CreateMessageRequest
	reply string
}

func (s *sampler) CreateMessage(ctx context.Context, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.last = req
	return &mcp.CreateMessageResult{
		SamplingMessage: mcp.SamplingMessage{Role: mcp.RoleAssistant, Content: mcp.NewTextContent(s.reply)},
		Model:           "e2e-model", StopReason: "endTurn",
	}, nil
}

// rooter answers roots/list.
type rooter struct{}

func (rooter) ListRoots(ctx context.Context, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	return &mcp.ListRootsResult{Roots: []mcp.Root{{URI: "file:///tmp/e2e-root", Name: "e2e"}}}, nil
}

func (s *sampler) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}
