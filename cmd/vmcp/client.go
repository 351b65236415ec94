package main

// The terminal client (SPEC §6): connection flags, the MCP session used by
// `tools` and `call`, the HTTP API client used by `runs`, result printing,
// and the terminal form that answers elicitation questions.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/spf13/cobra"
)

// defaultURL is where `vmcp serve` listens by default.
const defaultURL = "http://127.0.0.1:4483/mcp"

// connFlags are --url and --token, shared by tools, call and runs.
type connFlags struct {
	url   string
	token string
}

func (f *connFlags) register(cmd *cobra.Command) {
	fs := cmd.PersistentFlags()
	fs.StringVar(&f.url, "url", "", "the vmcp MCP endpoint (default $VMCP_URL, else "+defaultURL+")")
	fs.StringVar(&f.token, "token", "", "bearer token sent as Authorization (default $VMCP_TOKEN)")
}

// endpoint is the MCP URL: --url, else $VMCP_URL, else the default.
func (f *connFlags) endpoint() (string, error) {
	u := f.url
	if u == "" {
		u = os.Getenv("VMCP_URL")
	}
	if u == "" {
		u = defaultURL
	}
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return "", usageErrorf("--url %q: want an http(s) URL such as %s", u, defaultURL)
	}
	return u, nil
}

func (f *connFlags) bearer() string {
	if f.token != "" {
		return f.token
	}
	return os.Getenv("VMCP_TOKEN")
}

// urlHint is the --url to repeat in a suggested command line ("" when the
// default or $VMCP_URL applies anyway).
func (f *connFlags) urlHint() string {
	if f.url == "" {
		return ""
	}
	return " --url " + f.url
}

// apiBase derives the HTTP API's base from the MCP endpoint: same scheme
// and host, the path without its trailing /mcp.
func apiBase(mcpURL string) string {
	u, err := url.Parse(mcpURL)
	if err != nil {
		return strings.TrimSuffix(mcpURL, "/mcp")
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/mcp")
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return strings.TrimSuffix(u.String(), "/")
}

// syncWriter serialises writes: progress notifications arrive on the
// transport's goroutines while the form writes on the command's.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// ---------------------------------------------------------------------------
// HTTP API client (/api/v1/runs)

type apiClient struct {
	base  string
	token string
	hc    *http.Client
}

func newAPIClient(cf *connFlags) (*apiClient, error) {
	u, err := cf.endpoint()
	if err != nil {
		return nil, err
	}
	return &apiClient{base: apiBase(u), token: cf.bearer(), hc: &http.Client{}}, nil
}

// apiError is an error reported by the API as {"error": {"code", "message"}}.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

// do sends one API request and returns the body of a 2xx answer.
func (a *apiClient) do(ctx context.Context, method, path string, body any) (json.RawMessage, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the vmcp API at %s: %w", a.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
			return nil, &apiError{status: resp.StatusCode, code: e.Error.Code, message: e.Error.Message}
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, a.base+path, resp.Status, snippet(b))
	}
	return b, nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "(empty body)"
	}
	return truncate(firstLine(s), 200)
}

// ---------------------------------------------------------------------------
// MCP session (2025-11-25, streamable HTTP)

// question is one elicitation/create request from the server.
type question struct {
	id      mcp.RequestId
	message string
	schema  json.RawMessage
}

// mcpConn is a 2025-11-25 session with the gateway. tools/list and
// tools/call go out as raw JSON-RPC so that results are printed exactly as
// the server sent them (mcp-go's typed decoding drops schema keywords and
// unknown fields).
type mcpConn struct {
	url   string
	token string
	hc    *http.Client
	tap   *sseTap
	tr    *cliTransport
	c     *client.Client
	ids   atomic.Int64
}

// cliTransport is the streamable HTTP transport with elicitation/create
// taken out of mcp-go's handler path: mcp-go answers server requests
// within a hard-coded 30 s, too short for a person filling in a form. The
// question goes to a channel instead, and the answer is posted by
// mcpConn.reply whenever it is ready.
type cliTransport struct {
	*transport.StreamableHTTP
	questions chan question // nil: elicitation is not declared
	tap       *sseTap
}

func (t *cliTransport) SetRequestHandler(h transport.RequestHandler) {
	t.StreamableHTTP.SetRequestHandler(func(ctx context.Context, r transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
		if r.Method != string(mcp.MethodElicitationCreate) || t.questions == nil {
			return h(ctx, r)
		}
		q := question{id: r.ID}
		var p struct {
			Message         string          `json:"message"`
			RequestedSchema json.RawMessage `json:"requestedSchema"`
		}
		if b, err := json.Marshal(r.Params); err == nil {
			_ = json.Unmarshal(b, &p)
		}
		q.message, q.schema = p.Message, p.RequestedSchema
		// The decoded params lost the schema's property order; the tap kept
		// the bytes as sent.
		if raw := t.tap.schema(r.ID); raw != nil {
			q.schema = raw
		}
		t.questions <- q
		return nil, nil // answered later by mcpConn.reply
	})
}

