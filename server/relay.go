package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/backends"
)

// relay carries what backends send towards clients to the client whose
// call caused it (ctx is that call's context, carrying its session).
type relay struct{ g *Gateway }

// relayWait bounds how long a backend's request waits for the client when
// the call itself has no deadline.
const relayWait = 5 * time.Minute

func (r relay) check(ctx context.Context, backend, what string, declared func(mcp.ClientCapabilities) bool) error {
	caps, modern := clientCaps(ctx)
	switch {
	case backends.Ambiguous(ctx):
		return fmt.Errorf("backend %q asked for %s while calls of several principals were in flight on it (a stdio backend does not say which call asks); refused rather than asking the wrong person", backend, what)
	case modern && bridgeOf(ctx) == nil:
		return fmt.Errorf("backend %q asked for %s during a request that vmcp cannot pause for a 2026-07-28 client (only plain tool calls relay backend requests, as input_required)", backend, what)
	case !modern && mcpserver.ClientSessionFromContext(ctx) == nil:
		return fmt.Errorf("backend %q asked for %s outside of any client call", backend, what)
	case !declared(caps):
		return fmt.Errorf("backend %q asked for %s, but the calling client did not declare it", backend, what)
	}
	return nil
}

func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, relayWait)
}

func (r relay) Elicit(ctx context.Context, backend string, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	if err := r.check(ctx, backend, "elicitation", func(c mcp.ClientCapabilities) bool { return c.Elicitation != nil }); err != nil {
		return nil, err
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	if c := bridgeOf(ctx); c != nil {
		a, err := c.ask(ctx, &bridgeAsk{method: mcp.MethodElicitationCreate, elicit: req.Params})
		return a.Elicitation, err
	}
	return r.g.mcp.RequestElicitation(ctx, req)
}

func (r relay) CreateMessage(ctx context.Context, backend string, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	if err := r.check(ctx, backend, "sampling", func(c mcp.ClientCapabilities) bool { return c.Sampling != nil }); err != nil {
		return nil, err
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	if c := bridgeOf(ctx); c != nil {
		a, err := c.ask(ctx, &bridgeAsk{method: mcp.MethodSamplingCreateMessage, sample: req.CreateMessageParams})
		return a.Sampling, err
	}
	return r.g.mcp.RequestSampling(ctx, req)
}

func (r relay) ListRoots(ctx context.Context, backend string, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	if r.check(ctx, backend, "roots", func(c mcp.ClientCapabilities) bool { return c.Roots != nil }) != nil {
		return &mcp.ListRootsResult{Roots: []mcp.Root{}}, nil
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	if c := bridgeOf(ctx); c != nil {
		a, err := c.ask(ctx, &bridgeAsk{method: mcp.MethodListRoots})
		return a.Roots, err
	}
	return r.g.mcp.RequestRoots(ctx, req)
}

func (r relay) Notify(ctx context.Context, backend string, n mcp.JSONRPCNotification) {
	switch n.Method {
	case "notifications/progress":
		if mcpserver.ClientSessionFromContext(ctx) == nil {
			return
		}
		if notifyFast(ctx, n.Method, n.Params.AdditionalFields) {
			return // on the response of a call served without mcp-go
		}
		_ = r.g.mcp.SendNotificationToClient(ctx, n.Method, n.Params.AdditionalFields)
	case "notifications/message":
		if backends.Ambiguous(ctx) {
			return // several principals' calls in flight: nobody's for sure
		}
		// A log message during a call goes to that call's client; one
		// outside any call was caused by no client and goes to every
		// session (backends filter by the level clients set, which vmcp
		// forwards).
		if mcpserver.ClientSessionFromContext(ctx) == nil {
			r.g.mcp.SendNotificationToAllClients(n.Method, n.Params.AdditionalFields)
			return
		}
		if notifyFast(ctx, n.Method, n.Params.AdditionalFields) {
			return // on the response of a call served without mcp-go
		}
		_ = r.g.mcp.SendNotificationToClient(ctx, n.Method, n.Params.AdditionalFields)
	case "notifications/resources/updated":
		uri, _ := n.Params.AdditionalFields["uri"].(string)
		for _, sid := range r.g.subs.sessions(uri) {
			_ = r.g.mcp.SendNotificationToSpecificClient(sid, n.Method, n.Params.AdditionalFields)
		}
	}
}

// subscriptions tracks which sessions subscribed to which resource URIs.
type subscriptions struct {
	mu    sync.Mutex
	byURI map[string]map[string]bool
}

func newSubscriptions() *subscriptions { return &subscriptions{byURI: map[string]map[string]bool{}} }

func (s *subscriptions) add(uri, session string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := len(s.byURI[uri]) == 0
	if s.byURI[uri] == nil {
		s.byURI[uri] = map[string]bool{}
	}
	s.byURI[uri][session] = true
	return first
}

func (s *subscriptions) remove(uri, session string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byURI[uri], session)
	if len(s.byURI[uri]) == 0 {
		delete(s.byURI, uri)
		return true
	}
	return false
}

func (s *subscriptions) dropSession(session string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last []string
	for uri, m := range s.byURI {
		if m[session] {
			delete(m, session)
			if len(m) == 0 {
				delete(s.byURI, uri)
				last = append(last, uri)
			}
		}
	}
	return last
}

func (s *subscriptions) sessions(uri string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.byURI[uri]))
	for sid := range s.byURI[uri] {
		out = append(out, sid)
	}
	return out
}
