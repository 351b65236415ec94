package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/vmcp-dev/vmcp/backends/outauth"
	"github.com/vmcp-dev/vmcp/dsl"
)

// Incoming authentication. `anonymous` (the default) makes every caller the
// principal "anonymous"; `tokens` maps static bearer tokens (kept as
// SHA-256 hashes, or read from an env variable or a file) to principals;
// `oidc` verifies JWTs signed by an OpenID Connect issuer (auth_oidc.go).
// Both strategies share wrap: the 401 answers, the protected-resource
// metadata and the binding of MCP sessions to principals.

// Principal is an authenticated caller.
type Principal struct {
	Name   string
	Groups []string
	// Claims are the verified JWT's claims (OIDC); nil otherwise. Policies
	// read them as principal.claims.
	Claims map[string]any
}

// credentials is an authentication strategy: it turns a bearer token into
// a principal. Errors are authError, whose text is safe to send back.
type credentials interface {
	authenticate(ctx context.Context, token string) (Principal, error)
}

// authError is why a token was refused; its text goes into
// WWW-Authenticate's error_description, so it never holds the token nor
// anything copied from it.
type authError string

func (e authError) Error() string { return string(e) }

// authenticator checks bearer tokens; nil means anonymous.
type authenticator struct {
	creds credentials
	// authServers and scopes are advertised in the RFC 9728 metadata.
	authServers []string
	scopes      []string
	log         *slog.Logger

	mu       sync.Mutex
	sessions map[string]string // MCP session id → principal that created it
}

// newAuthenticator builds the incoming_auth config. Errors name the key.
// For oidc it runs discovery and fetches the signing keys: vmcp does not
// start half-configured.
func newAuthenticator(cfg *dsl.Config) (*authenticator, error) {
	ia := cfg.IncomingAuth
	// log is slog.Default until the gateway sets its own logger.
	a := &authenticator{sessions: map[string]string{}, log: slog.Default(), authServers: []string{}}
	switch ia.Type.Value {
	case "", dsl.AuthAnonymous:
		return nil, nil
	case dsl.AuthTokens:
		st, err := newStaticTokens(cfg)
		if err != nil {
			return nil, err
		}
		a.creds = st
	case dsl.AuthOIDC:
		v, err := newOIDCVerifier(context.Background(), cfg, a.logger)
		if err != nil {
			return nil, err
		}
		a.creds = v
		a.authServers = []string{v.issuer}
		for _, sc := range ia.Scopes {
			a.scopes = append(a.scopes, sc.Value)
		}
	default:
		return nil, fmt.Errorf("%s: incoming_auth.type %q is not known (anonymous, tokens and oidc are)", cfg.Src.NodePos(ia.Type.Node), ia.Type.Value)
	}
	return a, nil
}

// logger is how strategies log (a JWKS refresh that failed, say); never
// with a token.
func (a *authenticator) logger() *slog.Logger { return a.log }

type tokenEntry struct {
	hash [32]byte
	p    Principal
}

// staticTokens is incoming_auth type tokens.
type staticTokens struct {
	tokens []tokenEntry
}

func newStaticTokens(cfg *dsl.Config) (*staticTokens, error) {
	ia := cfg.IncomingAuth
	a := &staticTokens{}
	for i, t := range ia.Tokens {
		where := fmt.Sprintf("%s: incoming_auth.tokens[%d] (%s)", cfg.Src.NodePos(t.Node), i, t.Principal.Value)
		var secret string
		switch {
		case t.SHA256.Value != "":
			b, err := hex.DecodeString(strings.TrimSpace(t.SHA256.Value))
			if err != nil || len(b) != 32 {
				return nil, fmt.Errorf("%s: sha256 must be 64 hex digits (the SHA-256 of the token)", where)
			}
			var h [32]byte
			copy(h[:], b)
			a.tokens = append(a.tokens, tokenEntry{hash: h, p: principalOf(t)})
			continue
		case t.TokenEnv.Value != "":
			v, ok := os.LookupEnv(t.TokenEnv.Value)
			if !ok || v == "" {
				return nil, fmt.Errorf("%s: environment variable %s is not set", where, t.TokenEnv.Value)
			}
			secret = v
		case t.TokenFile.Value != "":
			b, err := os.ReadFile(t.TokenFile.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: token_file: %v", where, err)
			}
			secret = strings.TrimSpace(string(b))
		}
		if secret == "" {
			return nil, fmt.Errorf("%s: one of sha256, token_env or token_file is needed", where)
		}
		a.tokens = append(a.tokens, tokenEntry{hash: sha256.Sum256([]byte(secret)), p: principalOf(t)})
	}
	if len(a.tokens) == 0 {
		return nil, fmt.Errorf("%s: incoming_auth type tokens needs at least one token", cfg.Src.NodePos(ia.Node))
	}
	return a, nil
}

func principalOf(t *dsl.Token) Principal {
	p := Principal{Name: t.Principal.Value}
	for _, g := range t.Groups {
		p.Groups = append(p.Groups, g.Value)
	}
	return p
}

