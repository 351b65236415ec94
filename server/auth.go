package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/vmcp-dev/vmcp/dsl"
)

// Incoming authentication. `anonymous` (the default) makes every caller the
// principal "anonymous"; `tokens` maps static bearer tokens (kept as
// SHA-256 hashes, or read from an env variable or a file) to principals.
// OIDC is specified in the identity issue and not built yet.

// Principal is an authenticated caller.
type Principal struct {
	Name   string
	Groups []string
}

type tokenEntry struct {
	hash [32]byte
	p    Principal
}

// authenticator checks bearer tokens; nil means anonymous.
type authenticator struct {
	tokens []tokenEntry

	mu       sync.Mutex
	sessions map[string]string // MCP session id → principal that created it
}

// newAuthenticator builds the incoming_auth config. Errors name the key.
func newAuthenticator(cfg *dsl.Config) (*authenticator, error) {
	ia := cfg.IncomingAuth
	switch ia.Type.Value {
	case "", "anonymous":
		return nil, nil
	case "tokens":
	default:
		return nil, fmt.Errorf("%s: incoming_auth.type %q is not implemented yet (anonymous and tokens are)", cfg.Src.NodePos(ia.Type.Node), ia.Type.Value)
	}
	a := &authenticator{sessions: map[string]string{}}
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

// lookup finds the principal of a bearer token (constant time per entry).
func (a *authenticator) lookup(token string) (Principal, bool) {
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
		case "/healthz", "/readyz", "/.well-known/oauth-protected-resource":
			h.ServeHTTP(w, r)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			unauthorized(w, r, "missing bearer token")
			return
		}
		p, ok := a.lookup(strings.TrimSpace(tok))
		if !ok {
			unauthorized(w, r, "invalid token")
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
		ctx := context.WithValue(r.Context(), principalKey{}, p.Name)
		h.ServeHTTP(&bindingWriter{ResponseWriter: w, a: a, principal: p.Name}, r.WithContext(ctx))
	})
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

// unauthorized answers 401 the MCP way: WWW-Authenticate names the
// protected-resource metadata (RFC 9728).
func unauthorized(w http.ResponseWriter, r *http.Request, why string) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error="invalid_token", error_description=%q, resource_metadata="%s://%s/.well-known/oauth-protected-resource"`, why, scheme, r.Host))
	apiError(w, http.StatusUnauthorized, "unauthorized", why)
}

// protectedResource serves RFC 9728 metadata.
func protectedResource(w http.ResponseWriter, r *http.Request) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"resource":                 fmt.Sprintf("%s://%s/mcp", scheme, r.Host),
		"bearer_methods_supported": []string{"header"},
		"authorization_servers":    []string{},
	})
}
