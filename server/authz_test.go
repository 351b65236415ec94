package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/telemetry"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"go.opentelemetry.io/otel/trace"
)

// kitServer is an in-process backend with three tools, two prompts and
// two resources.
func kitServer() *mcpserver.MCPServer {
	s := mcpserver.NewMCPServer("kit", "1.0", mcpserver.WithToolCapabilities(true),
		mcpserver.WithPromptCapabilities(true), mcpserver.WithResourceCapabilities(false, true))
	for _, n := range []string{"read", "write", "delete"} {
		name := n
		s.AddTool(mcp.NewTool(name, mcp.WithString("path")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultStructured(map[string]any{"did": name}, name+" done"), nil
		})
	}
	for _, n := range []string{"greet", "secret"} {
		name := n
		s.AddPrompt(mcp.NewPrompt(name), func(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return mcp.NewGetPromptResult(name, []mcp.PromptMessage{mcp.NewPromptMessage(mcp.RoleUser, mcp.NewTextContent("prompt "+name))}), nil
		})
	}
	for _, u := range []string{"file:///public", "file:///secret"} {
		uri := u
		s.AddResource(mcp.NewResource(uri, uri), func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: uri, Text: "contents of " + uri}}, nil
		})
	}
	return s
}

// authzConfig: alice (sre) may do anything but delete; bob (dev) may read,
// run the composite, get the greet prompt and read the public resource.
func authzConfig(checkSteps bool) string {
	cs := "false"
	if checkSteps {
		cs = "true"
	}
	return `name: authz-test
incoming_auth:
  type: tokens
  tokens:
    - {principal: alice, groups: [sre], sha256: "` + sha("alice-token") + `"}
    - {principal: bob, groups: [dev], sha256: "` + sha("bob-token") + `"}
backends:
  - {name: kit, builtin: kit}
composite_tools:
  - name: read_then_write
    description: Reads, then writes.
    steps:
      - id: first
        tool: kit.read
        arguments: {path: /x}
      - id: second
        tool: kit.write
        arguments: {path: /x}
        depends_on: [first]
authz:
  check_steps: ` + cs + `
  policies:
    - deny: "request.method == 'tools/call' && tool == 'kit_delete'"
    - allow: "'sre' in principal.groups"
    - allow: >-
        'dev' in principal.groups &&
        (tool in ['kit_read', 'read_then_write'] || prompt == 'kit_greet' || resource == 'file:///public')
`
}

func startAuthz(t testing.TB, src string) (*Gateway, string) {
	t.Helper()
	cfg, ds := dsl.LoadConfig("authz.yaml", []byte(src), func(string) (string, bool) { return "", false })
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	g, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "state.db"), InProcess: map[string]*mcpserver.MCPServer{"kit": kitServer()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := g.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		srv.Close()
		cancel()
		_ = g.Close()
	})
	return g, srv.URL
}