// sseTap records the requestedSchema of every elicitation/create the
// server streams, byte for byte, keyed by request id.
type sseTap struct {
	rt      http.RoundTripper
	mu      sync.Mutex
	schemas map[string]json.RawMessage
}

func (t *sseTap) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err == nil && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body = &tapBody{ReadCloser: resp.Body, tap: t}
	}
	return resp, err
}

func (t *sseTap) schema(id mcp.RequestId) json.RawMessage {
	k, _ := json.Marshal(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.schemas[string(k)]
	delete(t.schemas, string(k))
	return s
}

func (t *sseTap) line(l []byte) {
	data, ok := bytes.CutPrefix(l, []byte("data:"))
	if !ok || !bytes.Contains(data, []byte(mcp.MethodElicitationCreate)) {
		return
	}
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			RequestedSchema json.RawMessage `json:"requestedSchema"`
		} `json:"params"`
	}
	if json.Unmarshal(bytes.TrimSpace(data), &m) != nil || m.Method != string(mcp.MethodElicitationCreate) || len(m.ID) == 0 {
		return
	}
	var id mcp.RequestId
	if json.Unmarshal(m.ID, &id) != nil {
		return
	}
	k, _ := json.Marshal(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.schemas == nil {
		t.schemas = map[string]json.RawMessage{}
	}
	t.schemas[string(k)] = m.Params.RequestedSchema
}

// tapBody passes an SSE body through and shows each line to the tap.
type tapBody struct {
	io.ReadCloser
	tap  *sseTap
	line []byte
	skip bool // the current line is too long to be worth keeping
}

func (b *tapBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	rest := p[:n]
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			b.add(rest)
			break
		}
		b.add(rest[:i])
		if !b.skip {
			b.tap.line(bytes.TrimSuffix(b.line, []byte("\r")))
		}
		b.line, b.skip = b.line[:0], false
		rest = rest[i+1:]
	}
	return n, err
}

func (b *tapBody) add(p []byte) {
	if b.skip {
		return
	}
	if len(b.line)+len(p) > 8<<20 {
		b.line, b.skip = b.line[:0], true
		return
	}
	b.line = append(b.line, p...)
}

// dialMCP opens a 2025-11-25 session. With elicit, the client declares
// the elicitation capability and questions arrive on conn.questions().
// onProgress (may be nil) receives notifications/progress.
func dialMCP(ctx context.Context, cf *connFlags, elicit bool, onProgress func(token string, params map[string]any)) (*mcpConn, error) {
	u, err := cf.endpoint()
	if err != nil {
		return nil, err
	}
	conn := &mcpConn{url: u, token: cf.bearer(), tap: &sseTap{rt: http.DefaultTransport}}
	conn.hc = &http.Client{Transport: conn.tap}
	opts := []transport.StreamableHTTPCOption{
		transport.WithHTTPBasicClient(conn.hc),
		transport.WithHTTPLogger(slog.New(slog.DiscardHandler)),
	}
	if conn.token != "" {
		opts = append(opts, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + conn.token}))
	}
	tr, err := transport.NewStreamableHTTP(u, opts...)
	if err != nil {
		return nil, err
	}
	conn.tr = &cliTransport{StreamableHTTP: tr, tap: conn.tap}
	copts := []client.ClientOption{client.WithProtocolVersion(mcp.ProtocolVersion20251125)}
	if elicit {
		conn.tr.questions = make(chan question, 8)
		copts = append(copts, client.WithClientCapabilities(mcp.ClientCapabilities{
			Elicitation: &mcp.ElicitationCapability{Form: &struct{}{}},
		}))
	}
	conn.c = client.NewClient(conn.tr, copts...)
	if err := conn.c.Start(ctx); err != nil {
		return nil, fmt.Errorf("cannot connect to %s: %w", u, err)
	}
	if onProgress != nil {
		conn.c.OnNotification(func(n mcp.JSONRPCNotification) {
			if n.Method == string(mcp.MethodNotificationProgress) {
				tok, _ := n.Params.AdditionalFields["progressToken"].(string)
				onProgress(tok, n.Params.AdditionalFields)
			}
		})
	}
	_, err = conn.c.Initialize(ctx, mcp.InitializeRequest{Params: mcp.InitializeParams{
		ProtocolVersion: mcp.ProtocolVersion20251125,
		ClientInfo:      mcp.Implementation{Name: "vmcp-cli", Version: version},
	}})
	if err != nil {
		_ = conn.c.Close()
		return nil, fmt.Errorf("cannot connect to %s: %w", u, err)
	}
	return conn, nil
}

