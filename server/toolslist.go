package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// A pre-serialised tools/list for streamable HTTP.
//
// mcp-go builds tools/list per request: it copies its tool map, sorts it and
// re-marshals every mcp.Tool (~15 µs a tool, so 5,000 tools cost ~75 ms a
// list). The catalogue only changes when a backend does, so installTools
// also renders the list here, once per change: the same mcp.Tool values,
// sorted and paged exactly as mcp-go does it (WithPaginationLimit, cursor =
// base64 of the page's last name, a full page always carries nextCursor),
// each page marshalled once with mcp-go's own response types. The
// middleware answers a tools/list from those bytes when mcp-go would have
// answered it with the same bytes, and otherwise hands the request to
// mcp-go untouched:
//
//   - POST, Content-Type application/json, one JSON-RPC request (not a
//     batch, not a notification or response) with method tools/list and a
//     string or number id;
//   - a legacy (≤ 2025-11-25) request: neither the Mcp-Protocol-Version
//     header nor params._meta names 2026-07-28 or later, and the header, if
//     present, is a version mcp-go implements. Modern requests are
//     stateless and decorated per request (resultType, serverInfo, cache
//     hints), so they always go to mcp-go;
//   - on a live stateful session that mcp-go registered through this
//     handler (OnRegisterSession / OnUnregisterSession); unknown,
//     terminated and swept sessions fall through (404 from mcp-go);
//   - the cursor is empty or one the current rendering issued;
//   - nothing is queued on the session's notification channel (mcp-go
//     drains it into the next POST's response, as SSE), and mcp-go saw a
//     request of the session within sessionRefresh (its idle sweeper only
//     counts requests it handles);
//   - the request passes mcp-go's DNS-rebinding rule.
//
// The answer is what mcp-go writes for a JSON response: 200,
// Content-Type: application/json, no Mcp-Session-Id (mcp-go only sends it
// on initialize), the body `{"jsonrpc":"2.0","id":<id>,"result":{…}}` and a
// newline. The id is the request's own bytes (mcp-go decodes it into an
// `any` and re-encodes it, which turns 1.0 into 1 and rounds integers
// beyond 2^53; JSON-RPC asks for the same id back).
//
// One deliberate difference: once a session has received any notification
// (a list_changed broadcast, progress, a log message), mcp-go answers every
// later POST of that session as an SSE stream (a sticky flag on its
// session). The fast path still answers JSON, which the streamable HTTP
// transport allows for any request (clients must accept both).
//
// Not covered, by design: stdio (ServeStdio talks to mcp-go directly),
// per-session tools and tool filters (vmcp uses neither; adding one means
// disabling this), and hooks that observe tools/list (if any is installed
// the middleware steps aside entirely, see observesToolsList) — except
// vmcp's own authorization hook, whose filtering the fast path does itself
// (filter: one rendering per distinct principal, server/authz.go).

// defaultToolsPageSize is mcp-go's page size: newMCPServer sets
// WithPaginationLimit(500). The two must agree (TestToolsListDefaultPageSize
// checks it).
const defaultToolsPageSize = 500

// sessionRefresh is how long the fast path may answer a session's
// tools/list without mcp-go seeing a request of that session: one request
// per interval is let through so mcp-go's idle sweeper
// (WithSessionIdleTTL, 30 minutes) does not close an active session.
const sessionRefresh = time.Minute

