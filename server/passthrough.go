package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/backends"
)

// Resources, resource templates, prompts and completions pass through to
// the backend that owns them. Resource URIs are never rewritten (a
// duplicate URI goes to the earliest backend in config order, with a
// warning); prompts follow the tool naming.

// rawResourceContents passes one resource content item through unchanged.
type rawResourceContents struct {
	mcp.TextResourceContents
	raw json.RawMessage
}

func (r rawResourceContents) MarshalJSON() ([]byte, error) { return r.raw, nil }

// samePassthrough reports whether two snapshots offer the same
// resources, templates and prompts (same backends, same order, same
// bytes). installResources is skipped then: each of mcp-go's setters
// tells every session its list changed, and a session with a pending
// notification is answered as a stream, off the fast paths.
func samePassthrough(a, b *backends.Snapshot) bool {
	if a == nil || b == nil {
		return a == b
	}
	if !slices.Equal(a.Order, b.Order) {
		return false
	}
	same := func(x, y map[string][]json.RawMessage) bool {
		return maps.EqualFunc(x, y, func(p, q []json.RawMessage) bool {
			return slices.EqualFunc(p, q, func(r, s json.RawMessage) bool { return bytes.Equal(r, s) })
		})
	}
	return same(a.Resources, b.Resources) && same(a.Templates, b.Templates) && same(a.Prompts, b.Prompts)
}

// installResources registers the healthy backends' resources, templates
// and prompts with mcp-go.
func (g *Gateway) installResources(cat *catalog) {
	snap := cat.snap
	var resources []mcpserver.ServerResource
	owner := map[string]string{}
	for _, b := range snap.Order {
		for _, raw := range snap.Resources[b] {
			var r mcp.Resource
			if err := json.Unmarshal(raw, &r); err != nil || r.URI == "" {
				continue
			}
			if prev, dup := owner[r.URI]; dup {
				g.log.Warn("resource offered by two backends; the first in config order serves it", "uri", r.URI, "backend", prev, "also", b)
				continue
			}
			owner[r.URI] = b
			backend := b
			resources = append(resources, mcpserver.ServerResource{Resource: r, Handler: g.readHandler(backend)})
		}
	}
	g.mcp.SetResources(resources...)

	var templates []mcpserver.ServerResourceTemplate
	seenTpl := map[string]bool{}
	for _, b := range snap.Order {
		for _, raw := range snap.Templates[b] {
			var t mcp.ResourceTemplate
			if err := json.Unmarshal(raw, &t); err != nil || t.URITemplate == nil {
				continue
			}
			key := t.URITemplate.Raw()
			if seenTpl[key] {
				continue
			}
			seenTpl[key] = true
			templates = append(templates, mcpserver.ServerResourceTemplate{Template: t, Handler: mcpserver.ResourceTemplateHandlerFunc(g.readHandler(b))})
		}
	}
	g.mcp.SetResourceTemplates(templates...)

	var prompts []mcpserver.ServerPrompt
	seen := map[string]string{}
	for _, b := range snap.Order {
		for _, raw := range snap.Prompts[b] {
			var p mcp.Prompt
			if err := json.Unmarshal(raw, &p); err != nil || p.Name == "" {
				continue
			}
			orig := p.Name
			p.Name = g.promptName(b, orig)
			if prev, dup := seen[p.Name]; dup {
				g.log.Warn("prompt name offered by two backends; the first in config order serves it", "prompt", p.Name, "backend", prev, "also", b)
				continue
			}
			seen[p.Name] = b
			prompts = append(prompts, mcpserver.ServerPrompt{Prompt: p, Handler: g.promptHandler(b, orig)})
		}
	}
	g.mcp.SetPrompts(prompts...)
}

// promptName applies the tool naming to a prompt (prefix strategy only;
// the others keep bare names).
func (g *Gateway) promptName(backend, name string) string {
	a := g.cfg.Aggregation
	if a.ConflictResolution.Value != "" && a.ConflictResolution.Value != "prefix" {
		return name
	}
	format := a.PrefixFormat.Value
	if format == "" {
		format = "{backend}_"
	}
	return strings.ReplaceAll(format, "{backend}", backend) + name
}

