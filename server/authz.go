package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/authz"
	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/steps"
	"github.com/vmcp-dev/vmcp/telemetry"
)

// Authorization (config `authz`, package authz). With policies configured:
//
//   - tools/call of an advertised tool (backend or composite) is decided
//     before anything runs; a refusal is a tool error naming the tool, the
//     principal and the reason;
//   - tools/list, prompts/list, resources/list and resources/templates/list
//     show only what the principal may call, get or read: each item is
//     decided as that call (request.method tools/call, prompts/get or
//     resources/read) with request.listing true and no arguments;
//   - prompts/get and resources/read are decided like calls;
//   - with check_steps, every backend call a composite's steps make is
//     decided too (the step's backend tool, its arguments, request.workflow
//     set to the composite), so a composite cannot reach a tool the caller
//     may not call directly. A refused step fails the run with an error
//     naming the step and the tool.
//
// Not subject to policies: vmcp's built-in run tools (vmcp_runs_list,
// vmcp_run_get, vmcp_run_resume, vmcp_run_cancel), which only ever reach
// the caller's own runs; resuming a run re-checks its steps with the
// resumer (the owner) when check_steps is on.
//
// Steps that vmcp runs by itself when a question's deadline passes have no
// caller; with check_steps on they are refused (the run fails, naming the
// step), since there is nobody whose policies could allow them.

// identityKey carries the caller as policies see it (*authz.Principal).
type identityKey struct{}

// withIdentity records the authenticated principal for policies.
func withIdentity(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, identityKey{}, &authz.Principal{Name: p.Name, Groups: p.Groups, Claims: p.Claims})
}

// copyIdentity carries the identity from an HTTP request's context into
// the MCP request's.
func copyIdentity(ctx context.Context, r *http.Request) context.Context {
	if id, ok := r.Context().Value(identityKey{}).(*authz.Principal); ok {
		return context.WithValue(ctx, identityKey{}, id)
	}
	return ctx
}

// identity is the caller for policies: the authenticated principal, or
// anonymous (no incoming auth, stdio).
func identity(ctx context.Context) *authz.Principal {
	if id, ok := ctx.Value(identityKey{}).(*authz.Principal); ok {
		return id
	}
	return anonymousIdentity
}

var anonymousIdentity = &authz.Principal{Name: "anonymous"}

// noCallerKey marks work vmcp does by itself (a question's deadline).
type noCallerKey struct{}

func withoutCaller(ctx context.Context) context.Context {
	return context.WithValue(ctx, noCallerKey{}, true)
}

// directCallKey marks the engine run of a direct tools/call, already
// decided by the tool handler.
type directCallKey struct{}

// compositeKey names the composite whose steps make backend calls.
type compositeKey struct{}

// withWorkflow names the workflow whose steps make the backend calls
// (authz check_steps reads it as request.workflow), on every path into a
// durable run: start, answer, resume, continue, deadline.
func withWorkflow(ctx context.Context, p *engine.Plan, ro *engine.RunOptions) context.Context {
	if ro == nil || !ro.Durable {
		return ctx
	}
	return context.WithValue(ctx, compositeKey{}, p.Name)
}

// newPolicies compiles the config's policies; nil when there are none.
func newPolicies(cfg *dsl.Config) (*authz.Policies, error) {
	p, ds := authz.Compile(cfg)
	if len(ds) > 0 {
		return nil, ds
	}
	return p, nil
}

// toolRequest is the request for calling an advertised tool.
func toolRequest(cat *catalog, te *toolEntry, args json.RawMessage) *authz.Request {
	req := &authz.Request{Method: authz.MethodToolsCall, Tool: te.name, Arguments: args}
	if !te.composite {
		req.Backend, req.BackendTool = te.backend, te.backendTool
	}
	return req
}

// authorizeTool decides a tools/call of an advertised tool; a refusal is
// the tool result to send.
func (g *Gateway) authorizeTool(ctx context.Context, cat *catalog, te *toolEntry, args json.RawMessage) *mcp.CallToolResult {
	if !g.az.Active() {
		return nil
	}
	id := identity(ctx)
	d := g.az.Decide(ctx, id, toolRequest(cat, te, args))
	if d.Allowed {
		return nil
	}
	g.logRefusal(ctx, id, "tool", te.name, d)
	return mcp.NewToolResultError(fmt.Sprintf("forbidden: principal %q may not call tool %q (%s)", id.Name, te.name, d.Reason()))
}