func (c *mcpConn) close() { _ = c.c.Close() }

func (c *mcpConn) questions() <-chan question { return c.tr.questions }

// request sends one raw JSON-RPC request and returns its result.
func (c *mcpConn) request(ctx context.Context, method string, params any) (json.RawMessage, error) {
	id := mcp.NewRequestId(fmt.Sprintf("vmcp-cli-%d", c.ids.Add(1)))
	resp, err := c.tr.SendRequest(ctx, transport.JSONRPCRequest{JSONRPC: "2.0", ID: id, Method: method, Params: params})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("%s: %s (JSON-RPC error %d)", method, resp.Error.Message, resp.Error.Code)
	}
	return resp.Result, nil
}

// listTools returns every tool as sent, following nextCursor.
func (c *mcpConn) listTools(ctx context.Context) ([]json.RawMessage, error) {
	var all []json.RawMessage
	seen := map[string]bool{}
	cursor := ""
	for {
		params := map[string]any{}
		if cursor != "" {
			params["cursor"] = cursor
		}
		raw, err := c.request(ctx, string(mcp.MethodToolsList), params)
		if err != nil {
			return nil, err
		}
		var page struct {
			Tools      []json.RawMessage `json:"tools"`
			NextCursor string            `json:"nextCursor"`
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			return nil, fmt.Errorf("tools/list: %w", err)
		}
		all = append(all, page.Tools...)
		if page.NextCursor == "" || len(page.Tools) == 0 {
			return all, nil
		}
		if seen[page.NextCursor] {
			return nil, fmt.Errorf("tools/list: the server repeated cursor %q", page.NextCursor)
		}
		seen[page.NextCursor] = true
		cursor = page.NextCursor
	}
}

// callTool calls a tool with raw arguments and a progress token.
func (c *mcpConn) callTool(ctx context.Context, name string, args json.RawMessage, progressToken string) (json.RawMessage, error) {
	params := map[string]any{"name": name, "arguments": args}
	if progressToken != "" {
		params["_meta"] = map[string]any{"progressToken": progressToken}
	}
	return c.request(ctx, string(mcp.MethodToolsCall), params)
}

// errNotWaiting: the server no longer waits for the answer to a question
// (its live wait ended); the run is paused and takes the answer through
// the API instead.
var errNotWaiting = errors.New("the server no longer waits for this answer")

// reply answers an elicitation/create request. With a nil answer it
// reports that there is none (the server then pauses the run).
func (c *mcpConn) reply(ctx context.Context, q question, ans *formAnswer, noAnswer error) error {
	msg := map[string]any{"jsonrpc": "2.0", "id": q.id}
	if ans != nil {
		res := map[string]any{"action": ans.Action}
		if ans.Action == "accept" {
			res["content"] = ans.Content
		}
		msg["result"] = res
	} else {
		msg["error"] = map[string]any{"code": mcp.REQUEST_INTERRUPTED, "message": noAnswer.Error()}
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", c.tr.GetSessionId())
	req.Header.Set("Mcp-Protocol-Version", c.c.ProtocolVersion())
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("sending the answer: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted:
		return nil
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusNotFound:
		return errNotWaiting
	default:
		return fmt.Errorf("sending the answer: %s: %s", resp.Status, snippet(body))
	}
}

// ---------------------------------------------------------------------------
// Tool results

type toolResult struct {
	Content           []contentItem              `json:"content"`
	StructuredContent json.RawMessage            `json:"structuredContent"`
	IsError           bool                       `json:"isError"`
	Meta              map[string]json.RawMessage `json:"_meta"`
}

type contentItem struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	MimeType string `json:"mimeType"`
	Data     string `json:"data"`
	URI      string `json:"uri"`
	Name     string `json:"name"`
	Resource *struct {
		URI      string `json:"uri"`
		MimeType string `json:"mimeType"`
		Text     string `json:"text"`
		Blob     string `json:"blob"`
	} `json:"resource"`
}

// pausedRun is _meta "vmcp/run" of a result.
type pausedRun struct {
	ID       string          `json:"id"`
	Status   string          `json:"status"`
	Workflow string          `json:"workflow"`
	Step     string          `json:"step"`
	Message  string          `json:"message"`
	Schema   json.RawMessage `json:"schema"`
	Deadline string          `json:"deadline"`
}

