package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/backends/outauth"
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/steps"
)

// MaxRequestBody bounds one HTTP request body.
const MaxRequestBody = 4 << 20

// Handler serves /mcp (streamable HTTP, both protocol eras, stateful
// sessions), /healthz, /readyz, /status and /api/v1/runs.
func (g *Gateway) Handler() http.Handler {
	mcpHTTP := mcpserver.NewStreamableHTTPServer(g.mcp,
		// Stateful sessions, shared between replicas on PostgreSQL
		// (sessions.go).
		mcpserver.WithSessionIdManagerResolver(g.sess),
		// The principal the auth middleware found travels into tool calls.
		mcpserver.WithHTTPContextFunc(g.httpContext),
		mcpserver.WithSessionIdleTTL(30*time.Minute),
		mcpserver.WithHeartbeatInterval(30*time.Second),
	)
	mux := http.NewServeMux()
	// tools/list on a 2025-11-25 session is answered from pre-serialised
	// bytes (toolslist.go); everything else reaches mcp-go unchanged.
	mux.Handle("/mcp", limitBody(g.sess.guard(g.tl.wrap(g.mcp, mcpHTTP))))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !g.Ready() {
			http.Error(w, "not ready: backends are still being tried", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, g.Status())
	})
	mux.HandleFunc("GET /api/v1/runs", g.apiList)
	mux.HandleFunc("GET /api/v1/runs/{id}", g.apiGet)
	mux.HandleFunc("POST /api/v1/runs/{id}/resume", g.apiResume)
	mux.HandleFunc("POST /api/v1/runs/{id}/cancel", g.apiCancel)
	var h http.Handler = mux
	if g.auth != nil {
		mux.HandleFunc("GET /.well-known/oauth-protected-resource", protectedResource)
		h = g.auth.wrap(mux)
	}
	return rejectRebinding(g.observeHTTP(h))
}

// httpContext carries what the HTTP middleware found (principal, identity,
// peer, the caller's outgoing-auth subject, the client info of a session
// another replica created) into MCP handlers.
func (g *Gateway) httpContext(ctx context.Context, r *http.Request) context.Context {
	ctx = copyIdentity(ctx, r)
	ctx = withTransport(ctx, r)
	if p, ok := r.Context().Value(principalKey{}).(string); ok {
		ctx = context.WithValue(ctx, principalKey{}, p)
	}
	if subj, ok := outauth.SubjectFrom(r.Context()); ok {
		ctx = outauth.WithSubject(ctx, subj)
	}
	return g.sess.restore(ctx, r) // a session another replica created
}

// rejectRebinding refuses requests that arrive over loopback but name a
// host that is not a loopback name: a web page's DNS-rebinding attack on a
// local vmcp (mcp-go applies the same rule to /mcp).
func rejectRebinding(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remote, _, _ := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(remote); ip != nil && ip.IsLoopback() && !loopbackHost(r.Host) {
			apiError(w, http.StatusForbidden, "forbidden", "Host "+r.Host+" is not allowed for a loopback connection (DNS rebinding protection)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBody)
		}
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := steps.EncodeJSON(v)
	_, _ = w.Write(append(b, '\n'))
}

func apiError(w http.ResponseWriter, code int, kind, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": kind, "message": msg}})
}

func (g *Gateway) apiList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	out, err := g.listRuns(r.Context(), q.Get("status"), q.Get("workflow"), limit, q.Get("cursor"))
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) apiGet(w http.ResponseWriter, r *http.Request) {
	v, err := g.runView(r.Context(), r.PathValue("id"))
	if err != nil {
		code, kind := apiStatus(err)
		apiError(w, code, kind, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (g *Gateway) apiResume(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Action  string         `json:"action"`
		Content map[string]any `json:"content"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", "body must be {\"action\": \"accept|decline|cancel\", \"content\": {…}}: "+err.Error())
		return
	}
	id := r.PathValue("id")
	out, p, err := g.ResumeRun(withSurface(r.Context(), "http"), id, engine.Answer{Action: in.Action, Content: in.Content})
	if err != nil {
		code, kind := apiStatus(err)
		apiError(w, code, kind, err.Error())
		return
	}
	res, err := g.deliver(r.Context(), p, out, &engine.RunOptions{RunID: id, Durable: true}, principal(r.Context()))
	if err != nil {
		apiError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	v, err := g.runView(r.Context(), id)
	if err != nil {
		code, kind := apiStatus(err)
		apiError(w, code, kind, err.Error())
		return
	}
	v["result"] = res
	writeJSON(w, http.StatusOK, v)
}

func (g *Gateway) apiCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := g.cancelRun(r.Context(), id); err != nil {
		code, kind := apiStatus(err)
		apiError(w, code, kind, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "status": "cancelled"})
}

// ServeStdio serves MCP on in/out until ctx ends or in closes.
func (g *Gateway) ServeStdio(ctx context.Context, in io.Reader, out io.Writer) error {
	s := mcpserver.NewStdioServer(g.mcp)
	return s.Listen(ctx, in, out)
}