// logRefusal logs a policy refusal and writes its audit line
// (authz.denied; the tool, prompt or resource named, never arguments).
func (g *Gateway) logRefusal(ctx context.Context, id *authz.Principal, kind, name string, d authz.Decision) {
	attrs := []any{"principal", id.Name, kind, name, "rule", d.Rule}
	if d.Rule >= 0 {
		attrs = append(attrs, "at", d.Pos.String())
	}
	if d.Err != nil {
		attrs = append(attrs, "err", d.Err)
	}
	g.log.InfoContext(ctx, "authz: refused", attrs...)
	g.tel.AuthzDenied(ctx, kind)
	if g.tel.Auditing() {
		detail := map[string]any{"reason": "policy", "kind": kind, "rule": d.Rule}
		var target *telemetry.Target
		switch kind {
		case "tool", "step_tool":
			target = &telemetry.Target{Tool: name}
		default:
			detail[kind] = name
		}
		g.tel.Audit(ctx, telemetry.AuditEvent{Event: telemetry.AuditAuthzDenied, Outcome: "denied", Principal: auditPrincipal(ctx), Target: target, Detail: detail})
	}
}

// checkStep decides a backend call made by a composite's step when
// check_steps is on. Direct tool calls were decided by the tool handler.
func (g *Gateway) checkStep(ctx context.Context, call *steps.Call) error {
	if !g.az.Active() || !g.az.CheckSteps || ctx.Value(directCallKey{}) != nil {
		return nil
	}
	if ctx.Value(noCallerKey{}) != nil {
		return fmt.Errorf("forbidden: tool %s.%s not called: with authz.check_steps, steps that run after a question's deadline have no caller to authorize them", call.Backend, call.Tool)
	}
	id := identity(ctx)
	req := &authz.Request{Method: authz.MethodToolsCall, Backend: call.Backend, BackendTool: call.Tool, Arguments: call.Arguments}
	if cat := g.cat.Load(); cat != nil {
		if e := cat.byRef[call.Backend+"."+call.Tool]; e != nil {
			req.Tool = e.Advertised
		}
	}
	req.Workflow, _ = ctx.Value(compositeKey{}).(string)
	d := g.az.Decide(ctx, id, req)
	if d.Allowed {
		return nil
	}
	name := req.Tool
	if name == "" {
		name = call.Backend + "." + call.Tool
	}
	g.logRefusal(ctx, id, "step_tool", name, d)
	return fmt.Errorf("forbidden (authz.check_steps): principal %q may not call tool %q (%s)", id.Name, name, d.Reason())
}