func parseResult(raw json.RawMessage) (*toolResult, error) {
	var r toolResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("the server sent a result that is not a tool result: %w", err)
	}
	return &r, nil
}

// paused returns the run a paused result names, or nil.
func (r *toolResult) paused() *pausedRun {
	raw, ok := r.Meta["vmcp/run"]
	if !ok {
		return nil
	}
	var p pausedRun
	if json.Unmarshal(raw, &p) != nil || p.Status != "waiting" || p.ID == "" {
		return nil
	}
	return &p
}

// printContent writes a result's content for a person: text as is (JSON
// text indented), other items as one-line descriptions.
func printContent(w io.Writer, r *toolResult) {
	for _, c := range r.Content {
		switch c.Type {
		case "text":
			fmt.Fprintln(w, prettyJSONText(c.Text))
		case "image", "audio":
			fmt.Fprintf(w, "[%s %s, %d bytes]\n", c.Type, c.MimeType, base64Len(c.Data))
		case "resource_link":
			fmt.Fprintf(w, "[link %s] %s\n", c.URI, c.Name)
		case "resource":
			switch {
			case c.Resource == nil:
				fmt.Fprintln(w, "[resource]")
			case c.Resource.Text != "":
				fmt.Fprintf(w, "[resource %s]\n%s\n", c.Resource.URI, prettyJSONText(c.Resource.Text))
			default:
				fmt.Fprintf(w, "[resource %s %s, %d bytes]\n", c.Resource.URI, c.Resource.MimeType, base64Len(c.Resource.Blob))
			}
		default:
			fmt.Fprintf(w, "[%s content]\n", c.Type)
		}
	}
	if len(r.Content) == 0 && len(r.StructuredContent) > 0 && string(r.StructuredContent) != "null" {
		fmt.Fprintln(w, prettyJSONText(string(r.StructuredContent)))
	}
}

func base64Len(s string) int { return len(s) * 3 / 4 }

// prettyJSONText indents text that is a JSON object or array.
func prettyJSONText(s string) string {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "{") && !strings.HasPrefix(t, "[") {
		return s
	}
	var buf bytes.Buffer
	if json.Indent(&buf, []byte(t), "", "  ") != nil {
		return s
	}
	return buf.String()
}

