package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/backends/outauth"
	"github.com/vmcp-dev/vmcp/dsl"
)

// Outgoing authentication end to end, on loopback: a token endpoint, MCP
// backends over streamable HTTP that record the credentials of every HTTP
// request they receive, and vmcp between them with static incoming tokens.

// seenBackend is an MCP server (mcp-go, streamable HTTP) with one tool,
// whoami, that records the headers of every request.
type seenBackend struct {
	srv *httptest.Server
	mu  sync.Mutex
	all []http.Header // every HTTP request
	// calls and lists are the headers of the requests that carried a
	// tools/call, a tools/list.
	calls, lists []http.Header
}

func newSeenBackend(t *testing.T, name string) *seenBackend {
	t.Helper()
	b := &seenBackend{}
	s := mcpserver.NewMCPServer(name, "1", mcpserver.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("whoami", mcp.WithDescription("says ok")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("ok"), nil
	})
	h := mcpserver.NewStreamableHTTPServer(s)
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		b.mu.Lock()
		b.all = append(b.all, r.Header.Clone())
		if bytes.Contains(body, []byte(`"tools/call"`)) {
			b.calls = append(b.calls, r.Header.Clone())
		}
		if bytes.Contains(body, []byte(`"tools/list"`)) {
			b.lists = append(b.lists, r.Header.Clone())
		}
		b.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *seenBackend) lastCall(t *testing.T) http.Header {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.calls) == 0 {
		t.Fatal("the backend saw no tools/call")
	}
	return b.calls[len(b.calls)-1]
}

func (b *seenBackend) requests() []http.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]http.Header(nil), b.all...)
}

// idp is a token endpoint for token exchange and client credentials. It
// requires the client's Basic credentials, refuses to exchange
// carol-token, and issues "xchg-<n>" / "cc-<n>".
type idp struct {
	srv               *httptest.Server
	exchanges, ccHits atomic.Int32
	mu                sync.Mutex
	subjects          map[string]string // issued token → subject token
	clients           map[string]string // client id → secret
	issued, audiences []string
}