func clientWithVersion(t testing.TB, url, token, version string) *client.Client {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(url+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr, client.WithProtocolVersion(version))
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Initialize(context.Background(), mcp.InitializeRequest{Params: mcp.InitializeParams{ClientInfo: mcp.Implementation{Name: "test"}}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func toolNames(t testing.TB, c *client.Client) []string {
	t.Helper()
	res, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tl := range res.Tools {
		out = append(out, tl.Name)
	}
	slices.Sort(out)
	return out
}

var runTools = []string{"vmcp_run_cancel", "vmcp_run_get", "vmcp_run_resume", "vmcp_runs_list"}

func withRunTools(names ...string) []string {
	out := append(slices.Clone(names), runTools...)
	slices.Sort(out)
	return out
}

func TestAuthzToolsListAndCalls(t *testing.T) {
	g, url := startAuthz(t, authzConfig(false))
	want := map[string][]string{
		"alice-token": withRunTools("kit_read", "kit_write", "read_then_write"),
		"bob-token":   withRunTools("kit_read", "read_then_write"),
	}
	// Both the fast path (a 2025-11-25 session) and mcp-go (2026-07-28,
	// stateless, always answered by mcp-go) filter the list.
	for _, version := range []string{mcp.ProtocolVersion20251125, mcp.LATEST_PROTOCOL_VERSION} {
		for tok, names := range want {
			c := clientWithVersion(t, url, tok, version)
			for range 2 { // the second answer comes from the per-principal cache
				if got := toolNames(t, c); !slices.Equal(got, names) {
					t.Errorf("%s %s: tools/list = %v, want %v", version, tok, got, names)
				}
			}
		}
	}
	if g.tl.served.Load() == 0 {
		t.Error("the tools/list fast path never answered")
	}

	bob := clientWithVersion(t, url, "bob-token", mcp.ProtocolVersion20251125)
	alice := clientWithVersion(t, url, "alice-token", mcp.ProtocolVersion20251125)
	if r := callJSON(t, bob, "kit_read", `{"path":"/a"}`); r.IsError || !strings.Contains(text(r), "read done") {
		t.Fatalf("bob kit_read: %s", text(r))
	}
	r := callJSON(t, bob, "kit_write", `{"path":"/a"}`)
	if !r.IsError || !strings.Contains(text(r), `forbidden: principal "bob" may not call tool "kit_write" (no authz policy allows it)`) {
		t.Fatalf("bob kit_write: error=%v %s", r.IsError, text(r))
	}
	if r := callJSON(t, alice, "kit_write", `{"path":"/a"}`); r.IsError {
		t.Fatalf("alice kit_write: %s", text(r))
	}
	r = callJSON(t, alice, "kit_delete", `{"path":"/a"}`)
	if !r.IsError || !strings.Contains(text(r), `may not call tool "kit_delete" (authz.policies[0] denies it)`) {
		t.Fatalf("alice kit_delete: %s", text(r))
	}
	// Built-in run tools are not subject to policies.
	if r := callJSON(t, bob, "vmcp_runs_list", `{}`); r.IsError {
		t.Fatalf("bob vmcp_runs_list: %s", text(r))
	}
}

func TestAuthzCheckSteps(t *testing.T) {
	// Off: the composite is checked, its steps are not.
	_, url := startAuthz(t, authzConfig(false))
	bob := clientWithVersion(t, url, "bob-token", mcp.ProtocolVersion20251125)
	if r := callJSON(t, bob, "read_then_write", `{}`); r.IsError {
		t.Fatalf("check_steps off: bob's composite failed: %s", text(r))
	}

	// On: the write step is refused for bob, naming the step and the tool;
	// alice's run completes.
	_, url = startAuthz(t, authzConfig(true))
	bob = clientWithVersion(t, url, "bob-token", mcp.ProtocolVersion20251125)
	r := callJSON(t, bob, "read_then_write", `{}`)
	msg := text(r)
	if !r.IsError || !strings.Contains(msg, `"second"`) || !strings.Contains(msg, `may not call tool "kit_write"`) || !strings.Contains(msg, "check_steps") {
		t.Fatalf("check_steps on: bob's composite: error=%v %s", r.IsError, msg)
	}
	t.Log(msg)
	alice := clientWithVersion(t, url, "alice-token", mcp.ProtocolVersion20251125)
	if r := callJSON(t, alice, "read_then_write", `{}`); r.IsError {
		t.Fatalf("check_steps on: alice's composite: %s", text(r))
	}
	// A direct call is decided once, by the tool handler.
	if r := callJSON(t, bob, "kit_read", `{}`); r.IsError {
		t.Fatalf("bob kit_read: %s", text(r))
	}
}

func TestAuthzPromptsAndResources(t *testing.T) {
	_, url := startAuthz(t, authzConfig(false))
	ctx := context.Background()
	bob := clientWithVersion(t, url, "bob-token", mcp.ProtocolVersion20251125)
	alice := clientWithVersion(t, url, "alice-token", mcp.ProtocolVersion20251125)

	names := func(c *client.Client) (prompts, resources []string) {
		pl, err := c.ListPrompts(ctx, mcp.ListPromptsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pl.Prompts {
			prompts = append(prompts, p.Name)
		}
		rl, err := c.ListResources(ctx, mcp.ListResourcesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rl.Resources {
			resources = append(resources, r.URI)
		}
		slices.Sort(prompts)
		slices.Sort(resources)
		return
	}
	if p, r := names(bob); !slices.Equal(p, []string{"kit_greet"}) || !slices.Equal(r, []string{"file:///public"}) {
		t.Fatalf("bob sees prompts %v, resources %v", p, r)
	}
	if p, r := names(alice); len(p) != 2 || len(r) != 2 {
		t.Fatalf("alice sees prompts %v, resources %v", p, r)
	}

	get := func(c *client.Client, name string) error {
		req := mcp.GetPromptRequest{}
		req.Params.Name = name
		_, err := c.GetPrompt(ctx, req)
		return err
	}
	read := func(c *client.Client, uri string) error {
		req := mcp.ReadResourceRequest{}
		req.Params.URI = uri
		_, err := c.ReadResource(ctx, req)
		return err
	}
	if err := get(bob, "kit_greet"); err != nil {
		t.Fatalf("bob greet: %v", err)
	}
	if err := get(bob, "kit_secret"); err == nil || !strings.Contains(err.Error(), `may not get prompt "kit_secret"`) {
		t.Fatalf("bob secret prompt: %v", err)
	}
	if err := read(bob, "file:///public"); err != nil {
		t.Fatalf("bob public: %v", err)
	}
	if err := read(bob, "file:///secret"); err == nil || !strings.Contains(err.Error(), `may not read resource "file:///secret"`) {
		t.Fatalf("bob secret resource: %v", err)
	}
	if err := errorsJoin(get(alice, "kit_secret"), read(alice, "file:///secret")); err != nil {
		t.Fatalf("alice: %v", err)
	}
}

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// A policy that does not compile stops startup with its position in the
// config file.
func TestAuthzPolicyCompileErrorFailsStartup(t *testing.T) {
	src := strings.Replace(authzConfig(true), `- allow: "'sre' in principal.groups"`, `- allow: "'sre' in principal.grups && tool.size() > 'x'"`, 1)
	cfg, ds := dsl.LoadConfig("authz.yaml", []byte(src), func(string) (string, bool) { return "", false })
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	_, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "state.db"), InProcess: map[string]*mcpserver.MCPServer{"kit": kitServer()}})
	if err == nil {
		t.Fatal("New accepted a policy that does not compile")
	}
	// The position of the ill-typed comparison, in the config file.
	line := 1 + strings.Count(src[:strings.Index(src, "principal.grups")], "\n")
	col := 1 + strings.Index(strings.Split(src, "\n")[line-1], "> 'x'")
	want := "authz.yaml:" + itoa(line) + ":" + itoa(col) + ": authz.policies[1].allow: operator > cannot be applied to int, string"
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q\ndoes not contain %q", err, want)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// The fast path's per-principal pages are assembled from serialised tools;
// they must be exactly what paginateTools renders for the same tools.
func TestAssemblePagesMatchesPaginate(t *testing.T) {
	var tools []mcp.Tool
	for i := range 23 {
		tl := synthTool(fmt.Sprintf("t%02d", i))
		tl.Description = "<b>a & b</b> \u2028 " + tl.Description
		tools = append(tools, tl)
	}
	raw := make([][]byte, len(tools))
	for i, tl := range tools {
		raw[i], _ = json.Marshal(tl)
	}
	subsets := [][]int{nil, {0}, {3, 4, 5, 6, 7, 8}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}
	var all []int
	for i := range tools {
		all = append(all, i)
	}
	subsets = append(subsets, all)
	for _, keep := range subsets {
		for _, size := range []int{1, 3, 6, 12, 500} {
			var sel []mcp.Tool
			for _, i := range keep {
				sel = append(sel, tools[i])
			}
			want, err := paginateTools(sel, size)
			if err != nil {
				t.Fatal(err)
			}
			got := assemblePages(tools, raw, keep, size)
			if len(got.pages) != len(want.pages) || !maps.Equal(got.cursors, want.cursors) {
				t.Fatalf("keep %v size %d: %d pages %v, want %d %v", keep, size, len(got.pages), got.cursors, len(want.pages), want.cursors)
			}
			for i := range want.pages {
				if !bytes.Equal(got.pages[i], want.pages[i]) {
					t.Fatalf("keep %v size %d page %d:\n got %s\nwant %s", keep, size, i, got.pages[i], want.pages[i])
				}
			}
		}
	}
}

// A catalogue change drops the per-principal renderings: a tool that
// appears at a backend is listed (to those allowed) on the next list.
func TestAuthzListViewsFollowCatalogue(t *testing.T) {
	kit := kitServer()
	cfg, ds := dsl.LoadConfig("authz.yaml", []byte(authzConfig(false)), func(string) (string, bool) { return "", false })
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	g, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "state.db"), InProcess: map[string]*mcpserver.MCPServer{"kit": kit}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() { srv.Close(); _ = g.Close() })
	alice := clientWithVersion(t, srv.URL, "alice-token", mcp.ProtocolVersion20251125)
	bob := clientWithVersion(t, srv.URL, "bob-token", mcp.ProtocolVersion20251125)
	if got := toolNames(t, alice); slices.Contains(got, "kit_list") {
		t.Fatalf("kit_list before it exists: %v", got)
	}
	_ = toolNames(t, bob)
	served := g.tl.served.Load()
	kit.AddTool(mcp.NewTool("list"), echoHandler)
	waitFor(t, func() bool { return g.cat.Load().tools["kit_list"] != nil })
	waitFor(t, func() bool { return slices.Contains(toolNames(t, alice), "kit_list") })
	// The first lists after the change may go to mcp-go (it delivers the
	// queued list_changed); the later ones come from the fast path.
	for range 3 {
		if got := toolNames(t, alice); !slices.Contains(got, "kit_list") {
			t.Fatalf("alice lost kit_list: %v", got)
		}
		if got := toolNames(t, bob); slices.Contains(got, "kit_list") {
			t.Fatalf("bob sees kit_list: %v", got)
		}
	}
	if g.tl.served.Load() == served {
		t.Fatal("the fast path did not answer after the change")
	}
}

// With OIDC, policies read the verified token's claims: a token with
// dept=ops sees and calls the logs tools, one without the claim (the rule
// fails to evaluate: no match) and one with another value do not.
func TestAuthzOIDCClaims(t *testing.T) {
	f := newFakeIssuer(t, rsa1(t))
	_, url := startOIDC(t, f, `authz:
  policies:
    - allow: "principal.claims.dept == 'ops' && request.backend == 'logs'"
`)
	ops := rsa1(t).sign(t, with(f.claims("olga"), "dept", "ops"))
	dev := rsa1(t).sign(t, with(f.claims("dave"), "dept", "dev"))
	none := rsa1(t).sign(t, f.claims("nina"))

	c := clientWithVersion(t, url, ops, mcp.ProtocolVersion20251125)
	names := toolNames(t, c)
	if !slices.Contains(names, "logs_search") || slices.Contains(names, "incidents_get_incident") {
		t.Fatalf("ops sees %v", names)
	}
	if r := callJSON(t, c, "logs_search", `{"service":"checkout","since":"1h"}`); r.IsError {
		t.Fatalf("ops logs_search: %s", text(r))
	}
	for name, tok := range map[string]string{"dave": dev, "nina": none} {
		c := clientWithVersion(t, url, tok, mcp.ProtocolVersion20251125)
		if got := toolNames(t, c); !slices.Equal(got, runTools) {
			t.Errorf("%s sees %v", name, got)
		}
		r := callJSON(t, c, "logs_search", `{"service":"checkout","since":"1h"}`)
		if !r.IsError || !strings.Contains(text(r), `forbidden: principal "`+name+`" may not call tool "logs_search"`) {
			t.Errorf("%s logs_search: %s", name, text(r))
		}
	}
}

// A policy refusal writes one authz.denied audit line naming the
// principal and the tool, without the call's arguments, and is counted.
func TestAuthzDeniedIsAuditedAndCounted(t *testing.T) {
	tel, audit := fullTelemetry(t)
	cfg, ds := dsl.LoadConfig("authz.yaml", []byte(authzConfig(false)), func(string) (string, bool) { return "", false })
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	g, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "state.db"), Telemetry: tel,
		InProcess: map[string]*mcpserver.MCPServer{"kit": kitServer()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() { srv.Close(); _ = g.Close() })
	bob := clientWithVersion(t, srv.URL, "bob-token", mcp.ProtocolVersion20251125)
	if r := callJSON(t, bob, "kit_write", `{"path":"/secret-arg"}`); !r.IsError {
		t.Fatalf("bob kit_write was allowed: %s", text(r))
	}
	var denied []map[string]any
	for _, l := range audit.lines() {
		if l["event"] == telemetry.AuditAuthzDenied {
			denied = append(denied, l)
		}
	}
	if len(denied) != 1 {
		t.Fatalf("%d authz.denied lines, want 1:\n%s", len(denied), audit.String())
	}
	if line := fmt.Sprint(denied[0]); !strings.Contains(line, "bob") || !strings.Contains(line, "kit_write") || strings.Contains(audit.String(), "secret-arg") {
		t.Errorf("audit line %s: want principal bob and tool kit_write, and no argument value anywhere", line)
	}
	// And counted, by what was refused.
	fam := scrape(t, srv.URL)["vmcp_authz_denied_total"]
	if fam == nil || len(fam.GetMetric()) != 1 || fam.GetMetric()[0].GetCounter().GetValue() != 1 ||
		len(fam.GetMetric()[0].GetLabel()) == 0 || fam.GetMetric()[0].GetLabel()[0].GetValue() != "tool" {
		t.Errorf("vmcp_authz_denied_total after one refused call: %v", fam)
	}
}

// A step refused by check_steps never went out: no CLIENT span for it.
func TestRefusedStepHasNoClientSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, &telemetry.Options{SpanProcessor: rec, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	cfg, ds := dsl.LoadConfig("authz.yaml", []byte(authzConfig(true)), func(string) (string, bool) { return "", false })
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	g, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "state.db"), Telemetry: tel,
		InProcess: map[string]*mcpserver.MCPServer{"kit": kitServer()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() { srv.Close(); _ = g.Close() })
	bob := clientWithVersion(t, srv.URL, "bob-token", mcp.ProtocolVersion20251125)
	if r := callJSON(t, bob, "read_then_write", `{}`); !r.IsError {
		t.Fatalf("bob's composite was not refused: %s", text(r))
	}
	var clients []string
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindClient {
			clients = append(clients, s.Name())
		}
	}
	if !slices.Contains(clients, "tools/call read") || slices.ContainsFunc(clients, func(n string) bool { return strings.Contains(n, "write") }) {
		t.Errorf("CLIENT spans %v: want the read step's call and none for the refused write", clients)
	}
}