// installAuthzHooks filters the lists mcp-go serves. The tools/list fast
// path filters its own pre-serialised pages (filteredPages).
func (g *Gateway) installAuthzHooks(h *mcpserver.Hooks) {
	if !g.az.Active() {
		return
	}
	h.AddAfterListTools(func(ctx context.Context, _ any, _ *mcp.ListToolsRequest, res *mcp.ListToolsResult) {
		if res == nil {
			return
		}
		// The cached view of the current rendering when there is one (the
		// tools mcp-go lists are the ones rendered, see installTools).
		var allowed map[string]bool
		if base := g.tl.cur.Load(); base != nil {
			if v := g.listView(ctx, base); v != nil {
				allowed = v.allowed
			}
		}
		cat := g.cat.Load()
		id := identity(ctx)
		res.Tools = slices.DeleteFunc(res.Tools, func(t mcp.Tool) bool {
			if ok, known := allowed[t.Name]; known {
				return !ok
			}
			return !g.mayList(ctx, cat, id, t.Name)
		})
	})
	h.AddAfterListPrompts(func(ctx context.Context, _ any, _ *mcp.ListPromptsRequest, res *mcp.ListPromptsResult) {
		if res == nil {
			return
		}
		owners := g.promptOwners()
		id := identity(ctx)
		res.Prompts = slices.DeleteFunc(res.Prompts, func(p mcp.Prompt) bool {
			return !g.az.Decide(ctx, id, &authz.Request{Method: authz.MethodPromptsGet, Prompt: p.Name, Backend: owners[p.Name], Listing: true}).Allowed
		})
	})
	h.AddAfterListResources(func(ctx context.Context, _ any, _ *mcp.ListResourcesRequest, res *mcp.ListResourcesResult) {
		if res == nil {
			return
		}
		owners := g.resourceOwners()
		id := identity(ctx)
		res.Resources = slices.DeleteFunc(res.Resources, func(r mcp.Resource) bool {
			return !g.az.Decide(ctx, id, &authz.Request{Method: authz.MethodResourcesRead, Resource: r.URI, Backend: owners[r.URI], Listing: true}).Allowed
		})
	})
	h.AddAfterListResourceTemplates(func(ctx context.Context, _ any, _ *mcp.ListResourceTemplatesRequest, res *mcp.ListResourceTemplatesResult) {
		if res == nil {
			return
		}
		id := identity(ctx)
		res.ResourceTemplates = slices.DeleteFunc(res.ResourceTemplates, func(t mcp.ResourceTemplate) bool {
			uri := ""
			if t.URITemplate != nil {
				uri = t.URITemplate.Raw()
			}
			return !g.az.Decide(ctx, id, &authz.Request{Method: authz.MethodResourcesRead, Resource: uri, Listing: true}).Allowed
		})
	})
}

// mayList decides whether a tool is listed for id: built-in run tools
// always are; others when calling them (without arguments) is allowed.
func (g *Gateway) mayList(ctx context.Context, cat *catalog, id *authz.Principal, name string) bool {
	if slices.Contains(builtinToolNames(), name) {
		return true
	}
	te := cat.tools[name]
	if te == nil {
		return false
	}
	req := toolRequest(cat, te, nil)
	req.Listing = true
	return g.az.Decide(ctx, id, req).Allowed
}

// authorizePrompt decides prompts/get.
func (g *Gateway) authorizePrompt(ctx context.Context, name, backend string) error {
	if !g.az.Active() {
		return nil
	}
	id := identity(ctx)
	d := g.az.Decide(ctx, id, &authz.Request{Method: authz.MethodPromptsGet, Prompt: name, Backend: backend})
	if d.Allowed {
		return nil
	}
	g.logRefusal(ctx, id, "prompt", name, d)
	return fmt.Errorf("forbidden: principal %q may not get prompt %q (%s)", id.Name, name, d.Reason())
}

// authorizeResource decides resources/read.
func (g *Gateway) authorizeResource(ctx context.Context, uri, backend string) error {
	if !g.az.Active() {
		return nil
	}
	id := identity(ctx)
	d := g.az.Decide(ctx, id, &authz.Request{Method: authz.MethodResourcesRead, Resource: uri, Backend: backend})
	if d.Allowed {
		return nil
	}
	g.logRefusal(ctx, id, "resource", uri, d)
	return fmt.Errorf("forbidden: principal %q may not read resource %q (%s)", id.Name, uri, d.Reason())
}

// promptOwners maps advertised prompt names to their backends.
func (g *Gateway) promptOwners() map[string]string {
	out := map[string]string{}
	cat := g.cat.Load()
	if cat == nil {
		return out
	}
	for _, b := range cat.snap.Order {
		for _, raw := range cat.snap.Prompts[b] {
			var p struct {
				Name string `json:"name"`
			}
			if json.Unmarshal(raw, &p) == nil {
				if n := g.promptName(b, p.Name); out[n] == "" {
					out[n] = b
				}
			}
		}
	}
	return out
}

// resourceOwners maps resource URIs to the backends serving them.
func (g *Gateway) resourceOwners() map[string]string {
	out := map[string]string{}
	cat := g.cat.Load()
	if cat == nil {
		return out
	}
	for _, b := range cat.snap.Order {
		for _, raw := range cat.snap.Resources[b] {
			var r struct {
				URI string `json:"uri"`
			}
			if json.Unmarshal(raw, &r) == nil && out[r.URI] == "" {
				out[r.URI] = b
			}
		}
	}
	return out
}