func indentJSON(raw []byte) []byte {
	var buf bytes.Buffer
	if json.Indent(&buf, bytes.TrimSpace(raw), "", "  ") != nil {
		return raw
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

// printPaused tells how to answer a paused run.
func printPaused(w io.Writer, p *pausedRun, urlHint string) {
	wf := ""
	if p.Workflow != "" {
		wf = " of " + p.Workflow
	}
	fmt.Fprintf(w, "Run %s%s is waiting for an answer to step %q:\n\n", p.ID, wf, p.Step)
	fmt.Fprintf(w, "%s\n\n", indentText(p.Message, "  "))
	if p.Deadline != "" {
		fmt.Fprintf(w, "Deadline: %s\n", p.Deadline)
	}
	fmt.Fprintf(w, "Answer it with:  vmcp runs resume %s%s\n", p.ID, urlHint)
	fmt.Fprintf(w, "(or --action decline, --action cancel, or --content JSON to answer without the form)\n")
}

// outcome prints a tool result and returns the command's error: exit 1
// for isError, exit 0 (with instructions) for a paused run.
func outcome(stdout, stderr io.Writer, raw json.RawMessage, asJSON bool, urlHint string) (*toolResult, error) {
	r, err := parseResult(raw)
	if err != nil {
		return nil, err
	}
	p := r.paused()
	switch {
	case asJSON:
		_, _ = stdout.Write(indentJSON(raw))
		if p != nil {
			fmt.Fprintf(stderr, "run %s is waiting; answer it with: vmcp runs resume %s%s\n", p.ID, p.ID, urlHint)
		}
	case p != nil:
		printPaused(stdout, p, urlHint)
	case r.IsError:
		printContent(stderr, r)
	default:
		printContent(stdout, r)
	}
	if r.IsError {
		return r, errReported
	}
	return r, nil
}

// ---------------------------------------------------------------------------
// Input helpers

// readJSONArg reads --args / --content: inline JSON, @file, or - (stdin,
// one JSON value; what follows stays readable for the form). It returns
// the value and the input to go on reading from.
func readJSONArg(flag, val string, in *bufio.Reader) (json.RawMessage, *bufio.Reader, error) {
	var raw []byte
	switch {
	case val == "-":
		dec := json.NewDecoder(in)
		var m json.RawMessage
		if err := dec.Decode(&m); err != nil {
			return nil, in, usageErrorf("%s -: reading JSON from stdin: %v", flag, err)
		}
		raw = m
		in = bufio.NewReader(io.MultiReader(dec.Buffered(), in))
		skipLineEnd(in)
	case strings.HasPrefix(val, "@"):
		b, err := os.ReadFile(val[1:])
		if err != nil {
			return nil, in, usageErrorf("%s: %v", flag, err)
		}
		raw = b
	default:
		raw = []byte(val)
	}
	raw = bytes.TrimSpace(raw)
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, in, usageErrorf("%s is not valid JSON: %v", flag, err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, in, usageErrorf("%s must be a JSON object, not %s", flag, jsonKind(v))
	}
	return raw, in, nil
}

// skipLineEnd consumes the blanks and the newline that end the line of
// a JSON value read from stdin, so that the form starts on the next line.
func skipLineEnd(in *bufio.Reader) {
	for {
		b, err := in.Peek(1)
		if err != nil {
			return
		}
		switch b[0] {
		case ' ', '\t', '\r':
			_, _ = in.ReadByte()
		case '\n':
			_, _ = in.ReadByte()
			return
		default:
			return
		}
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	}
	return "an object"
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	return s
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimSpace(string(r[:n-1])) + "…"
}

func indentText(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------------------
// The terminal form

// form asks an elicitation question in the terminal: the message, then
// one prompt per property of the (flat) requested schema, in schema
// order (required fields first). Answers are read a line at a time, so
// the input need not be a terminal; when it is not, each answer is echoed
// after its prompt. At any prompt, !decline or !cancel refuses the
// question.
type form struct {
	in   *bufio.Reader
	out  io.Writer
	echo bool
}

func newForm(in io.Reader, out io.Writer) *form {
	br, ok := in.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(in)
	}
	return &form{in: br, out: out, echo: !isTerminal(in)}
}

// isTerminal reports whether r is a character device (a terminal, whose
// line discipline echoes what is typed).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// formAnswer is the answer to one question.
type formAnswer struct {
	Action  string         `json:"action"` // accept, decline or cancel
	Content map[string]any `json:"content,omitempty"`
}

// errNoInput: the input ended before the question was answered.
var errNoInput = errors.New("no answer: the input ended")

// field is one property of the requested schema.
type field struct {
	name     string
	required bool
	s        propSchema
	hasDef   bool
	def      any
}

type propSchema struct {
	Type             json.RawMessage `json:"type"`
	Title            string          `json:"title"`
	Description      string          `json:"description"`
	Format           string          `json:"format"`
	Pattern          string          `json:"pattern"`
	Enum             []any           `json:"enum"`
	EnumNames        []string        `json:"enumNames"`
	OneOf            []choiceSchema  `json:"oneOf"`
	AnyOf            []choiceSchema  `json:"anyOf"`
	Default          json.RawMessage `json:"default"`
	Minimum          *float64        `json:"minimum"`
	Maximum          *float64        `json:"maximum"`
	ExclusiveMinimum *float64        `json:"exclusiveMinimum"`
	ExclusiveMaximum *float64        `json:"exclusiveMaximum"`
	MinLength        *int            `json:"minLength"`
	MaxLength        *int            `json:"maxLength"`
	Items            *propSchema     `json:"items"`
	MinItems         *int            `json:"minItems"`
	MaxItems         *int            `json:"maxItems"`
}

type choiceSchema struct {
	Const any    `json:"const"`
	Title string `json:"title"`
}

type choice struct {
	value any
	label string
}

// typeName is the schema's type, ignoring "null" in a type list.
func (p *propSchema) typeName() string {
	var s string
	if json.Unmarshal(p.Type, &s) == nil {
		return s
	}
	var list []string
	if json.Unmarshal(p.Type, &list) == nil {
		for _, t := range list {
			if t != "null" {
				return t
			}
		}
	}
	return ""
}

// choices lists an enum's values (enum, enum + enumNames, or titled
// oneOf/anyOf consts).
func (p *propSchema) choices() []choice {
	var cs []choice
	switch {
	case len(p.Enum) > 0:
		for i, v := range p.Enum {
			c := choice{value: v}
			if i < len(p.EnumNames) {
				c.label = p.EnumNames[i]
			}
			cs = append(cs, c)
		}
	case len(p.OneOf) > 0 || len(p.AnyOf) > 0:
		for _, o := range append(append([]choiceSchema{}, p.OneOf...), p.AnyOf...) {
			if o.Const == nil {
				return nil
			}
			cs = append(cs, choice{value: o.Const, label: o.Title})
		}
	}
	return cs
}

// kind is how the field is asked: boolean, integer, number, string,
// enum, multi (array of enum) or json (anything else).
func (f *field) kind() string {
	t := f.s.typeName()
	switch {
	case t == "array" && f.s.Items != nil && len(f.s.Items.choices()) > 0:
		return "multi"
	case len(f.s.choices()) > 0:
		return "enum"
	case t == "boolean", t == "integer", t == "number", t == "string":
		return t
	case t == "":
		return "string"
	}
	return "json"
}

// parseSchema returns the fields of an object schema: the required ones,
// then the others, each in the order the schema lists them.
func parseSchema(schema json.RawMessage) ([]*field, error) {
	if len(bytes.TrimSpace(schema)) == 0 || string(bytes.TrimSpace(schema)) == "null" {
		return nil, nil
	}
	var top struct {
		Properties json.RawMessage `json:"properties"`
		Required   []string        `json:"required"`
	}
	if err := json.Unmarshal(schema, &top); err != nil {
		return nil, fmt.Errorf("the question's schema is not a JSON object: %w", err)
	}
	names, props, err := orderedObject(top.Properties)
	if err != nil {
		return nil, fmt.Errorf("the question's schema has bad properties: %w", err)
	}
	req := map[string]bool{}
	for _, r := range top.Required {
		req[r] = true
	}
	fields := make([]*field, 0, len(names))
	for _, n := range names {
		f := &field{name: n, required: req[n]}
		if err := json.Unmarshal(props[n], &f.s); err != nil {
			return nil, fmt.Errorf("property %q of the question's schema: %w", n, err)
		}
		if len(f.s.Default) > 0 {
			if json.Unmarshal(f.s.Default, &f.def) == nil {
				f.hasDef = true
			}
		}
		fields = append(fields, f)
	}
	// Required fields first: vmcp's engine hands schemas over with their
	// keys sorted, so the author's order is usually lost by now anyway.
	slices.SortStableFunc(fields, func(a, b *field) int {
		switch {
		case a.required == b.required:
			return 0
		case a.required:
			return -1
		}
		return 1
	})
	return fields, nil
}

// orderedObject decodes a JSON object keeping its key order.
func orderedObject(raw json.RawMessage) ([]string, map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, errors.New("not an object")
	}
	var names []string
	vals := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		if _, dup := vals[k]; !dup {
			names = append(names, k)
		}
		vals[k] = v
	}
	return names, vals, nil
}