// toolsList holds the rendered tools/list and the live HTTP sessions. The
// zero value is ready (page size 500, fast path on, nothing rendered yet:
// every request falls through until the first render).
type toolsList struct {
	// pageSize is the number of tools per page; 0 means
	// defaultToolsPageSize. It must equal mcp-go's pagination limit (tests
	// change both with setPageSize).
	pageSize int
	// off turns the fast path off: every request goes to mcp-go (tests
	// compare the two answers; benchmarks measure both).
	off atomic.Bool
	// served counts requests answered by the fast path.
	served atomic.Int64
	// observe records a fast-path answer (telemetry; nil when off); body
	// is the request's.
	observe func(r *http.Request, body []byte, start time.Time)

	mu  sync.Mutex // serialises renders
	cur atomic.Pointer[toolPages]

	sessions sync.Map // session id → *liveSession

	// filter, when set (authorization policies), turns the rendered pages
	// into those the request's principal may see; nil lets mcp-go answer.
	filter func(r *http.Request, p *toolPages) *toolPages
	// ownHooks is the number of vmcp's own tools/list hooks, whose work
	// filter does (they do not switch the fast path off).
	ownHooks int

	// call serves a tools/call without mcp-go when it qualifies
	// (toolscall.go); nil: never. callOff turns it off (tests, benchmarks);
	// callsServed counts the calls it served.
	call        func(w http.ResponseWriter, r *http.Request, ls *liveSession, body []byte) bool
	callOff     atomic.Bool
	callsServed atomic.Int64
	// cancelled sees the bodies mcp-go is handed (notifications/cancelled
	// for a call served by call).
	cancelled func(ls *liveSession, body []byte)
}

// toolPages is one rendering of the tool list.
type toolPages struct {
	tools []mcp.Tool // sorted by name, one per name: what mcp-go lists
	// pages[i] is everything after the id of page i's response:
	// `,"result":{"nextCursor":"…","tools":[…]}}` and a newline.
	pages [][]byte
	// cursors maps the cursor that leads to a page to its index ("" → 0).
	cursors map[string]int
}

// liveSession is a session mcp-go registered through one mounted handler.
type liveSession struct {
	mount   *toolsListMount
	notify  chan<- mcp.JSONRPCNotification
	seen    atomic.Int64 // unix nanos of the last request mcp-go handled
	session mcpserver.ClientSession
}