// promptBackend finds the backend and original name of an advertised
// prompt.
func (g *Gateway) promptBackend(name string) (string, string, bool) {
	cat := g.cat.Load()
	for _, b := range cat.snap.Order {
		for _, raw := range cat.snap.Prompts[b] {
			var p struct {
				Name string `json:"name"`
			}
			if json.Unmarshal(raw, &p) == nil && g.promptName(b, p.Name) == name {
				return b, p.Name, true
			}
		}
	}
	return "", "", false
}

func (g *Gateway) readHandler(backend string) mcpserver.ResourceHandlerFunc {
	return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		if err := g.authorizeResource(ctx, req.Params.URI, backend); err != nil {
			return nil, err
		}
		raw, err := g.mgr.Request(clientCtx(ctx), backend, "resources/read", map[string]any{"uri": req.Params.URI})
		if err != nil {
			return nil, err
		}
		var res struct {
			Contents []json.RawMessage `json:"contents"`
		}
		if err := json.Unmarshal(raw, &res); err != nil {
			return nil, fmt.Errorf("backend %q: unreadable resources/read result: %w", backend, err)
		}
		out := make([]mcp.ResourceContents, len(res.Contents))
		for i, c := range res.Contents {
			out[i] = rawResourceContents{raw: c}
		}
		return out, nil
	}
}

