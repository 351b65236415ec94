package outauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tokenEndpoint is a local RFC 6749/8693 token endpoint: it checks the
// client's Basic credentials and issues "issued-<n>-for-<subject>".
type tokenEndpoint struct {
	srv       *httptest.Server
	hits      atomic.Int32
	expiresIn int
	mu        sync.Mutex
	forms     []map[string]string
	fail      string // an OAuth error code to answer 400 with
}

func newTokenEndpoint(t testing.TB, id, secret string) *tokenEndpoint {
	te := &tokenEndpoint{expiresIn: 3600}
	te.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := te.hits.Add(1)
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		f := map[string]string{}
		for k := range r.PostForm {
			f[k] = r.PostForm.Get(k)
		}
		te.mu.Lock()
		te.forms = append(te.forms, f)
		fail := te.fail
		te.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if u, p, ok := r.BasicAuth(); id != "" && (!ok || u != id || p != secret) {
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"secret was ` + p + `"}`))
			return
		}
		if fail != "" {
			w.WriteHeader(400)
			_, _ = fmt.Fprintf(w, `{"error":%q,"error_description":"subject %s"}`, fail, f["subject_token"])
			return
		}
		sub := f["subject_token"]
		if sub == "" {
			sub = "service"
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("issued-%d-for-%s", n, sub), "token_type": "Bearer", "expires_in": te.expiresIn,
			"issued_token_type": tokenTypeAccessToken})
	}))
	t.Cleanup(te.srv.Close)
	return te
}

func (te *tokenEndpoint) form(i int) map[string]string {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.forms[i]
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func apply(t *testing.T, s *Strategy, subj *Subject) (http.Header, error) {
	t.Helper()
	h := http.Header{}
	err := s.Apply(context.Background(), subj, h)
	return h, err
}

func TestTokenExchangeCachesPerPrincipalAndToken(t *testing.T) {
	te := newTokenEndpoint(t, "vmcp", "s3cret-client")
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	s, err := New(Config{Backend: "pd", Type: TokenExchange, TokenURL: te.srv.URL, Audience: "pd-api", Scopes: []string{"a", "b"},
		ClientID: "vmcp", ClientSecret: "s3cret-client"}, &Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	alice := &Subject{Principal: "alice", Token: "alice-token"}
	h, err := apply(t, s, alice)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Get("Authorization"); got != "Bearer issued-1-for-alice-token" {
		t.Fatalf("Authorization = %q", got)
	}
	f := te.form(0)
	want := map[string]string{"grant_type": grantTokenExchange, "subject_token": "alice-token", "subject_token_type": tokenTypeAccessToken,
		"requested_token_type": tokenTypeAccessToken, "audience": "pd-api", "scope": "a b"}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("form %s = %q, want %q", k, f[k], v)
		}
	}
	if _, ok := f["client_id"]; ok {
		t.Error("client_id sent in the form although Basic auth is used")
	}
	// Cached: no second request.
	h, _ = apply(t, s, alice)
	if got := h.Get("Authorization"); got != "Bearer issued-1-for-alice-token" || te.hits.Load() != 1 {
		t.Fatalf("second call: %q, %d token requests", got, te.hits.Load())
	}
	// Another principal, and the same principal with a new token, get
	// their own exchange.
	h, _ = apply(t, s, &Subject{Principal: "bob", Token: "bob-token"})
	if got := h.Get("Authorization"); got != "Bearer issued-2-for-bob-token" {
		t.Fatalf("bob: %q", got)
	}
	h, _ = apply(t, s, &Subject{Principal: "alice", Token: "alice-token-2"})
	if got := h.Get("Authorization"); got != "Bearer issued-3-for-alice-token-2" {
		t.Fatalf("alice's new token: %q", got)
	}
	// Shortly before expiry (3600s - 30s margin), a new exchange.
	clk.t = clk.t.Add(3569 * time.Second)
	h, _ = apply(t, s, alice)
	if got := h.Get("Authorization"); got != "Bearer issued-1-for-alice-token" {
		t.Fatalf("before the margin: %q", got)
	}
	clk.t = clk.t.Add(2 * time.Second)
	h, _ = apply(t, s, alice)
	if got := h.Get("Authorization"); got != "Bearer issued-4-for-alice-token" {
		t.Fatalf("inside the margin: %q", got)
	}
	// The cache holds hashes only.
	s.cache.mu.Lock()
	for k := range s.cache.m {
		if strings.Contains(string(k[:]), "alice") {
			t.Error("cache key holds the principal or token in clear")
		}
	}
	s.cache.mu.Unlock()
	// Service requests (no caller) carry no user token.
	h, err = apply(t, s, nil)
	if err != nil || h.Get("Authorization") != "" {
		t.Fatalf("service request: %v %q", err, h.Get("Authorization"))
	}
	// A caller without a token is refused, naming the backend.
	_, err = apply(t, s, &Subject{Principal: "anonymous"})
	if !errors.Is(err, ErrNoCallerToken) || !strings.Contains(err.Error(), `backend "pd"`) {
		t.Fatalf("no caller token: %v", err)
	}
}

func TestConcurrentCallersShareOneExchange(t *testing.T) {
	te := newTokenEndpoint(t, "", "")
	s, err := New(Config{Backend: "pd", Type: TokenExchange, TokenURL: te.srv.URL, ClientID: "public"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := apply(t, s, &Subject{Principal: "alice", Token: "tok"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := te.hits.Load(); n != 1 {
		t.Fatalf("%d token requests for one key, want 1", n)
	}
	if te.form(0)["client_id"] != "public" {
		t.Errorf("a public client sends client_id in the form: %v", te.form(0))
	}
}

func TestTokenEndpointErrorsHoldNoSecret(t *testing.T) {
	te := newTokenEndpoint(t, "vmcp", "right-secret")
	s, _ := New(Config{Backend: "pd", Type: TokenExchange, TokenURL: te.srv.URL, ClientID: "vmcp", ClientSecret: "wrong-secret"}, nil)
	_, err := apply(t, s, &Subject{Principal: "alice", Token: "alice-token"})
	if err == nil || !strings.Contains(err.Error(), "answered 401 (invalid_client)") {
		t.Fatalf("wrong client secret: %v", err)
	}
	te2 := newTokenEndpoint(t, "", "")
	te2.fail = "invalid_grant"
	s2, _ := New(Config{Backend: "pd", Type: TokenExchange, TokenURL: te2.srv.URL}, nil)
	_, err2 := apply(t, s2, &Subject{Principal: "alice", Token: "alice-token"})
	if err2 == nil || !strings.Contains(err2.Error(), "answered 400 (invalid_grant)") {
		t.Fatalf("refused exchange: %v", err2)
	}
	for _, e := range []error{err, err2} {
		for _, secret := range []string{"wrong-secret", "alice-token"} {
			if strings.Contains(e.Error(), secret) {
				t.Errorf("error %q holds a secret", e)
			}
		}
	}
	// A failed exchange is not cached.
	te2.mu.Lock()
	te2.fail = ""
	te2.mu.Unlock()
	if _, err := apply(t, s2, &Subject{Principal: "alice", Token: "alice-token"}); err != nil {
		t.Fatal(err)
	}
}

func TestClientCredentials(t *testing.T) {
	te := newTokenEndpoint(t, "svc", "cc-secret")
	te.expiresIn = 40 // short-lived: margin is half, 20s
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	s, err := New(Config{Backend: "tickets", Type: ClientCredentials, TokenURL: te.srv.URL, ClientID: "svc", ClientSecret: "cc-secret",
		Scopes: []string{"tickets.write"}, Headers: map[string]Secret{"X-Tenant": "acme"}}, &Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []*Subject{nil, {Principal: "alice", Token: "alice-token"}} {
		h, err := apply(t, s, subj)
		if err != nil {
			t.Fatal(err)
		}
		if h.Get("Authorization") != "Bearer issued-1-for-service" || h.Get("X-Tenant") != "acme" {
			t.Fatalf("headers %v", h)
		}
	}
	if te.hits.Load() != 1 || te.form(0)["grant_type"] != "client_credentials" || te.form(0)["scope"] != "tickets.write" {
		t.Fatalf("%d requests, form %v", te.hits.Load(), te.form(0))
	}
	clk.t = clk.t.Add(21 * time.Second)
	h, _ := apply(t, s, nil)
	if h.Get("Authorization") != "Bearer issued-2-for-service" {
		t.Fatalf("after 21s of a 40s token: %v", h)
	}
}

func TestServiceCredentialsOfAUserBoundStrategy(t *testing.T) {
	te := newTokenEndpoint(t, "vmcp", "sec")
	s, err := New(Config{Backend: "pd", Type: TokenExchange, TokenURL: te.srv.URL, ClientID: "vmcp", ClientSecret: "sec",
		Service: &Config{Type: ClientCredentials, TokenURL: te.srv.URL, ClientID: "vmcp", ClientSecret: "sec"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := apply(t, s, nil)
	if err != nil || h.Get("Authorization") != "Bearer issued-1-for-service" {
		t.Fatalf("service request: %v %v", err, h)
	}
	h, _ = apply(t, s, &Subject{Principal: "alice", Token: "alice-token"})
	if h.Get("Authorization") != "Bearer issued-2-for-alice-token" {
		t.Fatalf("alice: %v", h)
	}
	for _, c := range []Config{
		{Backend: "b", Type: Headers, Headers: map[string]Secret{"X": "y"}, Service: &Config{Type: Headers, Headers: map[string]Secret{"X": "y"}}},
		{Backend: "b", Type: PassThrough, Service: &Config{Type: PassThrough}},
		{Backend: "b", Type: PassThrough, Service: &Config{Type: Headers}},
	} {
		if _, err := New(c, nil); err == nil || !strings.Contains(err.Error(), `backend "b"`) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func TestStaticStrategies(t *testing.T) {
	s, err := New(Config{Backend: "b", Type: Headers, Headers: map[string]Secret{"X-Api-Key": "k-123"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := apply(t, s, &Subject{Principal: "alice", Token: "alice-token"})
	if h.Get("X-Api-Key") != "k-123" || h.Get("Authorization") != "" {
		t.Fatalf("headers: %v", h)
	}
	var logs strings.Builder
	pt, _ := New(Config{Backend: "b", Type: PassThrough}, &Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !strings.Contains(logs.String(), "pass_through") || !strings.Contains(logs.String(), "backend=b") {
		t.Errorf("no startup warning for pass_through: %q", logs.String())
	}
	h, _ = apply(t, pt, &Subject{Principal: "alice", Token: "alice-token"})
	if h.Get("Authorization") != "Bearer alice-token" || !pt.UserBound() {
		t.Fatalf("pass_through: %v", h)
	}
	r, _ := New(Config{Backend: "b", Type: Refuse}, nil)
	if _, err := apply(t, r, nil); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `backend "b"`) {
		t.Fatalf("error strategy: %v", err)
	}
	for _, c := range []Config{
		{Backend: "b", Type: Headers},
		{Backend: "b", Type: TokenExchange},
		{Backend: "b", Type: TokenExchange, TokenURL: "http://idp.example.com/token"},
		{Backend: "b", Type: ClientCredentials, TokenURL: "https://idp.example.com/token", ClientID: "x"},
		{Backend: "b", Type: "kerberos"},
	} {
		if _, err := New(c, nil); err == nil || !strings.Contains(err.Error(), `backend "b"`) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func TestSecretRedacts(t *testing.T) {
	s := Subject{Principal: "alice", Token: "alice-token"}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "subject", s, "token", s.Token)
	b, _ := json.Marshal(s)
	for _, out := range []string{fmt.Sprintf("%v %+v %#v %s", s, s, s, s.Token), logs.String(), string(b)} {
		if strings.Contains(out, "alice-token") {
			t.Errorf("token printed: %s", out)
		}
	}
}

// BenchmarkCachedTokenExchange is the per-call cost of a token exchange
// once the token is cached (hashing the key, the lookup, the headers).
func BenchmarkCachedTokenExchange(b *testing.B) {
	te := newTokenEndpoint(b, "", "")
	s, err := New(Config{Backend: "pd", Type: TokenExchange, TokenURL: te.srv.URL, Audience: "pd-api", Scopes: []string{"incidents.read"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	subj := &Subject{Principal: "alice", Token: Secret(strings.Repeat("x", 900))} // JWT-sized
	h := http.Header{}
	if err := s.Apply(context.Background(), subj, h); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Apply(context.Background(), subj, h); err != nil {
			b.Fatal(err)
		}
	}
	if te.hits.Load() != 1 {
		b.Fatalf("%d token requests", te.hits.Load())
	}
}