// ask shows the message and the fields, and reads the answers. It returns
// errNoInput when the input ends first.
func (f *form) ask(message string, schema json.RawMessage) (*formAnswer, error) {
	fields, err := parseSchema(schema)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f.out, "\n? %s\n", strings.TrimSpace(indentText(message, "  ")))
	if len(fields) == 0 {
		fmt.Fprintf(f.out, "  (press Enter to accept, or type !decline or !cancel)\n")
		line, cmd, err := f.readLine("> ")
		if err != nil {
			return nil, err
		}
		if cmd != "" {
			return &formAnswer{Action: cmd}, nil
		}
		if line != "" {
			fmt.Fprintf(f.out, "  (this question takes no values; the answer is accepted)\n")
		}
		return &formAnswer{Action: "accept", Content: map[string]any{}}, nil
	}
	fmt.Fprintf(f.out, "  (Enter keeps the [default]; type !decline or !cancel to refuse)\n")
	content := map[string]any{}
	for i, fd := range fields {
		f.describe(fd)
		for {
			line, cmd, err := f.readLine("  " + fd.prompt() + ": ")
			if errors.Is(err, errNoInput) && i > 0 && fillRest(fields[i:], content) {
				// Input that ends after some answers (a script answering
				// only what it cares about) leaves the rest to their
				// defaults, when none of them is required.
				fmt.Fprintf(f.out, "  (input ended: the remaining fields keep their defaults)\n")
				return &formAnswer{Action: "accept", Content: content}, nil
			}
			if err != nil {
				return nil, err
			}
			if cmd != "" {
				return &formAnswer{Action: cmd}, nil
			}
			v, set, err := fd.coerce(line)
			if err != nil {
				fmt.Fprintf(f.out, "  ! %v\n", err)
				continue
			}
			if set {
				content[fd.name] = v
			}
			break
		}
	}
	return &formAnswer{Action: "accept", Content: content}, nil
}

// fillRest sets fields to what an empty answer gives them, if every one
// of them accepts an empty answer.
func fillRest(fields []*field, content map[string]any) bool {
	vals := map[string]any{}
	for _, fd := range fields {
		v, set, err := fd.coerce("")
		if err != nil {
			return false
		}
		if set {
			vals[fd.name] = v
		}
	}
	maps.Copy(content, vals)
	return true
}

