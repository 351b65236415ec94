package server

import (
	"context"
	"fmt"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// relay carries what backends send towards clients to the client whose
// call caused it (ctx is that call's context, carrying its session).
type relay struct{ g *Gateway }

func (r relay) Elicit(ctx context.Context, backend string, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	caps, modern := clientCaps(ctx)
	if mcpserver.ClientSessionFromContext(ctx) == nil || modern || caps.Elicitation == nil {
		return nil, fmt.Errorf("backend %q asked for elicitation, but the calling client cannot answer one", backend)
	}
	return r.g.mcp.RequestElicitation(ctx, req)
}

func (r relay) CreateMessage(ctx context.Context, backend string, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	caps, modern := clientCaps(ctx)
	if mcpserver.ClientSessionFromContext(ctx) == nil || modern || caps.Sampling == nil {
		return nil, fmt.Errorf("backend %q asked for sampling, but the calling client does not offer it", backend)
	}
	return r.g.mcp.RequestSampling(ctx, req)
}

func (r relay) ListRoots(ctx context.Context, backend string, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	caps, modern := clientCaps(ctx)
	if mcpserver.ClientSessionFromContext(ctx) == nil || modern || caps.Roots == nil {
		return &mcp.ListRootsResult{Roots: []mcp.Root{}}, nil
	}
	return r.g.mcp.RequestRoots(ctx, req)
}

func (r relay) Notify(ctx context.Context, backend string, n mcp.JSONRPCNotification) {
	switch n.Method {
	case "notifications/progress", "notifications/message":
		if mcpserver.ClientSessionFromContext(ctx) == nil {
			return
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