func newIDP(t *testing.T, clients map[string]string) *idp {
	d := &idp{subjects: map[string]string{}, clients: clients}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		id, secret, ok := r.BasicAuth()
		if !ok || d.clients[id] != secret {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		_ = r.ParseForm()
		var tok string
		switch r.PostForm.Get("grant_type") {
		case "urn:ietf:params:oauth:grant-type:token-exchange":
			sub := r.PostForm.Get("subject_token")
			if sub == "carol-token" {
				w.WriteHeader(400)
				_, _ = io.WriteString(w, `{"error":"invalid_grant","error_description":"carol-token is not allowed here"}`)
				return
			}
			tok = fmt.Sprintf("xchg-%d", d.exchanges.Add(1))
			d.mu.Lock()
			d.subjects[tok] = sub
			d.audiences = append(d.audiences, r.PostForm.Get("audience"))
			d.mu.Unlock()
		case "client_credentials":
			tok = fmt.Sprintf("cc-%d", d.ccHits.Add(1))
		default:
			w.WriteHeader(400)
			_, _ = io.WriteString(w, `{"error":"unsupported_grant_type"}`)
			return
		}
		d.mu.Lock()
		d.issued = append(d.issued, tok)
		d.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func TestOutgoingAuthEndToEnd(t *testing.T) {
	const (
		clientSecret = "xchg-client-secret-7f3a"
		ccSecret     = "cc-client-secret-91bd"
		apiKey       = "api-key-from-env-55e1"
		fileHeader   = "header-from-file-c0de"
	)
	d := newIDP(t, map[string]string{"vmcp": clientSecret, "svc": ccSecret})
	pd, svc, hdr, off := newSeenBackend(t, "pd"), newSeenBackend(t, "svc"), newSeenBackend(t, "hdr"), newSeenBackend(t, "off")
	dir := t.TempDir()
	ccFile := filepath.Join(dir, "cc-secret")
	hdrFile := filepath.Join(dir, "header")
	if err := os.WriteFile(ccFile, []byte(ccSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hdrFile, []byte(fileHeader+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VMCP_TEST_BOB", "bob-token")
	t.Setenv("VMCP_TEST_XCHG_SECRET", clientSecret)
	t.Setenv("VMCP_TEST_API_KEY", apiKey)
	src := `name: outauth-test
incoming_auth:
  type: tokens
  tokens:
    - {principal: alice, sha256: "` + sha("alice-token") + `"}
    - {principal: bob, token_env: VMCP_TEST_BOB}
    - {principal: carol, sha256: "` + sha("carol-token") + `"}
backends:
  - {name: pd, url: "` + pd.srv.URL + `/mcp"}
  - {name: svc, url: "` + svc.srv.URL + `/mcp"}
  - {name: hdr, url: "` + hdr.srv.URL + `/mcp"}
  - {name: off, url: "` + off.srv.URL + `/mcp"}
outgoing_auth:
  default: error
  backends:
    pd:
      type: token_exchange
      token_url: "` + d.srv.URL + `/token"
      audience: pd-api
      scopes: [incidents.read]
      client_id: vmcp
      client_secret_env: VMCP_TEST_XCHG_SECRET
      service:
        type: client_credentials
        token_url: "` + d.srv.URL + `/token"
        client_id: svc
        client_secret_file: "` + ccFile + `"
    svc:
      type: client_credentials
      token_url: "` + d.srv.URL + `/token"
      client_id: svc
      client_secret_file: "` + ccFile + `"
    hdr:
      type: headers
      headers:
        X-Api-Key: {value_env: VMCP_TEST_API_KEY}
        X-From-File: {value_file: "` + hdrFile + `"}
        X-Plain: plain
composite_tools:
  - name: pd_twice
    steps:
      - {id: a, tool: pd.whoami}
      - {id: b, tool: pd.whoami, depends_on: [a]}
`
	cfg, ds := dsl.LoadConfig("outauth.yaml", []byte(src), nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	var logs safeBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	statePath := filepath.Join(dir, "state.db")
	g, err := New(cfg, &Options{StatePath: statePath, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	closed := false
	closeAll := func() {
		if !closed {
			closed = true
			srv.Close()
			_ = g.Close()
		}
	}
	t.Cleanup(closeAll)

	var errs []string // every error vmcp answered with
	call := func(token, tool string) *mcp.CallToolResult {
		t.Helper()
		c, _ := clientAs(t, srv.URL, token)
		res, err := c.CallTool(t.Context(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: tool, Arguments: map[string]any{}}})
		if err != nil {
			errs = append(errs, err.Error())
			t.Fatalf("%s: %v", tool, err)
		}
		if res.IsError {
			errs = append(errs, text(res))
		}
		return res
	}

	// token_exchange: the backend receives the exchanged token, never the
	// caller's; the second call hits the cache; bob gets another token.
	if r := call("alice-token", "pd_whoami"); r.IsError {
		t.Fatalf("alice: %s", text(r))
	}
	aliceTok := pd.lastCall(t).Get("Authorization")
	if !strings.HasPrefix(aliceTok, "Bearer xchg-") || d.subjects[strings.TrimPrefix(aliceTok, "Bearer ")] != "alice-token" {
		t.Fatalf("pd saw %q for alice (exchanges: %v)", aliceTok, d.subjects)
	}
	call("alice-token", "pd_whoami")
	if got := pd.lastCall(t).Get("Authorization"); got != aliceTok || d.exchanges.Load() != 1 {
		t.Fatalf("second call: pd saw %q, %d exchanges; want %q and 1", got, d.exchanges.Load(), aliceTok)
	}
	call("bob-token", "pd_whoami")
	bobTok := pd.lastCall(t).Get("Authorization")
	if bobTok == aliceTok || d.subjects[strings.TrimPrefix(bobTok, "Bearer ")] != "bob-token" || d.exchanges.Load() != 2 {
		t.Fatalf("bob: pd saw %q (alice's %q), %d exchanges", bobTok, aliceTok, d.exchanges.Load())
	}
	for _, aud := range d.audiences {
		if aud != "pd-api" {
			t.Errorf("exchange for audience %q", aud)
		}
	}
	// A composite tool's steps carry the caller's identity too.
	if r := call("alice-token", "pd_twice"); r.IsError {
		t.Fatalf("composite: %s", text(r))
	}
	if got := pd.lastCall(t).Get("Authorization"); got != aliceTok || d.exchanges.Load() != 2 {
		t.Fatalf("composite: pd saw %q, %d exchanges", got, d.exchanges.Load())
	}
	if n := g.mgr.ClientSessions(); n != 2 {
		t.Errorf("%d per-principal sessions, want 2 (alice, bob)", n)
	}
	// No request at all carried a caller's own token: each carried an
	// exchanged token or the service token (service: client_credentials),
	// and the shared session listed the catalogue with the service token.
	for _, h := range pd.requests() {
		a := h.Get("Authorization")
		if !strings.HasPrefix(a, "Bearer xchg-") && !strings.HasPrefix(a, "Bearer cc-") {
			t.Errorf("pd received %q", a)
		}
	}
	pd.mu.Lock()
	serviceList := false
	for _, h := range pd.lists {
		serviceList = serviceList || strings.HasPrefix(h.Get("Authorization"), "Bearer cc-")
	}
	pd.mu.Unlock()
	if !serviceList {
		t.Error("pd's catalogue was not listed with the service token")
	}

	// A refused exchange is an error naming the backend.
	r := call("carol-token", "pd_whoami")
	if !r.IsError || !strings.Contains(text(r), `backend "pd"`) || !strings.Contains(text(r), "invalid_grant") {
		t.Fatalf("carol: %v %s", r.IsError, text(r))
	}
	t.Logf("refused exchange: %s", text(r))

	// client_credentials: one token for the service, whoever calls.
	call("alice-token", "svc_whoami")
	call("bob-token", "svc_whoami")
	svcTok := svc.lastCall(t).Get("Authorization")
	for _, h := range svc.requests() {
		if a := h.Get("Authorization"); a != svcTok || !strings.HasPrefix(a, "Bearer cc-") {
			t.Fatalf("svc saw %q, want one client-credentials token on every request", a)
		}
	}
	if d.ccHits.Load() != 2 {
		t.Errorf("%d client-credentials requests, want 2 (svc, and pd's service credentials; each cached)", d.ccHits.Load())
	}

	// headers: from env, a file and the config.
	call("alice-token", "hdr_whoami")
	h := hdr.lastCall(t)
	if h.Get("X-Api-Key") != apiKey || h.Get("X-From-File") != fileHeader || h.Get("X-Plain") != "plain" || h.Get("Authorization") != "" {
		t.Fatalf("hdr saw %v", h)
	}

	// error (the default here): off is never contacted, is unhealthy on
	// /status with the reason, and a call is refused naming it.
	if n := len(off.requests()); n != 0 {
		t.Errorf("the refused backend received %d requests", n)
	}
	_, err = g.mgr.CallTool(t.Context(), "off", "whoami", nil, nil)
	if !errors.Is(err, outauth.ErrRefused) || !strings.Contains(err.Error(), `backend "off"`) {
		t.Fatalf("call to off: %v", err)
	}
	errs = append(errs, err.Error())
	req, _ := http.NewRequest("GET", srv.URL+"/status", nil)
	req.Header.Set("Authorization", "Bearer alice-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	status, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("/status: %s", status)
	if !strings.Contains(string(status), "outgoing_auth error") {
		t.Errorf("/status does not say why off is down: %s", status)
	}

	// No secret anywhere: logs, errors, /status, the state file.
	closeAll()
	state, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(state, []byte("pd_twice")) {
		t.Fatal("the state file holds no run: the grep below would prove nothing")
	}
	if !strings.Contains(logs.String(), "backend") {
		t.Fatal("no logs captured")
	}
	secrets := []string{"alice-token", "bob-token", "carol-token", clientSecret, ccSecret, apiKey, fileHeader}
	d.mu.Lock()
	secrets = append(secrets, d.issued...)
	d.mu.Unlock()
	places := map[string]string{"logs": logs.String(), "errors": strings.Join(errs, "\n"), "/status": string(status), "state file": string(state)}
	for where, text := range places {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s contains the secret %q", where, s)
			}
		}
	}
}

// safeBuffer is a bytes.Buffer for concurrent log writes.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestOutgoingAuthConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"user-bound on stdio", `incoming_auth: {type: tokens, tokens: [{principal: a, sha256: "` + sha("x") + `"}]}
backends: [{name: s, command: [cat]}]
outgoing_auth: {backends: {s: pass_through}}
`, `outgoing_auth.backends.s: backend "s" is a command backend, and type pass_through sends HTTP headers`},
		{"headers on builtin", `backends: [{name: s, builtin: logs}]
outgoing_auth: {backends: {s: {type: headers, headers: {X: y}}}}
`, `backend "s" is a builtin backend`},
		{"exchange needs incoming tokens", `backends: [{name: w, url: "http://127.0.0.1:1/mcp"}]
outgoing_auth: {backends: {w: {type: token_exchange, token_url: "http://127.0.0.1:2/token"}}}
`, `type token_exchange for backend "w" needs callers' tokens`},
		{"missing env", `backends: [{name: w, url: "http://127.0.0.1:1/mcp"}]
outgoing_auth: {backends: {w: {type: headers, headers: {X-Key: {value_env: VMCP_TEST_UNSET_VAR}}}}}
`, `outgoing_auth.backends.w.headers.X-Key: environment variable VMCP_TEST_UNSET_VAR is not set`},
		{"service on headers", `backends: [{name: w, url: "http://127.0.0.1:1/mcp"}]
outgoing_auth: {backends: {w: {type: headers, headers: {X: y}, service: {type: headers, headers: {X: z}}}}}
`, `outgoing_auth.backends.w.service: only token_exchange and pass_through take service credentials`},
		{"http token url", `backends: [{name: w, url: "http://127.0.0.1:1/mcp"}]
outgoing_auth: {default: {type: client_credentials, token_url: "http://idp.example.com/token", client_id: x, client_secret_env: HOME}}
`, `backend "w": outgoing_auth client_credentials: token_url must be https`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, ds := dsl.LoadConfig("c.yaml", []byte(tc.src), nil)
			if len(ds) > 0 {
				t.Fatal(ds)
			}
			_, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "s.db")})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "c.yaml:") {
				t.Fatalf("got %v\nwant c.yaml:…%s", err, tc.want)
			}
		})
	}
	// The default's headers skip stdio and builtin backends.
	cfg, ds := dsl.LoadConfig("c.yaml", []byte(`backends: [{name: s, builtin: logs}]
outgoing_auth: {default: {type: headers, headers: {X: y}}}
`), nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	if _, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "s.db")}); err != nil {
		t.Fatal(err)
	}
}