// readLine prompts and reads one line. cmd is "decline" or "cancel" when
// the user typed that command.
func (f *form) readLine(prompt string) (line, cmd string, err error) {
	for {
		fmt.Fprint(f.out, prompt)
		s, rerr := f.in.ReadString('\n')
		if rerr != nil && (rerr != io.EOF || s == "") {
			fmt.Fprintln(f.out)
			if rerr == io.EOF {
				return "", "", errNoInput
			}
			return "", "", rerr
		}
		s = strings.TrimSpace(s)
		if f.echo {
			fmt.Fprintln(f.out, s)
		}
		switch low := strings.ToLower(s); {
		case low == "!decline" || low == "!cancel":
			return "", low[1:], nil
		case strings.HasPrefix(s, "!!"):
			return s[1:], "", nil
		case strings.HasPrefix(s, "!"):
			fmt.Fprintf(f.out, "  ! unknown command %s: type !decline or !cancel (start with !! for a literal !)\n", s)
			continue
		}
		return s, "", nil
	}
}

// describe writes a field's heading, description and choices.
func (f *form) describe(fd *field) {
	head := fd.name
	if fd.s.Title != "" && fd.s.Title != fd.name {
		head = fmt.Sprintf("%s (%s)", fd.s.Title, fd.name)
	}
	if fd.required {
		head += ", required"
	}
	fmt.Fprintf(f.out, "\n%s\n", head)
	if d := strings.TrimSpace(fd.s.Description); d != "" {
		fmt.Fprintf(f.out, "%s\n", indentText(d, "  "))
	}
	var cs []choice
	switch fd.kind() {
	case "enum":
		cs = fd.s.choices()
	case "multi":
		cs = fd.s.Items.choices()
	}
	for i, c := range cs {
		v := showValue(c.value)
		if c.label != "" && c.label != v {
			fmt.Fprintf(f.out, "  %d) %s  [%s]\n", i+1, c.label, v)
		} else {
			fmt.Fprintf(f.out, "  %d) %s\n", i+1, v)
		}
	}
}

// prompt is the line the answer is typed on: the expected kind and the
// default in brackets.
func (fd *field) prompt() string {
	var p string
	switch fd.kind() {
	case "boolean":
		p = "yes/no"
	case "integer", "number":
		p = fd.kind()
		if r := fd.rangeText(); r != "" {
			p += " " + r
		}
	case "string":
		p = "text"
		if fd.s.Format != "" {
			p += " (" + fd.s.Format + ")"
		}
	case "enum":
		p = fmt.Sprintf("choose 1-%d", len(fd.s.choices()))
	case "multi":
		p = fmt.Sprintf("choose any of 1-%d, comma-separated", len(fd.s.Items.choices()))
	default:
		p = "JSON"
	}
	if !fd.required && !fd.hasDef {
		p += ", optional"
	}
	if fd.hasDef {
		p += " [" + showValue(fd.def) + "]"
	}
	return p
}

func (fd *field) rangeText() string {
	var parts []string
	if fd.s.Minimum != nil {
		parts = append(parts, "≥ "+fmtNum(*fd.s.Minimum))
	}
	if fd.s.ExclusiveMinimum != nil {
		parts = append(parts, "> "+fmtNum(*fd.s.ExclusiveMinimum))
	}
	if fd.s.Maximum != nil {
		parts = append(parts, "≤ "+fmtNum(*fd.s.Maximum))
	}
	if fd.s.ExclusiveMaximum != nil {
		parts = append(parts, "< "+fmtNum(*fd.s.ExclusiveMaximum))
	}
	return strings.Join(parts, " ")
}