// render pre-serialises the list mcp-go will serve once it is handed
// tools (called by installTools right before SetTools). On an error (a tool
// mcp-go cannot marshal either) the fast path is switched off until the
// next render, so mcp-go's own behaviour is what clients see.
func (tl *toolsList) render(tools []mcpserver.ServerTool, log *slog.Logger) {
	// SetTools keeps the last tool of a name.
	byName := make(map[string]mcp.Tool, len(tools))
	for _, t := range tools {
		byName[t.Tool.Name] = t.Tool
	}
	list := make([]mcp.Tool, 0, len(byName))
	for _, n := range sortedNames(byName) {
		list = append(list, byName[n])
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	p, err := paginateTools(list, tl.size())
	if err != nil {
		log.Warn("tools/list is served by mcp-go: pre-serialising it failed", "err", err)
	}
	tl.cur.Store(p)
}

// setPageSize changes the page size and re-renders the current list. The
// caller changes mcp-go's limit to match (tests only).
func (tl *toolsList) setPageSize(n int) error {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.pageSize = n
	cur := tl.cur.Load()
	if cur == nil {
		return nil
	}
	p, err := paginateTools(cur.tools, tl.size())
	tl.cur.Store(p)
	return err
}

func (tl *toolsList) size() int {
	if tl.pageSize > 0 {
		return tl.pageSize
	}
	return defaultToolsPageSize
}

// respHead is how every response starts; the request's id follows.
var respHead = []byte(`{"jsonrpc":"2.0","id":`)

// paginateTools splits sorted tools into pages the way mcp-go's
// listByPagination does and marshals each page with mcp-go's response
// types (an id of 0, cut off afterwards).
func paginateTools(tools []mcp.Tool, size int) (*toolPages, error) {
	p := &toolPages{tools: tools, cursors: map[string]int{"": 0}}
	head := append(append([]byte{}, respHead...), '0')
	for start := 0; ; {
		end := min(start+size, len(tools))
		page := tools[start:end:end]
		if page == nil {
			page = []mcp.Tool{}
		}
		var next mcp.Cursor
		if len(page) >= size {
			next = mcp.Cursor(base64.StdEncoding.EncodeToString([]byte(page[len(page)-1].Name)))
		}
		b, err := json.Marshal(mcp.NewJSONRPCResultResponse(mcp.NewRequestId(int64(0)),
			mcp.ListToolsResult{PaginatedResult: mcp.PaginatedResult{NextCursor: next}, Tools: page}))
		if err != nil {
			return nil, fmt.Errorf("tools %d–%d: %w", start, end, err)
		}
		if !bytes.HasPrefix(b, head) {
			return nil, errors.New("unexpected response encoding: " + string(b[:min(len(b), 40)]))
		}
		p.pages = append(p.pages, append(b[len(head):], '\n'))
		if next == "" {
			return p, nil
		}
		p.cursors[string(next)] = len(p.pages)
		start = end
	}
}

// toolsListMount is the middleware in front of one mcp-go handler.
type toolsListMount struct {
	tl   *toolsList
	next http.Handler
}

type mountKey struct{}

// watch tracks the HTTP sessions mcp-go registers (New calls it, before
// anything is served).
func (tl *toolsList) watch(srv *mcpserver.MCPServer) {
	hooks := srv.GetHooks()
	hooks.AddOnRegisterSession(func(ctx context.Context, s mcpserver.ClientSession) {
		m, ok := ctx.Value(mountKey{}).(*toolsListMount)
		if _, isHTTP := s.(mcpserver.SessionWithStreamableHTTPConfig); !ok || !isHTTP {
			return // stdio, or a session no mount saw being created
		}
		ls := &liveSession{mount: m, notify: s.NotificationChannel(), session: s}
		ls.seen.Store(time.Now().UnixNano())
		tl.sessions.Store(s.SessionID(), ls)
	})
	hooks.AddOnUnregisterSession(func(ctx context.Context, s mcpserver.ClientSession) {
		tl.sessions.Delete(s.SessionID())
	})
}

// wrap puts the fast path in front of mcp-go's streamable HTTP handler
// (inside limitBody, behind the auth middleware). It steps aside when a
// hook would observe tools/list.
func (tl *toolsList) wrap(srv *mcpserver.MCPServer, next http.Handler) http.Handler {
	if observesToolsList(srv.GetHooks(), tl.ownHooks) {
		return next
	}
	return &toolsListMount{tl: tl, next: next}
}

// observesToolsList reports hooks that would see a tools/list request.
func observesToolsList(h *mcpserver.Hooks, own int) bool {
	return h != nil && len(h.OnBeforeAny)+len(h.OnSuccess)+len(h.OnRequestInitialization)+
		len(h.OnBeforeListTools)+len(h.OnAfterListTools) > own
}

func (m *toolsListMount) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var ls *liveSession
	if sid := r.Header.Get(mcpserver.HeaderKeySessionID); sid != "" {
		if v, ok := m.tl.sessions.Load(sid); ok && v.(*liveSession).mount == m {
			ls = v.(*liveSession)
		}
	}
	if ls == nil {
		// Sessions registered while this request runs (initialize, a
		// legacy GET stream) are tracked as this mount's.
		m.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), mountKey{}, m)))
		return
	}
	if r.Method != http.MethodPost || len(ls.notify) > 0 ||
		time.Now().UnixNano()-ls.seen.Load() > int64(sessionRefresh) ||
		!jsonContent(r.Header) || dnsRebinding(r) {
		m.fallThrough(ls, w, r)
		return
	}
	pages := m.tl.cur.Load()
	if m.tl.off.Load() {
		pages = nil
	}
	call := m.tl.call
	if m.tl.callOff.Load() {
		call = nil
	}
	if pages == nil && call == nil && m.tl.cancelled == nil {
		m.fallThrough(ls, w, r)
		return
	}
	// The body is read once (limitBody has applied the 4 MiB limit) and
	// handed on unchanged, read error included, if mcp-go is to answer.
	body, err := io.ReadAll(r.Body)
	r.Body = replayBody{Reader: io.MultiReader(bytes.NewReader(body), errReader{err}), Closer: r.Body}
	if err != nil {
		m.fallThrough(ls, w, r)
		return
	}
	if call != nil && call(w, r, ls, body) {
		return
	}
	if m.tl.cancelled != nil {
		m.tl.cancelled(ls, body)
	}
	if pages == nil {
		m.fallThrough(ls, w, r)
		return
	}
	id, cursor, ok := parseToolsList(r.Header, body)
	if !ok {
		m.fallThrough(ls, w, r)
		return
	}
	if f := m.tl.filter; f != nil {
		if pages = f(r, pages); pages == nil {
			m.fallThrough(ls, w, r)
			return
		}
	}
	page, ok := pages.cursors[cursor]
	if !ok {
		m.fallThrough(ls, w, r)
		return
	}
	m.tl.served.Add(1)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(respHead)
	_, _ = w.Write(id)
	_, _ = w.Write(pages.pages[page])
	if m.tl.observe != nil {
		m.tl.observe(r, body, start)
	}
}