func (g *Gateway) promptHandler(backend, orig string) mcpserver.PromptHandlerFunc {
	return func(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		if err := g.authorizePrompt(ctx, req.Params.Name, backend); err != nil {
			return nil, err
		}
		params := map[string]any{"name": orig}
		if len(req.Params.Arguments) > 0 {
			params["arguments"] = req.Params.Arguments
		}
		raw, err := g.mgr.Request(clientCtx(ctx), backend, "prompts/get", params)
		if err != nil {
			return nil, err
		}
		var res struct {
			Description string `json:"description"`
			Messages    []struct {
				Role    mcp.Role        `json:"role"`
				Content json.RawMessage `json:"content"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(raw, &res); err != nil {
			return nil, fmt.Errorf("backend %q: unreadable prompts/get result: %w", backend, err)
		}
		out := &mcp.GetPromptResult{Description: res.Description}
		for _, m := range res.Messages {
			out.Messages = append(out.Messages, mcp.PromptMessage{Role: m.Role, Content: rawContent{raw: m.Content}})
		}
		return out, nil
	}
}

// completions route completion/complete to the owning backend.
type completions struct{ g *Gateway }

func (c completions) CompletePromptArgument(ctx context.Context, name string, arg mcp.CompleteArgument, cc mcp.CompleteContext) (*mcp.Completion, error) {
	b, orig, ok := c.g.promptBackend(name)
	if !ok {
		return nil, fmt.Errorf("unknown prompt %q", name)
	}
	return c.complete(ctx, b, map[string]any{"type": "ref/prompt", "name": orig}, arg, cc)
}

func (c completions) CompleteResourceArgument(ctx context.Context, uri string, arg mcp.CompleteArgument, cc mcp.CompleteContext) (*mcp.Completion, error) {
	cat := c.g.cat.Load()
	for _, b := range cat.snap.Order {
		for _, raw := range cat.snap.Templates[b] {
			var t struct {
				URITemplate string `json:"uriTemplate"`
			}
			if json.Unmarshal(raw, &t) == nil && t.URITemplate == uri {
				return c.complete(ctx, b, map[string]any{"type": "ref/resource", "uri": uri}, arg, cc)
			}
		}
	}
	return &mcp.Completion{Values: []string{}}, nil
}

func (c completions) complete(ctx context.Context, backend string, ref map[string]any, arg mcp.CompleteArgument, cc mcp.CompleteContext) (*mcp.Completion, error) {
	params := map[string]any{"ref": ref, "argument": arg}
	if len(cc.Arguments) > 0 {
		params["context"] = cc
	}
	raw, err := c.g.mgr.Request(clientCtx(ctx), backend, "completion/complete", params)
	if err != nil {
		return nil, err
	}
	var res struct {
		Completion mcp.Completion `json:"completion"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, err
	}
	if res.Completion.Values == nil {
		res.Completion.Values = []string{}
	}
	return &res.Completion, nil
}

// resourceBackend finds the backend serving a resource URI.
func (g *Gateway) resourceBackend(uri string) (string, bool) {
	cat := g.cat.Load()
	for _, b := range cat.snap.Order {
		for _, raw := range cat.snap.Resources[b] {
			var r struct {
				URI string `json:"uri"`
			}
			if json.Unmarshal(raw, &r) == nil && r.URI == uri {
				return b, true
			}
		}
	}
	return "", false
}

// installHooks wires logging levels and subscriptions through to
// backends.
func (g *Gateway) installHooks(h *mcpserver.Hooks) {
	h.AddAfterSetLevel(func(ctx context.Context, id any, req *mcp.SetLevelRequest, _ *mcp.EmptyResult) {
		g.mgr.SetLevel(context.WithoutCancel(ctx), req.Params.Level)
	})
	h.AddAfterSubscribe(func(ctx context.Context, id any, req *mcp.SubscribeRequest, _ *mcp.EmptyResult) {
		s := mcpserver.ClientSessionFromContext(ctx)
		if s == nil {
			return
		}
		if g.subs.add(req.Params.URI, s.SessionID()) {
			if b, ok := g.resourceBackend(req.Params.URI); ok {
				if _, err := g.mgr.Request(ctx, b, "resources/subscribe", map[string]any{"uri": req.Params.URI}); err != nil {
					g.log.WarnContext(ctx, "subscribe at backend failed", "backend", b, "uri", req.Params.URI, "err", err)
				}
			}
		}
	})
	h.AddAfterUnsubscribe(func(ctx context.Context, id any, req *mcp.UnsubscribeRequest, _ *mcp.EmptyResult) {
		s := mcpserver.ClientSessionFromContext(ctx)
		if s == nil {
			return
		}
		if g.subs.remove(req.Params.URI, s.SessionID()) {
			g.unsubscribeBackend(ctx, req.Params.URI)
		}
	})
	h.AddOnUnregisterSession(func(ctx context.Context, s mcpserver.ClientSession) {
		g.mgr.CloseClient(s.SessionID())
		for _, uri := range g.subs.dropSession(s.SessionID()) {
			g.unsubscribeBackend(context.WithoutCancel(ctx), uri)
		}
	})
}

func (g *Gateway) unsubscribeBackend(ctx context.Context, uri string) {
	if b, ok := g.resourceBackend(uri); ok {
		if _, err := g.mgr.Request(ctx, b, "resources/unsubscribe", map[string]any{"uri": uri}); err != nil {
			g.log.Debug("unsubscribe at backend failed", "backend", b, "uri", uri, "err", err)
		}
	}
}

// newMCPServer builds the mcp-go server with every capability vmcp
// passes through.
func newMCPServer(g *Gateway) *mcpserver.MCPServer {
	hooks := &mcpserver.Hooks{}
	g.installHooks(hooks)
	g.installAuthzHooks(hooks)
	g.installTelemetryHooks(hooks)
	g.installSessionHooks(hooks)
	return mcpserver.NewMCPServer(g.cfg.Name.Value, g.ver, append([]mcpserver.ServerOption{
		mcpserver.WithToolCapabilities(true),
		mcpserver.WithResourceCapabilities(true, true),
		mcpserver.WithPromptCapabilities(true),
		mcpserver.WithLogging(),
		mcpserver.WithCompletions(),
		mcpserver.WithPromptCompletionProvider(completions{g}),
		mcpserver.WithResourceCompletionProvider(completions{g}),
		mcpserver.WithHooks(hooks),
		mcpserver.WithRecovery(),
		mcpserver.WithPaginationLimit(500),
		mcpserver.WithInstructions("vmcp: one endpoint in front of several MCP servers, with composite tools (workflows). " +
			"Composite tools may pause to ask a question; answer it when asked, or later with vmcp_run_resume."),
	}, g.mcpTelemetryOptions()...)...)
}