func fmtNum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func showValue(v any) string {
	switch v := v.(type) {
	case bool:
		if v {
			return "yes"
		}
		return "no"
	case string:
		return v
	case float64:
		return fmtNum(v)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// coerce turns a typed line into the field's value. set is false when the
// field is left out (empty, optional, no default).
func (fd *field) coerce(line string) (v any, set bool, err error) {
	if line == "" {
		switch {
		case fd.hasDef:
			return fd.def, true, nil
		case fd.required:
			return nil, false, errors.New("a value is required")
		default:
			return nil, false, nil
		}
	}
	switch fd.kind() {
	case "boolean":
		switch strings.ToLower(line) {
		case "y", "yes", "true":
			return true, true, nil
		case "n", "no", "false":
			return false, true, nil
		}
		return nil, false, fmt.Errorf("%q is not yes or no (y, n, yes, no, true, false)", line)
	case "integer":
		n, err := strconv.ParseInt(line, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("%q is not an integer", line)
		}
		if err := fd.checkRange(float64(n)); err != nil {
			return nil, false, err
		}
		return n, true, nil
	case "number":
		x, err := strconv.ParseFloat(line, 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, false, fmt.Errorf("%q is not a number", line)
		}
		if err := fd.checkRange(x); err != nil {
			return nil, false, err
		}
		return x, true, nil
	case "string":
		if err := fd.checkString(line); err != nil {
			return nil, false, err
		}
		return line, true, nil
	case "enum":
		c, err := pick(fd.s.choices(), line)
		if err != nil {
			return nil, false, err
		}
		return c, true, nil
	case "multi":
		cs := fd.s.Items.choices()
		var vals []any
		seen := map[string]bool{}
		for _, part := range strings.Split(line, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			c, err := pick(cs, part)
			if err != nil {
				return nil, false, err
			}
			if k := showValue(c); !seen[k] {
				seen[k] = true
				vals = append(vals, c)
			}
		}
		if fd.s.MinItems != nil && len(vals) < *fd.s.MinItems {
			return nil, false, fmt.Errorf("choose at least %d", *fd.s.MinItems)
		}
		if fd.s.MaxItems != nil && len(vals) > *fd.s.MaxItems {
			return nil, false, fmt.Errorf("choose at most %d", *fd.s.MaxItems)
		}
		return vals, true, nil
	default:
		var x any
		if err := json.Unmarshal([]byte(line), &x); err != nil {
			return nil, false, fmt.Errorf("not valid JSON: %v", err)
		}
		return x, true, nil
	}
}

func (fd *field) checkRange(x float64) error {
	s := fd.s
	switch {
	case s.Minimum != nil && x < *s.Minimum:
		return fmt.Errorf("must be at least %s", fmtNum(*s.Minimum))
	case s.Maximum != nil && x > *s.Maximum:
		return fmt.Errorf("must be at most %s", fmtNum(*s.Maximum))
	case s.ExclusiveMinimum != nil && x <= *s.ExclusiveMinimum:
		return fmt.Errorf("must be more than %s", fmtNum(*s.ExclusiveMinimum))
	case s.ExclusiveMaximum != nil && x >= *s.ExclusiveMaximum:
		return fmt.Errorf("must be less than %s", fmtNum(*s.ExclusiveMaximum))
	}
	return nil
}

func (fd *field) checkString(s string) error {
	n := utf8.RuneCountInString(s)
	if fd.s.MinLength != nil && n < *fd.s.MinLength {
		return fmt.Errorf("must be at least %d characters", *fd.s.MinLength)
	}
	if fd.s.MaxLength != nil && n > *fd.s.MaxLength {
		return fmt.Errorf("must be at most %d characters", *fd.s.MaxLength)
	}
	switch fd.s.Format {
	case "email":
		at := strings.LastIndexByte(s, '@')
		if at <= 0 || at == len(s)-1 || strings.ContainsAny(s, " \t") {
			return fmt.Errorf("%q is not an email address", s)
		}
	case "uri":
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "") {
			return fmt.Errorf("%q is not an absolute URI (e.g. https://example.com)", s)
		}
	case "date":
		if _, err := time.Parse(time.DateOnly, s); err != nil {
			return fmt.Errorf("%q is not a date (YYYY-MM-DD)", s)
		}
	case "date-time":
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			return fmt.Errorf("%q is not a date-time (e.g. 2026-01-02T15:04:05Z)", s)
		}
	}
	if fd.s.Pattern != "" {
		if re, err := regexp.Compile(fd.s.Pattern); err == nil && !re.MatchString(s) {
			return fmt.Errorf("%q does not match the pattern %s", s, fd.s.Pattern)
		}
	}
	return nil
}

// pick resolves an enum answer: the value itself, its number in the list,
// or (ignoring case) a value or a label.
func pick(cs []choice, in string) (any, error) {
	for _, c := range cs {
		if showValue(c.value) == in || jsonText(c.value) == in {
			return c.value, nil
		}
	}
	if n, err := strconv.Atoi(in); err == nil && n >= 1 && n <= len(cs) {
		return cs[n-1].value, nil
	}
	var found []any
	for _, c := range cs {
		if strings.EqualFold(showValue(c.value), in) || (c.label != "" && strings.EqualFold(c.label, in)) {
			found = append(found, c.value)
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = showValue(c.value)
	}
	return nil, fmt.Errorf("%q is not one of the choices: type 1-%d or one of %s", in, len(cs), strings.Join(names, ", "))
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