func (a *staticTokens) authenticate(_ context.Context, token string) (Principal, error) {
	if p, ok := a.lookup(token); ok {
		return p, nil
	}
	return Principal{}, authError("invalid token")
}

// lookup finds the principal of a bearer token (constant time per entry).
func (a *staticTokens) lookup(token string) (Principal, bool) {
	h := sha256.Sum256([]byte(token))
	var found Principal
	ok := false
	for _, e := range a.tokens {
		if subtle.ConstantTimeCompare(h[:], e.hash[:]) == 1 {
			found, ok = e.p, true
		}
	}
	return found, ok
}

// wrap authenticates every request except health probes and the
// protected-resource metadata, and binds MCP sessions to the principal
// that created them: another principal's token on that session is refused
// and the session is not disturbed.
func (a *authenticator) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz":
			h.ServeHTTP(w, r)
			return
		case "/.well-known/oauth-protected-resource":
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), authKey{}, a)))
			return
		}
		tok, ok := bearerToken(r)
		if !ok {
			// RFC 6750 §3.1: no credentials, no error code.
			a.challenge(w, r, "", "missing bearer token")
			return
		}
		p, err := a.creds.authenticate(r.Context(), tok)
		if err != nil {
			why := "invalid token"
			var ae authError
			if errors.As(err, &ae) {
				why = string(ae)
			}
			a.challenge(w, r, "invalid_token", why)
			return
		}
		if sid := r.Header.Get("Mcp-Session-Id"); sid != "" {
			a.mu.Lock()
			owner, bound := a.sessions[sid]
			a.mu.Unlock()
			if bound && owner != p.Name {
				apiError(w, http.StatusForbidden, "forbidden", "this MCP session belongs to another principal")
				return
			}
		}
		ctx := withIdentity(context.WithValue(r.Context(), principalKey{}, p.Name), p)
		// The verified token travels (redacted when printed) to the
		// backends whose outgoing auth exchanges or forwards it.
		ctx = outauth.WithSubject(ctx, outauth.Subject{Principal: p.Name, Token: outauth.Secret(tok)})
		h.ServeHTTP(&bindingWriter{ResponseWriter: w, a: a, principal: p.Name}, r.WithContext(ctx))
	})
}

// bearerToken reads `Authorization: Bearer <token>` (the scheme is
// case-insensitive, RFC 7235).
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// bindingWriter records the session a response creates.
type bindingWriter struct {
	http.ResponseWriter
	a         *authenticator
	principal string
	done      bool
}

func (b *bindingWriter) WriteHeader(code int) {
	b.bind()
	b.ResponseWriter.WriteHeader(code)
}

func (b *bindingWriter) Write(p []byte) (int, error) {
	b.bind()
	return b.ResponseWriter.Write(p)
}

func (b *bindingWriter) Flush() {
	if f, ok := b.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (b *bindingWriter) Unwrap() http.ResponseWriter { return b.ResponseWriter }

func (b *bindingWriter) bind() {
	if b.done {
		return
	}
	b.done = true
	if sid := b.Header().Get("Mcp-Session-Id"); sid != "" {
		b.a.mu.Lock()
		if _, bound := b.a.sessions[sid]; !bound {
			b.a.sessions[sid] = b.principal
		}
		b.a.mu.Unlock()
	}
}

// authKey carries the authenticator to protectedResource.
type authKey struct{}

// challenge answers 401 the MCP way: WWW-Authenticate names the
// protected-resource metadata (RFC 9728) and the scopes to ask for. code
// is empty when the request carried no token (RFC 6750 §3.1).
func (a *authenticator) challenge(w http.ResponseWriter, r *http.Request, code, why string) {
	var b strings.Builder
	b.WriteString("Bearer ")
	if code != "" {
		fmt.Fprintf(&b, "error=%q, error_description=%q, ", code, why)
	}
	fmt.Fprintf(&b, "resource_metadata=%q", baseURL(r)+"/.well-known/oauth-protected-resource")
	if len(a.scopes) > 0 {
		fmt.Fprintf(&b, ", scope=%q", strings.Join(a.scopes, " "))
	}
	w.Header().Set("WWW-Authenticate", b.String())
	apiError(w, http.StatusUnauthorized, "unauthorized", why)
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// protectedResource serves RFC 9728 metadata: the authorization servers
// (the OIDC issuer) and the scopes configured.
func protectedResource(w http.ResponseWriter, r *http.Request) {
	md := map[string]any{
		"resource":                 baseURL(r) + "/mcp",
		"bearer_methods_supported": []string{"header"},
		"authorization_servers":    []string{},
	}
	if a, ok := r.Context().Value(authKey{}).(*authenticator); ok {
		md["authorization_servers"] = a.authServers
		if len(a.scopes) > 0 {
			md["scopes_supported"] = a.scopes
		}
	}
	writeJSON(w, http.StatusOK, md)
}
