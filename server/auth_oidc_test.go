package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/mark3labs/mcp-go/client"

	"github.com/vmcp-dev/vmcp/dsl"
)

// A local OIDC issuer for the tests: keys generated here, discovery and
// JWKS served by httptest on loopback.

type testKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv any
}

func (k testKey) public() jose.JSONWebKey {
	var pub any
	switch p := k.priv.(type) {
	case *rsa.PrivateKey:
		pub = &p.PublicKey
	case *ecdsa.PrivateKey:
		pub = &p.PublicKey
	case ed25519.PrivateKey:
		pub = p.Public()
	}
	return jose.JSONWebKey{Key: pub, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

func (k testKey) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var (
	keysOnce sync.Once
	rsaKeys  [3]*rsa.PrivateKey // rsa-1, rsa-2 (rotation), rogue
	ecKey    *ecdsa.PrivateKey
	edKey    ed25519.PrivateKey
)

func genKeys(t testing.TB) {
	keysOnce.Do(func() {
		for i := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[i] = k
		}
		var err error
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if _, edKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	})
}

func rsa1(t testing.TB) testKey { genKeys(t); return testKey{"rsa-1", jose.RS256, rsaKeys[0]} }
func rsa2(t testing.TB) testKey { genKeys(t); return testKey{"rsa-2", jose.RS256, rsaKeys[1]} }
func ec1(t testing.TB) testKey  { genKeys(t); return testKey{"ec-1", jose.ES256, ecKey} }
func ed1(t testing.TB) testKey  { genKeys(t); return testKey{"ed-1", jose.EdDSA, edKey} }

type fakeIssuer struct {
	*httptest.Server
	mu        sync.Mutex
	keys      []jose.JSONWebKey
	docIssuer string // the issuer the discovery document names; default the URL
	noDisco   bool
	fail      atomic.Bool
	fetches   atomic.Int32
}

func newFakeIssuer(t testing.TB, keys ...testKey) *fakeIssuer {
	f := &fakeIssuer{}
	f.setKeys(keys...)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		iss, no := f.docIssuer, f.noDisco
		f.mu.Unlock()
		if no {
			http.NotFound(w, r)
			return
		}
		if iss == "" {
			iss = f.URL
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": f.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256", "ES256", "EdDSA"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		f.fetches.Add(1)
		if f.fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		f.mu.Lock()
		set := jose.JSONWebKeySet{Keys: f.keys}
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(set)
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

func (f *fakeIssuer) setKeys(keys ...testKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = nil
	for _, k := range keys {
		f.keys = append(f.keys, k.public())
	}
}

// claims for a token of sub, valid for an hour.
func (f *fakeIssuer) claims(sub string) map[string]any {
	now := time.Now().Unix()
	return map[string]any{"iss": f.URL, "aud": []string{"vmcp", "other"}, "sub": sub, "iat": now, "nbf": now - 5, "exp": now + 3600, "groups": []string{"sre"}}
}

func with(c map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func oidcYAML(iss string, extra string) string {
	return `name: oidc-test
incoming_auth:
  type: oidc
  issuer: "` + iss + `"
  audience: vmcp
  scopes: [mcp.tools, openid]
` + extra + `backends:
  - {name: incidents, builtin: incidents}
  - {name: logs, builtin: logs}
  - {name: metrics, builtin: metrics}
  - {name: deploys, builtin: deploys}
  - {name: chat, builtin: chat}
  - {name: tickets, builtin: tickets}
`
}

func loadOIDCConfig(t testing.TB, src string) *dsl.Config {
	t.Helper()
	cfg, ds := dsl.LoadConfig("oidc.yaml", []byte(src), nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	return cfg
}

// startOIDC serves the demo with incoming_auth oidc against f.
func startOIDC(t *testing.T, f *fakeIssuer, extra string) (*Gateway, string) {
	t.Helper()
	demo, ds := DemoConfig(nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	cfg := loadOIDCConfig(t, oidcYAML(f.URL, extra))
	cfg.LoadedWorkflows = demo.LoadedWorkflows
	g, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "state.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = g.Close()
	})
	return g, srv.URL
}

func verifierOf(t testing.TB, g *Gateway) *oidcVerifier {
	t.Helper()
	v, ok := g.auth.creds.(*oidcVerifier)
	if !ok {
		t.Fatalf("credentials are %T", g.auth.creds)
	}
	return v
}

// post sends an MCP initialize with the token (if any) and returns the
// status, WWW-Authenticate and body.
func post(t *testing.T, url, token string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b)
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestOIDCAuthEndToEnd(t *testing.T) {
	f := newFakeIssuer(t, rsa1(t), ec1(t), ed1(t))
	_, url := startOIDC(t, f, "")
	meta := url + "/.well-known/oauth-protected-resource"

	aliceTok := rsa1(t).sign(t, f.claims("alice"))
	bobTok := ec1(t).sign(t, f.claims("bob"))
	carolTok := ed1(t).sign(t, f.claims("carol"))

	// RFC 9728 metadata: the issuer and the scopes.
	resp, err := http.Get(meta)
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		ScopesSupported      []string `json:"scopes_supported"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&md)
	resp.Body.Close()
	if md.Resource != url+"/mcp" || len(md.AuthorizationServers) != 1 || md.AuthorizationServers[0] != f.URL || strings.Join(md.ScopesSupported, " ") != "mcp.tools openid" {
		t.Fatalf("metadata: %+v", md)
	}

	// No token: 401 without an error code (RFC 6750 §3.1).
	code, www, _ := post(t, url, "")
	if want := `Bearer resource_metadata="` + meta + `", scope="mcp.tools openid"`; code != 401 || www != want {
		t.Fatalf("no token: %d %q, want %q", code, www, want)
	}

	// Every bad token: 401, invalid_token, the reason, the metadata URL,
	// and nothing of the token.
	now := time.Now().Unix()
	good := f.claims("mallory")
	valid := rsa1(t).sign(t, good)
	parts := strings.Split(valid, ".")
	rogue := testKey{"rsa-1", jose.RS256, rsaKeys[2]} // claims the kid of a real key
	pubDER, _ := x509.MarshalPKIXPublicKey(&rsaKeys[0].PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hs := func(secret []byte) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: secret, KeyID: "rsa-1"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(good).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cases := []struct{ name, token, why string }{
		{"expired", rsa1(t).sign(t, with(good, "exp", now-120, "iat", now-3600, "nbf", now-3600)), "token expired"},
		{"not yet valid", rsa1(t).sign(t, with(good, "nbf", now+600)), "token not yet valid (nbf)"},
		{"issued in the future", rsa1(t).sign(t, with(good, "iat", now+600)), "token issued in the future (iat)"},
		{"wrong audience", rsa1(t).sign(t, with(good, "aud", "someone-else")), "wrong audience"},
		{"no audience", rsa1(t).sign(t, with(good, "aud", nil)), "wrong audience"},
		{"wrong issuer", rsa1(t).sign(t, with(good, "iss", "https://evil.example")), "wrong issuer"},
		{"no exp", rsa1(t).sign(t, with(good, "exp", nil)), "token has no exp claim"},
		{"no sub", rsa1(t).sign(t, with(good, "sub", nil)), "token has no sub claim"},
		{"bad signature", rogue.sign(t, good), "bad signature, or malformed claims"},
		{"tampered payload", parts[0] + "." + b64(with(good, "sub", "alice")) + "." + parts[2], "bad signature, or malformed claims"},
		{"alg none", b64(map[string]string{"alg": "none", "typ": "JWT", "kid": "rsa-1"}) + "." + parts[1] + ".", "signing algorithm none is not accepted (use RS*, PS*, ES* or EdDSA)"},
		{"HS256 with the public key (PEM) as secret", hs(pubPEM), "signing algorithm HS256 is not accepted (use RS*, PS*, ES* or EdDSA)"},
		{"HS256 with the public key (DER) as secret", hs(pubDER), "signing algorithm HS256 is not accepted (use RS*, PS*, ES* or EdDSA)"},
		{"RS256 header on an EC key", parts[0] + "." + parts[1] + "." + strings.Split(ec1(t).sign(t, good), ".")[2], "bad signature, or malformed claims"},
		{"unknown key", testKey{"nope", jose.RS256, rsaKeys[2]}.sign(t, good), "token is signed with an unknown key"},
		{"garbage", "not-a-jwt", "malformed token (not a JWT)"},
		{"too long", strings.Repeat("a", 20000), "token too long"},
	}
	for _, c := range cases {
		code, www, body := post(t, url, c.token)
		want := `Bearer error="invalid_token", error_description="` + c.why + `", resource_metadata="` + meta + `", scope="mcp.tools openid"`
		if code != 401 || www != want {
			t.Errorf("%s: %d %q\nwant %q", c.name, code, www, want)
		}
		if sig := c.token[max(0, len(c.token)-20):]; strings.Contains(www, sig) || strings.Contains(body, sig) {
			t.Errorf("%s: the answer echoes the token", c.name)
		}
	}
	// The HS256 token really is an HMAC over the public key: a verifier
	// that accepted HS* with the key bytes would have let it in.
	if _, err := jose.ParseSigned(hs(pubPEM), []jose.SignatureAlgorithm{jose.HS256}); err != nil {
		t.Fatal(err)
	}

	// Within clock_skew (default 60s): accepted.
	if code, www, body := post(t, url, rsa1(t).sign(t, with(f.claims("dave"), "exp", now-20))); code != 200 {
		t.Fatalf("expired 20s ago, skew 60s: %d %s %s", code, www, body)
	}

	// Valid tokens (RS256, ES256, EdDSA): the principal is the sub, seen as
	// the owner of runs.
	alice, aliceSession := clientAs(t, url, aliceTok)
	bob, _ := clientAs(t, url, bobTok)
	carol, _ := clientAs(t, url, carolTok)
	res := callJSON(t, alice, "investigate_incident", `{"incident_id":"INC-1042"}`)
	runID := res.Meta.AdditionalFields["vmcp/run"].(map[string]any)["id"].(string)
	if out := text(callJSON(t, alice, "vmcp_runs_list", `{}`)); !strings.Contains(out, runID) {
		t.Fatalf("alice does not list her run: %s", out)
	}
	for name, c := range map[string]*client.Client{"bob": bob, "carol": carol} {
		if out := text(callJSON(t, c, "vmcp_runs_list", `{}`)); strings.Contains(out, runID) {
			t.Fatalf("%s lists alice's run: %s", name, out)
		}
		if r := callJSON(t, c, "vmcp_run_get", `{"run_id":"`+runID+`"}`); !r.IsError {
			t.Fatalf("%s reads alice's run: %s", name, text(r))
		}
	}
	for tok, want := range map[string]int{aliceTok: 200, bobTok: 404} {
		req, _ := http.NewRequest("GET", url+"/api/v1/runs/"+runID, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET run: %d, want %d", resp.StatusCode, want)
		}
	}

	// Session hijack: Bob's valid token on Alice's session is refused (403)
	// and the session still works for Alice.
	req, _ := http.NewRequest("POST", url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer "+bobTok)
	req.Header.Set("Mcp-Session-Id", aliceSession)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), "another principal") {
		t.Fatalf("session hijack: %d %s", resp.StatusCode, body)
	}
	done := callJSON(t, alice, "vmcp_run_resume", `{"run_id":"`+runID+`","action":"accept","content":{"page":true}}`)
	if done.IsError || !strings.Contains(text(done), `"paged":true`) {
		t.Fatalf("alice resume after the hijack attempt: %s", text(done))
	}
	if got := text(callJSON(t, alice, "vmcp_run_get", `{"run_id":"`+runID+`"}`)); !strings.Contains(got, `"who":"alice"`) {
		t.Fatalf("history does not record alice: %s", got)
	}
}

func TestOIDCKeyRotation(t *testing.T) {
	f := newFakeIssuer(t, rsa1(t))
	g, url := startOIDC(t, f, "")
	v := verifierOf(t, g)
	v.minRefresh = 0 // set before any request; the rate limit has its own test

	old := rsa1(t).sign(t, f.claims("alice"))
	if code, _, body := post(t, url, old); code != 200 {
		t.Fatalf("before rotation: %d %s", code, body)
	}
	before := f.fetches.Load()

	// The issuer rotates to a new key with a new kid: new tokens work
	// without restarting vmcp, over a full MCP session.
	f.setKeys(rsa2(t))
	c, _ := clientAs(t, url, rsa2(t).sign(t, f.claims("alice")))
	if r := callJSON(t, c, "vmcp_runs_list", `{}`); r.IsError {
		t.Fatalf("after rotation: %s", text(r))
	}
	if f.fetches.Load() == before {
		t.Fatal("the JWKS was not fetched again on an unknown kid")
	}

	// A key the issuer no longer publishes, and one it never did: refused.
	for name, tok := range map[string]string{
		"retired key": old,
		"rogue key":   testKey{"rogue", jose.RS256, rsaKeys[2]}.sign(t, f.claims("alice")),
	} {
		if code, www, _ := post(t, url, tok); code != 401 || !strings.Contains(www, `error_description="token is signed with an unknown key"`) {
			t.Fatalf("%s: %d %q", name, code, www)
		}
	}

	// The issuer is down: a refresh fails, the cached key keeps working.
	f.fail.Store(true)
	n := f.fetches.Load()
	if code, _, _ := post(t, url, rsa1(t).sign(t, f.claims("alice"))); code != 401 {
		t.Fatalf("unknown kid while the issuer is down: %d", code)
	}
	if f.fetches.Load() == n {
		t.Fatal("no refresh was tried")
	}
	if code, _, body := post(t, url, rsa2(t).sign(t, f.claims("alice"))); code != 200 {
		t.Fatalf("cached key after a failed refresh: %d %s", code, body)
	}
}

func TestOIDCJWKSRefreshRateLimited(t *testing.T) {
	f := newFakeIssuer(t, rsa1(t))
	v, err := newOIDCVerifier(t.Context(), loadOIDCConfig(t, oidcYAML(f.URL, "")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := f.fetches.Load(); n != 1 {
		t.Fatalf("startup fetches: %d", n)
	}
	flood := func() {
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				tok := testKey{fmt.Sprintf("made-up-%d", i), jose.RS256, rsaKeys[0]}.sign(t, f.claims("x"))
				if _, err := v.authenticate(t.Context(), tok); err == nil {
					t.Error("made-up kid accepted")
				}
			})
		}
		wg.Wait()
	}
	flood() // within 10s of the startup fetch: no fetch at all
	if n := f.fetches.Load(); n != 1 {
		t.Fatalf("fetches after a flood of unknown kids: %d, want 1", n)
	}
	v.refreshMu.Lock()
	v.lastTry = time.Now().Add(-defaultMinJWKS - time.Second)
	v.refreshMu.Unlock()
	flood() // one fetch for the whole flood
	if n := f.fetches.Load(); n != 2 {
		t.Fatalf("fetches after the interval: %d, want 2", n)
	}
	// Stale keys are fetched again (rate-limited too) and keep working.
	v.mu.Lock()
	v.fetched = time.Now().Add(-2 * maxKeyAge)
	v.mu.Unlock()
	v.refreshMu.Lock()
	v.lastTry = time.Time{}
	v.refreshMu.Unlock()
	f.fail.Store(true)
	for range 5 {
		if _, err := v.authenticate(t.Context(), rsa1(t).sign(t, f.claims("x"))); err != nil {
			t.Fatalf("stale keys while the issuer is down: %v", err)
		}
	}
	v.refreshMu.Lock() // waits for the background fetch
	v.refreshMu.Unlock()
	if n := f.fetches.Load(); n != 3 {
		t.Fatalf("fetches for stale keys: %d, want 3 (one, in the background)", n)
	}
	if _, err := v.authenticate(t.Context(), rsa1(t).sign(t, f.claims("x"))); err != nil {
		t.Fatalf("cached keys after a failed background refresh: %v", err)
	}
}

func TestOIDCStartupFailures(t *testing.T) {
	newG := func(src string) error {
		_, err := New(loadOIDCConfig(t, src), &Options{StatePath: filepath.Join(t.TempDir(), "state.db")})
		return err
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	notFound := newFakeIssuer(t, rsa1(t))
	notFound.mu.Lock()
	notFound.noDisco = true
	notFound.mu.Unlock()
	mismatch := newFakeIssuer(t, rsa1(t))
	mismatch.mu.Lock()
	mismatch.docIssuer = "https://elsewhere.example"
	mismatch.mu.Unlock()
	noKeys := newFakeIssuer(t)
	downKeys := newFakeIssuer(t, rsa1(t))
	downKeys.fail.Store(true)

	for _, c := range []struct {
		name, src string
		want      []string
	}{
		{"unreachable", oidcYAML(closed.URL, ""), []string{"OIDC discovery for issuer " + closed.URL + " failed"}},
		{"no discovery document", oidcYAML(notFound.URL, ""), []string{"OIDC discovery for issuer " + notFound.URL + " failed", "404"}},
		{"discovery names another issuer", oidcYAML(mismatch.URL, ""), []string{"issuer " + mismatch.URL, `names issuer "https://elsewhere.example"`}},
		{"plain http off loopback", oidcYAML("http://idp.example", ""), []string{"incoming_auth.issuer http://idp.example", "must use https"}},
		{"jwks_url over plain http off loopback", oidcYAML("https://idp.example", "  jwks_url: http://idp.example/jwks\n"), []string{"JWKS URL http://idp.example/jwks", "must use https"}},
		{"no usable key", oidcYAML(noKeys.URL, ""), []string{"signing keys of issuer " + noKeys.URL, "no usable signing key"}},
		{"JWKS down", oidcYAML(downKeys.URL, ""), []string{"signing keys of issuer " + downKeys.URL, "503"}},
	} {
		err := newG(c.src)
		if err == nil {
			t.Errorf("%s: started", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant %q", c.name, err, w)
			}
		}
		if !strings.Contains(err.Error(), "oidc.yaml:") {
			t.Errorf("%s: no position: %v", c.name, err)
		}
	}

	// jwks_url skips discovery.
	if err := newG(oidcYAML(notFound.URL, "  jwks_url: "+notFound.URL+"/jwks\n")); err != nil {
		t.Fatalf("jwks_url: %v", err)
	}
}

func TestOIDCClaimsAndSkew(t *testing.T) {
	f := newFakeIssuer(t, rsa1(t), ec1(t))
	v, err := newOIDCVerifier(t.Context(), loadOIDCConfig(t, oidcYAML(f.URL, "  principal_claim: email\n  groups_claim: roles\n  clock_skew: 5s\n")), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	base := with(f.claims("u-123"), "email", "alice@example.com", "roles", []string{"sre", "oncall"})
	p, err := v.authenticate(t.Context(), ec1(t).sign(t, base))
	if err != nil || p.Name != "alice@example.com" || strings.Join(p.Groups, ",") != "sre,oncall" {
		t.Fatalf("%+v %v", p, err)
	}
	p, err = v.authenticate(t.Context(), ec1(t).sign(t, with(base, "roles", "admin", "aud", "vmcp")))
	if err != nil || strings.Join(p.Groups, ",") != "admin" {
		t.Fatalf("single group: %+v %v", p, err)
	}
	for name, c := range map[string]struct {
		claims map[string]any
		why    string
	}{
		"no principal claim":      {with(base, "email", nil), "token has no email claim"},
		"principal not a string":  {with(base, "email", 42), "token has no email claim"},
		"expired beyond the skew": {with(base, "exp", now-20), "token expired"},
		"nbf beyond the skew":     {with(base, "nbf", now+20), "token not yet valid (nbf)"},
	} {
		_, err := v.authenticate(t.Context(), rsa1(t).sign(t, c.claims))
		if err == nil || err.Error() != c.why {
			t.Errorf("%s: %v, want %s", name, err, c.why)
		}
	}
	// Within the 5s skew.
	if _, err := v.authenticate(t.Context(), rsa1(t).sign(t, with(base, "exp", now-2))); err != nil {
		t.Fatalf("within skew: %v", err)
	}
	// No kid: the keys whose type fits the algorithm are tried.
	if _, err := v.authenticate(t.Context(), testKey{"", jose.ES256, ecKey}.sign(t, base)); err != nil {
		t.Fatalf("no kid: %v", err)
	}
}

// BenchmarkJWTValidation measures one token validation with the key cached
// (the latency JWT auth adds to each request).
func BenchmarkJWTValidation(b *testing.B) {
	for _, k := range []testKey{rsa1(b), ec1(b), ed1(b)} {
		b.Run(string(k.alg), func(b *testing.B) {
			f := newFakeIssuer(b, k)
			src := oidcYAML(f.URL, "")
			cfg, ds := dsl.LoadConfig("oidc.yaml", []byte(src), nil)
			if len(ds) > 0 {
				b.Fatal(ds)
			}
			v, err := newOIDCVerifier(context.Background(), cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			tok := k.sign(b, f.claims("alice"))
			// full: every check (signature, claims), as for a token seen
			// the first time; cached: the same token again.
			b.Run("full", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := v.verify(context.Background(), tok); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("cached", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := v.authenticate(context.Background(), tok); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// A token verified once is accepted from the cache until it expires, and
// the cache is emptied when the issuer's keys are fetched again.
func TestOIDCVerifiedCache(t *testing.T) {
	k := rsa1(t)
	f := newFakeIssuer(t, k)
	cfg, ds := dsl.LoadConfig("oidc.yaml", []byte(oidcYAML(f.URL, "")), nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	v, err := newOIDCVerifier(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok := k.sign(t, f.claims("alice"))
	if _, err := v.authenticate(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	v.cacheMu.Lock()
	n := len(v.verified)
	v.cacheMu.Unlock()
	if n != 1 {
		t.Fatalf("%d cached tokens, want 1", n)
	}
	if err := v.fetchKeys(t.Context()); err != nil {
		t.Fatal(err)
	}
	v.cacheMu.Lock()
	n = len(v.verified)
	v.cacheMu.Unlock()
	if n != 0 {
		t.Fatalf("%d cached tokens after a key fetch, want 0", n)
	}
}