func (m *toolsListMount) fallThrough(ls *liveSession, w http.ResponseWriter, r *http.Request) {
	ls.seen.Store(time.Now().UnixNano())
	m.next.ServeHTTP(w, r)
}

// parseToolsList accepts exactly the legacy tools/list requests that
// mcp-go answers with a page of the list, and returns their id (raw) and
// cursor.
func parseToolsList(h http.Header, body []byte) (id []byte, cursor string, ok bool) {
	if !bytes.Contains(body, []byte(`"tools/list"`)) {
		return nil, "", false
	}
	var req struct {
		JSONRPC string              `json:"jsonrpc"`
		ID      json.RawMessage     `json:"id"`
		Method  string              `json:"method"`
		Result  json.RawMessage     `json:"result"`
		Error   json.RawMessage     `json:"error"`
		Params  mcp.PaginatedParams `json:"params"`
	}
	if json.Unmarshal(body, &req) != nil || req.JSONRPC != mcp.JSONRPC_VERSION ||
		req.Method != string(mcp.MethodToolsList) || req.Result != nil || req.Error != nil {
		return nil, "", false
	}
	if !plainID(req.ID) {
		return nil, "", false
	}
	if v := h.Get(mcp.HeaderProtocolVersion); v != "" && (!mcp.IsValidProtocolVersion(v) || mcp.IsModernProtocol(v)) {
		return nil, "", false
	}
	if mcp.IsModernProtocol(req.Params.Meta.ProtocolVersion()) {
		return nil, "", false
	}
	return req.ID, string(req.Params.Cursor), true
}

// plainID accepts the ids mcp-go answers with the same value: a string of
// valid UTF-8 or a number that fits a float64 (mcp-go decodes ids into an
// `any`; a missing or null id is a notification, 1e400 a parse error).
func plainID(id json.RawMessage) bool {
	switch {
	case len(id) == 0:
		return false
	case id[0] == '"':
		return utf8.Valid(id)
	case id[0] == '-' || id[0] >= '0' && id[0] <= '9':
		_, err := strconv.ParseFloat(string(id), 64)
		return err == nil
	}
	return false
}

// jsonContent is mcp-go's content-type rule for POST.
func jsonContent(h http.Header) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// dnsRebinding is mcp-go's rule (a loopback connection must name a
// loopback host); such requests are left to mcp-go, which refuses them.
func dnsRebinding(r *http.Request) bool {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return ok && la != nil && mcpLoopback(la.String()) && !mcpLoopback(r.Host)
}

// mcpLoopback is mcp-go's isLoopbackHost.
func mcpLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.Trim(addr, "[]")
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

type replayBody struct {
	io.Reader
	io.Closer
}

// errReader ends a replayed body with the original read error (nil: EOF).
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	return 0, io.EOF
}