// listViews caches, per distinct principal (name, groups, claims), the
// tools it may see in one rendering of the list, and their pages for the
// fast path; a new rendering (catalogue rebuild) starts an empty cache.
type listViews struct {
	mu    sync.Mutex
	base  *toolPages
	views map[string]*listView
	// raw[i] is base.tools[i] serialised, made once per rendering so that a
	// principal's pages are assembled rather than marshalled again.
	raw [][]byte
}

type listView struct {
	pages *toolPages
	// allowed has every tool of the rendering: whether it is listed.
	allowed map[string]bool
}

// maxListViews bounds the cache (OIDC claims such as exp make every token
// a distinct principal); when full it starts over.
const maxListViews = 1024

// filteredPages is the fast path's filter: the pages principal r may see,
// or nil to let mcp-go answer (with the list hook filtering).
func (g *Gateway) filteredPages(r *http.Request, base *toolPages) *toolPages {
	v := g.listView(r.Context(), base)
	if v == nil {
		return nil
	}
	return v.pages
}

// listView returns the caller's view of the rendering base, deciding every
// tool once per principal and rendering.
func (g *Gateway) listView(ctx context.Context, base *toolPages) *listView {
	id := identity(ctx)
	key := identityCacheKey(id)
	lv := &g.lviews
	lv.mu.Lock()
	if lv.base != base {
		lv.base, lv.views, lv.raw = base, map[string]*listView{}, nil
	}
	v, ok := lv.views[key]
	if !ok && lv.raw == nil {
		raw := make([][]byte, len(base.tools))
		for i, t := range base.tools {
			b, err := json.Marshal(t)
			if err != nil {
				lv.mu.Unlock()
				return nil
			}
			raw[i] = b
		}
		lv.raw = raw
	}
	raw := lv.raw
	lv.mu.Unlock()
	if ok {
		return v
	}
	cat := g.cat.Load()
	var keep []int
	v = &listView{allowed: map[string]bool{}}
	for i, t := range base.tools {
		ok := g.mayList(ctx, cat, id, t.Name)
		v.allowed[t.Name] = ok
		if ok {
			keep = append(keep, i)
		}
	}
	v.pages = assemblePages(base.tools, raw, keep, g.tl.size())
	lv.mu.Lock()
	if lv.base == base {
		if len(lv.views) >= maxListViews {
			lv.views = map[string]*listView{}
		}
		lv.views[key] = v
	}
	lv.mu.Unlock()
	return v
}

// assemblePages is paginateTools for the tools at the indexes keep, from
// their serialised forms: the same pages, byte for byte
// (TestAssemblePagesMatchesPaginate).
func assemblePages(tools []mcp.Tool, raw [][]byte, keep []int, size int) *toolPages {
	p := &toolPages{tools: make([]mcp.Tool, 0, len(keep)), cursors: map[string]int{"": 0}}
	for _, i := range keep {
		p.tools = append(p.tools, tools[i])
	}
	for start := 0; ; {
		end := min(start+size, len(keep))
		var b bytes.Buffer
		b.WriteString(`,"result":{`)
		next := ""
		if end-start >= size {
			next = base64.StdEncoding.EncodeToString([]byte(tools[keep[end-1]].Name))
			b.WriteString(`"nextCursor":"` + next + `",`)
		}
		b.WriteString(`"tools":[`)
		for j, i := range keep[start:end] {
			if j > 0 {
				b.WriteByte(',')
			}
			b.Write(raw[i])
		}
		b.WriteString("]}}\n")
		p.pages = append(p.pages, b.Bytes())
		if next == "" {
			return p
		}
		p.cursors[next] = len(p.pages)
		start = end
	}
}

// identityCacheKey is everything a policy can see of a principal.
func identityCacheKey(id *authz.Principal) string {
	var sb strings.Builder
	sb.WriteString(id.Name)
	for _, g := range id.Groups {
		sb.WriteByte(0)
		sb.WriteString(g)
	}
	if len(id.Claims) > 0 {
		b, _ := json.Marshal(id.Claims) // map keys sorted
		sb.WriteByte(1)
		sb.Write(b)
	}
	return sb.String()
}
