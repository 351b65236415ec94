package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/vmcp-dev/vmcp/backends/demo"
)

const catalogPath = "../../testdata/catalog/demo.json"

// schemas are the catalogue's input and output schemas by
// "<backend>.<tool>", compiled with format assertions on (date-time, uri).
// TestCatalog keeps the catalogue equal to what the servers advertise.
type schemas struct {
	in, out map[string]*jsonschema.Schema
	refs    []string
}

var loadSchemas = sync.OnceValues(func() (*schemas, error) {
	data, err := os.ReadFile(catalogPath)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Tools []struct {
			Backend      string          `json:"backend"`
			Name         string          `json:"name"`
			InputSchema  json.RawMessage `json:"inputSchema"`
			OutputSchema json.RawMessage `json:"outputSchema"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	s := &schemas{in: map[string]*jsonschema.Schema{}, out: map[string]*jsonschema.Schema{}}
	for _, t := range doc.Tools {
		ref := t.Backend + "." + t.Name
		s.refs = append(s.refs, ref)
		if s.in[ref], err = compileSchema(ref+"/in", t.InputSchema); err != nil {
			return nil, err
		}
		if s.out[ref], err = compileSchema(ref+"/out", t.OutputSchema); err != nil {
			return nil, err
		}
	}
	return s, nil
})

func compileSchema(name string, raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	url := "mem:///" + name + ".json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

func testSchemas(t *testing.T) *schemas {
	t.Helper()
	s, err := loadSchemas()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// connect starts a fresh demo server and an in-process mcp-go client on
// it.
func connect(t *testing.T, ctx context.Context, name string, opts *demo.Options) *client.Client {
	t.Helper()
	srv, err := demo.NewWithOptions(name, opts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.NewInProcessClient(srv)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{Params: mcp.InitializeParams{
		ClientInfo: mcp.Implementation{Name: "demo-test", Version: "0"},
	}}); err != nil {
		t.Fatal(err)
	}
	return c
}

// callTool calls a tool with raw JSON arguments.
func callTool(ctx context.Context, c *client.Client, tool, args string) (*mcp.CallToolResult, error) {
	return c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: tool, Arguments: json.RawMessage(args)}})
}

// output checks a successful result — structuredContent valid against the
// tool's output schema, and a text item holding the same JSON — and
// returns the structured output.
func output(t *testing.T, ref string, res *mcp.CallToolResult) any {
	t.Helper()
	if res.IsError {
		t.Fatalf("%s: tool error: %s", ref, text(res))
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := testSchemas(t).out[ref].Validate(v); err != nil {
		t.Errorf("%s: output does not match the outputSchema: %v\n%s", ref, err, raw)
	}
	if len(res.Content) != 1 {
		t.Fatalf("%s: %d content items, want 1 text item", ref, len(res.Content))
	}
	var fromText any
	if err := json.Unmarshal([]byte(text(res)), &fromText); err != nil {
		t.Fatalf("%s: text content is not JSON: %v", ref, err)
	}
	var structured any
	_ = json.Unmarshal(raw, &structured)
	if d := cmp.Diff(structured, fromText); d != "" {
		t.Errorf("%s: text content differs from structuredContent (-structured +text):\n%s", ref, d)
	}
	return structured
}

// text joins a result's text items.
func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON in test: %v: %s", err, s)
	}
	return v
}

func TestNames(t *testing.T) {
	want := []string{"incidents", "logs", "metrics", "deploys", "chat", "tickets"}
	if got := demo.Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	demo.Names()[0] = "changed"
	if demo.Names()[0] != "incidents" {
		t.Error("Names() returns shared state")
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		opts *demo.Options
		want []string // substrings of the error
	}{
		{"nope", nil, []string{`"nope"`, "incidents, logs, metrics, deploys, chat, tickets"}},
		{"", nil, []string{`""`, "incidents"}},
		{"logs", &demo.Options{Fail: map[string]int{"logs.serch": 1}}, []string{"Fail[logs.serch]", "not a demo tool"}},
		{"logs", &demo.Options{Delay: map[string]time.Duration{"search": time.Second}}, []string{"Delay[search]"}},
		{"logs", &demo.Options{Fail: map[string]int{"logs.search": -1}}, []string{"negative"}},
	}
	for _, tt := range tests {
		_, err := demo.NewWithOptions(tt.name, tt.opts)
		if err == nil {
			t.Errorf("NewWithOptions(%q, %+v): no error", tt.name, tt.opts)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("NewWithOptions(%q, %+v) = %q, want it to mention %s", tt.name, tt.opts, err, w)
			}
		}
	}
	// Options for other backends' tools are fine: one Options fits all.
	opts := &demo.Options{Fail: map[string]int{"logs.search": 1, "tickets.create": 2}}
	for _, n := range demo.Names() {
		if _, err := demo.NewWithOptions(n, opts); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}

// toolCase is one call on a fresh server.
type toolCase struct {
	name string
	ref  string // "<backend>.<tool>"
	args string
	// want is the exact output (JSON) of a successful call; "" = check the
	// schema only.
	want string
	// wantErr, when set, is a substring of the expected tool error.
	wantErr string
	// invalid marks arguments that break the input schema: the schema
	// and the handler must both reject them.
	invalid bool
	// setup are calls ({tool, args}) made first, on the same server.
	setup [][2]string
}

func toolCases() []toolCase {
	return []toolCase{
		// incidents
		{name: "INC-1042", ref: "incidents.get_incident", args: `{"id":"INC-1042"}`,
			want: `{"id":"INC-1042","title":"Checkout payments timing out","service":"checkout","severity":"high","status":"triggered","started_at":"2026-11-25T09:12:00Z","teams":[{"name":"payments","channel":"#payments-oncall"},{"name":"sre","channel":"#sre"}]}`},
		{name: "INC-1043", ref: "incidents.get_incident", args: `{"id":"INC-1043"}`,
			want: `{"id":"INC-1043","title":"Search suggestions missing for some queries","service":"search","severity":"low","status":"acknowledged","started_at":"2026-11-25T08:40:00Z","teams":[{"name":"search","channel":"#search-team"}]}`},
		{name: "resolved", ref: "incidents.get_incident", args: `{"id":"INC-1039"}`},
		{name: "unknown id", ref: "incidents.get_incident", args: `{"id":"INC-9999"}`, wantErr: `incident "INC-9999" not found; known incidents: INC-1039, INC-1041, INC-1042, INC-1043`},
		{name: "no id", ref: "incidents.get_incident", args: `{}`, wantErr: "invalid arguments: id is required", invalid: true},
		{name: "bad id", ref: "incidents.get_incident", args: `{"id":"1042"}`, wantErr: `id: "1042" does not look like an incident id`, invalid: true},
		{name: "id not a string", ref: "incidents.get_incident", args: `{"id":1042}`, wantErr: "id: expected string, got number", invalid: true},
		{name: "unknown argument", ref: "incidents.get_incident", args: `{"id":"INC-1042","verbose":true}`, wantErr: `unknown argument "verbose"`, invalid: true},
		{name: "null id", ref: "incidents.get_incident", args: `{"id":null}`, wantErr: "id: expected a value, got null", invalid: true},
		{name: "all open", ref: "incidents.list_open", args: `{}`,
			want: `{"incidents":[
				{"id":"INC-1042","title":"Checkout payments timing out","service":"checkout","severity":"high","status":"triggered","started_at":"2026-11-25T09:12:00Z"},
				{"id":"INC-1043","title":"Search suggestions missing for some queries","service":"search","severity":"low","status":"acknowledged","started_at":"2026-11-25T08:40:00Z"},
				{"id":"INC-1041","title":"Login rate limit rejecting mobile clients","service":"auth","severity":"medium","status":"acknowledged","started_at":"2026-11-24T16:05:00Z"}]}`},
		{name: "checkout open", ref: "incidents.list_open", args: `{"service":"checkout","limit":10}`,
			want: `{"incidents":[{"id":"INC-1042","title":"Checkout payments timing out","service":"checkout","severity":"high","status":"triggered","started_at":"2026-11-25T09:12:00Z"}]}`},
		{name: "limit", ref: "incidents.list_open", args: `{"limit":2.0}`},
		{name: "unknown service has none", ref: "incidents.list_open", args: `{"service":"billing"}`, want: `{"incidents":[]}`},
		{name: "limit too big", ref: "incidents.list_open", args: `{"limit":101}`, wantErr: "limit: 101 is not between 1 and 100", invalid: true},
		{name: "limit not integral", ref: "incidents.list_open", args: `{"limit":1.5}`, wantErr: "limit: expected integer, got number 1.5", invalid: true},
		{name: "limit a string", ref: "incidents.list_open", args: `{"limit":"5"}`, wantErr: "limit: expected integer, got string", invalid: true},
		{name: "page", ref: "incidents.page_oncall", args: `{"id":"INC-1042","note":"checkout is on fire"}`,
			want: `{"page_id":"PG-1","paged":"Dana Whitfield (payments on-call)","at":"2026-11-25T10:01:00Z"}`},
		{name: "page without note", ref: "incidents.page_oncall", args: `{"id":"INC-1043"}`,
			want: `{"page_id":"PG-1","paged":"Sam Ortiz (search on-call)","at":"2026-11-25T10:01:00Z"}`},
		{name: "page resolved", ref: "incidents.page_oncall", args: `{"id":"INC-1039"}`, wantErr: "INC-1039 is resolved"},
		{name: "page unknown", ref: "incidents.page_oncall", args: `{"id":"INC-1"}`, wantErr: `incident "INC-1" not found`},
		{name: "note too long", ref: "incidents.page_oncall", args: `{"id":"INC-1042","note":"` + strings.Repeat("x", 501) + `"}`, wantErr: "note: 501 characters, at most 500", invalid: true},
		{name: "note", ref: "incidents.add_note", args: `{"id":"INC-1041","text":"Raised the limit for mobile-ios."}`,
			want: `{"note_id":"N-1","at":"2026-11-25T10:01:00Z"}`},
		{name: "empty note", ref: "incidents.add_note", args: `{"id":"INC-1041","text":""}`, wantErr: "text is required", invalid: true},
		{name: "note unknown", ref: "incidents.add_note", args: `{"id":"INC-7","text":"x"}`, wantErr: `incident "INC-7" not found`},

		// logs
		{name: "checkout 1h (the flagship's call)", ref: "logs.search", args: `{"service":"checkout","since":"1h","query":"level:error","limit":200}`,
			want: `{"error_count":412,"total":5632,
				"summary":"412 errors in 5632 lines over the last 1h (7.3%), mostly \"upstream timeout: payments-gateway did not answer within 3000ms\" (70% of 200 scanned), first seen 2026-11-25T09:11:42Z.",
				"top_errors":[
					{"message":"upstream timeout: payments-gateway did not answer within 3000ms","count":139,"first_seen":"2026-11-25T09:11:42Z"},
					{"message":"circuit breaker open: payments-gateway","count":47,"first_seen":"2026-11-25T09:14:05Z"},
					{"message":"card authorisation failed: context deadline exceeded","count":12,"first_seen":"2026-11-25T09:12:31Z"},
					{"message":"connection reset by peer: inventory-cache","count":2,"first_seen":"2026-11-25T09:07:30Z"}]}`},
		{name: "checkout 1h, all lines scanned", ref: "logs.search", args: `{"service":"checkout","since":"1h","limit":1000}`,
			want: `{"error_count":412,"total":5632,
				"summary":"412 errors in 5632 lines over the last 1h (7.3%), mostly \"upstream timeout: payments-gateway did not answer within 3000ms\" (69% of 412 scanned), first seen 2026-11-25T09:11:42Z.",
				"top_errors":[
					{"message":"upstream timeout: payments-gateway did not answer within 3000ms","count":286,"first_seen":"2026-11-25T09:11:42Z"},
					{"message":"circuit breaker open: payments-gateway","count":98,"first_seen":"2026-11-25T09:14:05Z"},
					{"message":"card authorisation failed: context deadline exceeded","count":24,"first_seen":"2026-11-25T09:12:31Z"},
					{"message":"connection reset by peer: inventory-cache","count":4,"first_seen":"2026-11-25T09:07:30Z"}]}`},
		{name: "search is quiet", ref: "logs.search", args: `{"service":"search","since":"1h"}`,
			want: `{"error_count":3,"total":2403,"summary":"3 errors in 2403 lines over the last 1h (0.1%); no single error stands out.",
				"top_errors":[{"message":"suggest index shard 7 returned partial results","count":3,"first_seen":"2026-11-25T09:10:00Z"}]}`},
		{name: "phrase", ref: "logs.search", args: `{"service":"checkout","since":"24h","query":"Circuit Breaker"}`,
			want: `{"error_count":98,"total":125784,
				"summary":"98 errors matching \"Circuit Breaker\" in 125784 lines over the last 24h (0.1%), mostly \"circuit breaker open: payments-gateway\" (100% of 98 scanned), first seen 2026-11-25T09:14:05Z.",
				"top_errors":[{"message":"circuit breaker open: payments-gateway","count":98,"first_seen":"2026-11-25T09:14:05Z"}]}`},
		{name: "no match", ref: "logs.search", args: `{"service":"auth","since":"30m","query":"panic"}`,
			want: `{"error_count":0,"total":753,"summary":"No errors matching \"panic\" in 753 lines over the last 30m.","top_errors":[]}`},
		{name: "tiny window", ref: "logs.search", args: `{"service":"auth","since":"500ms"}`},
		{name: "huge window", ref: "logs.search", args: `{"service":"checkout","since":"99999999999999h"}`},
		{name: "unknown service", ref: "logs.search", args: `{"service":"billing","since":"1h"}`, wantErr: `unknown service "billing"; known services: auth, checkout, search`},
		{name: "no since", ref: "logs.search", args: `{"service":"checkout"}`, wantErr: "since is required", invalid: true},
		{name: "bad since", ref: "logs.search", args: `{"service":"checkout","since":"1 hour"}`, wantErr: `since: "1 hour" is not a duration`, invalid: true},
		{name: "zero since", ref: "logs.search", args: `{"service":"checkout","since":"0m"}`, wantErr: "longer than zero"},
		{name: "limit zero", ref: "logs.search", args: `{"service":"checkout","since":"1h","limit":0}`, wantErr: "limit: 0 is not between 1 and 1000", invalid: true},

		// metrics
		{name: "checkout 1h", ref: "metrics.query", args: `{"service":"checkout"}`,
			want: `{"service":"checkout","window":"1h","error_rate":0.0668,"latency_p50_ms":289,"latency_p99_ms":1902,"requests_per_min":1394}`},
		{name: "checkout 15m error rate", ref: "metrics.query", args: `{"service":"checkout","since":"15m","metric":"error_rate"}`,
			want: `{"service":"checkout","window":"15m","error_rate":0.083}`},
		{name: "checkout 24h", ref: "metrics.query", args: `{"service":"checkout","since":"24h","metric":"all"}`,
			want: `{"service":"checkout","window":"24h","error_rate":0.0047,"latency_p50_ms":94,"latency_p99_ms":376,"requests_per_min":1448}`},
		{name: "search latency", ref: "metrics.query", args: `{"service":"search","metric":"latency"}`,
			want: `{"service":"search","window":"1h","error_rate":0.0012,"latency_p50_ms":45,"latency_p99_ms":180}`},
		{name: "auth traffic", ref: "metrics.query", args: `{"service":"auth","metric":"traffic","since":"30m"}`,
			want: `{"service":"auth","window":"30m","error_rate":0.0004,"requests_per_min":900}`},
		{name: "unknown service", ref: "metrics.query", args: `{"service":"billing"}`, wantErr: `unknown service "billing"`},
		{name: "bad metric", ref: "metrics.query", args: `{"service":"checkout","metric":"cpu"}`, wantErr: `metric: "cpu" is not one of all, error_rate, latency, traffic`, invalid: true},
		{name: "no service", ref: "metrics.query", args: `{}`, wantErr: "service is required", invalid: true},

		// deploys
		{name: "checkout", ref: "deploys.list_recent", args: `{"service":"checkout","limit":2}`,
			want: `{"deploys":[
				{"id":"D-311","version":"v2.14.0","environment":"production","at":"2026-11-25T09:05:00Z","author":"lee.chen"},
				{"id":"D-310","version":"v2.14.0","environment":"staging","at":"2026-11-24T16:20:00Z","author":"lee.chen"}]}`},
		{name: "search, default limit", ref: "deploys.list_recent", args: `{"service":"search"}`,
			want: `{"deploys":[
				{"id":"D-309","version":"v4.2.1","environment":"production","at":"2026-11-24T11:30:00Z","author":"priya.n"},
				{"id":"D-308","version":"v4.2.1","environment":"staging","at":"2026-11-24T09:00:00Z","author":"priya.n"},
				{"id":"D-297","version":"v4.2.0","environment":"production","at":"2026-11-17T15:20:00Z","author":"sam.ortiz"}]}`},
		{name: "unknown service", ref: "deploys.list_recent", args: `{"service":"billing"}`, wantErr: `unknown service "billing"`},
		{name: "limit too big", ref: "deploys.list_recent", args: `{"service":"checkout","limit":51}`, wantErr: "limit: 51 is not between 1 and 50", invalid: true},
		{name: "to staging", ref: "deploys.deploy", args: `{"service":"checkout","version":"v2.14.1","environment":"staging"}`,
			want: `{"id":"D-312","service":"checkout","version":"v2.14.1","environment":"staging","previous_version":"v2.14.0","at":"2026-11-25T10:01:00Z"}`},
		{name: "to production", ref: "deploys.deploy", args: `{"service":"auth","version":"1.9.0","environment":"production"}`,
			want: `{"id":"D-312","service":"auth","version":"1.9.0","environment":"production","previous_version":"v1.8.3","at":"2026-11-25T10:01:00Z"}`},
		{name: "first to staging", ref: "deploys.deploy", args: `{"service":"auth","version":"v1.9.0","environment":"staging"}`,
			want: `{"id":"D-312","service":"auth","version":"v1.9.0","environment":"staging","at":"2026-11-25T10:01:00Z"}`},
		{name: "bad version", ref: "deploys.deploy", args: `{"service":"checkout","version":"latest","environment":"staging"}`, wantErr: `version: "latest" does not look like a version`, invalid: true},
		{name: "bad environment", ref: "deploys.deploy", args: `{"service":"checkout","version":"v2.14.1","environment":"qa"}`, wantErr: `environment: "qa" is not one of staging, production`, invalid: true},
		{name: "missing all", ref: "deploys.deploy", args: `{}`, wantErr: "service is required; version is required; environment is required", invalid: true},
		{name: "unknown service", ref: "deploys.deploy", args: `{"service":"billing","version":"v1.0.0","environment":"staging"}`, wantErr: `unknown service "billing"`},
		{name: "roll back", ref: "deploys.rollback", args: `{"service":"checkout","to_version":"v2.13.2"}`,
			want: `{"id":"D-312","service":"checkout","version":"v2.13.2","previous_version":"v2.14.0","at":"2026-11-25T10:01:00Z"}`},
		{name: "roll back without v", ref: "deploys.rollback", args: `{"service":"checkout","to_version":"2.13.0"}`,
			want: `{"id":"D-312","service":"checkout","version":"v2.13.0","previous_version":"v2.14.0","at":"2026-11-25T10:01:00Z"}`},
		{name: "roll back to current", ref: "deploys.rollback", args: `{"service":"checkout","to_version":"v2.14.0"}`, wantErr: "checkout already runs v2.14.0 in production"},
		{name: "roll back to staging-only or unknown", ref: "deploys.rollback", args: `{"service":"checkout","to_version":"v9.9.9"}`,
			wantErr: "checkout was never in production at v9.9.9; earlier production versions, newest first: v2.13.2, v2.13.1, v2.13.0"},
		{name: "roll back bad version", ref: "deploys.rollback", args: `{"service":"checkout","to_version":""}`, wantErr: "to_version is required", invalid: true},

		// chat
		{name: "post", ref: "chat.post", args: `{"channel":"#payments-oncall","text":"Investigating INC-1042."}`,
			want: `{"message_id":"M-1","channel":"#payments-oncall","at":"2026-11-25T10:01:00Z"}`},
		{name: "no #", ref: "chat.post", args: `{"channel":"sre","text":"hi"}`, wantErr: `channel: "sre" does not look like a channel name`, invalid: true},
		{name: "empty text", ref: "chat.post", args: `{"channel":"#sre","text":""}`, wantErr: "text is required", invalid: true},
		{name: "text too long", ref: "chat.post", args: `{"channel":"#sre","text":"` + strings.Repeat("é", 4001) + `"}`, wantErr: "text: 4001 characters, at most 4000", invalid: true},

		// tickets
		{name: "create", ref: "tickets.create", args: `{"title":"Incident INC-1042 analysis","body":"Service: checkout & more <b>","severity":"high"}`,
			want: `{"id":"T-1","url":"https://tickets.example.com/T-1"}`},
		{name: "create with empty body", ref: "tickets.create", args: `{"title":"x","body":""}`, want: `{"id":"T-1","url":"https://tickets.example.com/T-1"}`},
		{name: "no body", ref: "tickets.create", args: `{"title":"x"}`, wantErr: "body is required", invalid: true},
		{name: "bad severity", ref: "tickets.create", args: `{"title":"x","body":"y","severity":"urgent"}`, wantErr: `severity: "urgent" is not one of critical, high, medium, low`, invalid: true},
		{name: "title too long", ref: "tickets.create", args: `{"title":"` + strings.Repeat("t", 201) + `","body":""}`, wantErr: "title: 201 characters, at most 200", invalid: true},
		{name: "get", ref: "tickets.get", args: `{"id":"T-1"}`, setup: [][2]string{{"create", `{"title":"Disk full","body":"on db-3"}`}},
			want: `{"id":"T-1","title":"Disk full","body":"on db-3","severity":"medium","status":"open","url":"https://tickets.example.com/T-1","created_at":"2026-11-25T10:01:00Z"}`},
		{name: "get before create", ref: "tickets.get", args: `{"id":"T-1"}`, wantErr: `ticket "T-1" not found: no tickets have been created yet`},
		{name: "get without id", ref: "tickets.get", args: `{}`, wantErr: "id is required", invalid: true},
	}
}

// Every tool, through a real mcp-go client, on a fresh server per case:
// successes match their outputSchema (and the exact expected data where
// given), failures are tool errors with a clear text, and the handlers'
// argument checks agree with the input schemas.
func TestTools(t *testing.T) {
	sch := testSchemas(t)
	succeeded := map[string]bool{}
	for _, tc := range toolCases() {
		t.Run(tc.ref+"/"+tc.name, func(t *testing.T) {
			backend, tool, _ := strings.Cut(tc.ref, ".")
			c := connect(t, t.Context(), backend, nil)

			args, err := jsonschema.UnmarshalJSON(strings.NewReader(tc.args))
			if err != nil {
				t.Fatal(err)
			}
			if err := sch.in[tc.ref].Validate(args); tc.invalid != (err != nil) {
				t.Errorf("input schema says %v about %s; the case says invalid=%v", err, tc.args, tc.invalid)
			}

			for _, s := range tc.setup {
				if res, err := callTool(t.Context(), c, s[0], s[1]); err != nil || res.IsError {
					t.Fatalf("setup %s %s: %v %s", s[0], s[1], err, text(res))
				}
			}
			res, err := callTool(t.Context(), c, tool, tc.args)
			if err != nil {
				t.Fatalf("CallTool: %v", err)
			}
			if tc.wantErr != "" || tc.invalid {
				if !res.IsError {
					t.Fatalf("succeeded, want a tool error %q", tc.wantErr)
				}
				if !strings.Contains(text(res), tc.wantErr) {
					t.Errorf("tool error %q, want it to contain %q", text(res), tc.wantErr)
				}
				if res.StructuredContent != nil {
					t.Errorf("tool error with structuredContent %v", res.StructuredContent)
				}
				return
			}
			got := output(t, tc.ref, res)
			succeeded[tc.ref] = true
			if tc.want != "" {
				if d := cmp.Diff(decode(t, tc.want), got); d != "" {
					t.Errorf("output (-want +got):\n%s", d)
				}
			}
		})
	}
	for _, ref := range sch.refs {
		if !succeeded[ref] {
			t.Errorf("no successful case for %s", ref)
		}
	}
}

// Writes change later reads on the same server, and ids follow creation
// order.
func TestState(t *testing.T) {
	ctx := t.Context()
	type step struct {
		tool, args string
		want       string // exact output; "" = schema only
		wantErr    string
	}
	tests := []struct {
		backend string
		steps   []step
	}{
		{"tickets", []step{
			{tool: "create", args: `{"title":"First","body":"one"}`, want: `{"id":"T-1","url":"https://tickets.example.com/T-1"}`},
			{tool: "create", args: `{"title":"Second","body":"two\nlines","severity":"critical"}`, want: `{"id":"T-2","url":"https://tickets.example.com/T-2"}`},
			{tool: "get", args: `{"id":"T-1"}`, want: `{"id":"T-1","title":"First","body":"one","severity":"medium","status":"open","url":"https://tickets.example.com/T-1","created_at":"2026-11-25T10:01:00Z"}`},
			{tool: "get", args: `{"id":"T-2"}`, want: `{"id":"T-2","title":"Second","body":"two\nlines","severity":"critical","status":"open","url":"https://tickets.example.com/T-2","created_at":"2026-11-25T10:02:00Z"}`},
			{tool: "get", args: `{"id":"T-3"}`, wantErr: `ticket "T-3" not found; tickets: T-1 to T-2`},
		}},
		{"deploys", []step{
			{tool: "deploy", args: `{"service":"checkout","version":"v2.14.1","environment":"production"}`,
				want: `{"id":"D-312","service":"checkout","version":"v2.14.1","environment":"production","previous_version":"v2.14.0","at":"2026-11-25T10:01:00Z"}`},
			{tool: "list_recent", args: `{"service":"checkout","limit":2}`,
				want: `{"deploys":[{"id":"D-312","version":"v2.14.1","environment":"production","at":"2026-11-25T10:01:00Z","author":"vmcp"},{"id":"D-311","version":"v2.14.0","environment":"production","at":"2026-11-25T09:05:00Z","author":"lee.chen"}]}`},
			// v2.14.0 is an earlier production version now.
			{tool: "rollback", args: `{"service":"checkout","to_version":"v2.14.0"}`,
				want: `{"id":"D-313","service":"checkout","version":"v2.14.0","previous_version":"v2.14.1","at":"2026-11-25T10:02:00Z"}`},
			{tool: "rollback", args: `{"service":"checkout","to_version":"v2.14.0"}`, wantErr: "already runs v2.14.0"},
			{tool: "list_recent", args: `{"service":"checkout","limit":1}`,
				want: `{"deploys":[{"id":"D-313","version":"v2.14.0","environment":"production","at":"2026-11-25T10:02:00Z","author":"vmcp"}]}`},
			// Other services are untouched.
			{tool: "list_recent", args: `{"service":"auth","limit":1}`,
				want: `{"deploys":[{"id":"D-307","version":"v1.8.3","environment":"production","at":"2026-11-23T13:40:00Z","author":"omar.haddad"}]}`},
		}},
		{"incidents", []step{
			{tool: "page_oncall", args: `{"id":"INC-1042"}`, want: `{"page_id":"PG-1","paged":"Dana Whitfield (payments on-call)","at":"2026-11-25T10:01:00Z"}`},
			{tool: "page_oncall", args: `{"id":"INC-1042"}`, want: `{"page_id":"PG-2","paged":"Dana Whitfield (payments on-call)","at":"2026-11-25T10:02:00Z"}`},
			{tool: "add_note", args: `{"id":"INC-1042","text":"Rolled back."}`, want: `{"note_id":"N-3","at":"2026-11-25T10:03:00Z"}`},
		}},
		{"chat", []step{
			{tool: "post", args: `{"channel":"#sre","text":"a"}`, want: `{"message_id":"M-1","channel":"#sre","at":"2026-11-25T10:01:00Z"}`},
			{tool: "post", args: `{"channel":"#deploys","text":"b"}`, want: `{"message_id":"M-2","channel":"#deploys","at":"2026-11-25T10:02:00Z"}`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.backend, func(t *testing.T) {
			c := connect(t, ctx, tt.backend, nil)
			for i, s := range tt.steps {
				ref := tt.backend + "." + s.tool
				res, err := callTool(ctx, c, s.tool, s.args)
				if err != nil {
					t.Fatalf("step %d %s: %v", i, ref, err)
				}
				if s.wantErr != "" {
					if !res.IsError || !strings.Contains(text(res), s.wantErr) {
						t.Fatalf("step %d %s: got %q (isError %v), want a tool error containing %q", i, ref, text(res), res.IsError, s.wantErr)
					}
					continue
				}
				got := output(t, ref, res)
				if s.want != "" {
					if d := cmp.Diff(decode(t, s.want), got); d != "" {
						t.Errorf("step %d %s (-want +got):\n%s", i, ref, d)
					}
				}
			}
		})
	}
	// A new server starts from the seed again.
	c := connect(t, ctx, "tickets", nil)
	res, err := callTool(ctx, c, "get", `{"id":"T-1"}`)
	if err != nil || !res.IsError {
		t.Errorf("fresh tickets server knows T-1: %v %s", err, text(res))
	}
}

// Concurrent writes get distinct ids (and -race finds no data race).
func TestConcurrentWrites(t *testing.T) {
	ctx := t.Context()
	c := connect(t, ctx, "tickets", nil)
	const n = 20
	ids := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			res, err := callTool(ctx, c, "create", `{"title":"t","body":"b"}`)
			if err != nil || res.IsError {
				t.Errorf("create: %v %s", err, text(res))
				return
			}
			ids <- res.StructuredContent.(map[string]any)["id"].(string)
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("duplicate id %s", id)
		}
		seen[id] = true
	}
	if len(seen) != n || !seen["T-1"] || !seen["T-20"] {
		t.Errorf("ids %v, want T-1 … T-20", seen)
	}
}

func TestFail(t *testing.T) {
	ctx := t.Context()
	opts := &demo.Options{Fail: map[string]int{"logs.search": 2, "tickets.create": 1}}
	c := connect(t, ctx, "logs", opts)
	args := `{"service":"search","since":"1h"}`
	for i, want := range []string{"injected failure 1 of 2 for logs.search", "injected failure 2 of 2 for logs.search", ""} {
		res, err := callTool(ctx, c, "search", args)
		if err != nil {
			t.Fatal(err)
		}
		if want == "" {
			output(t, "logs.search", res)
			continue
		}
		if !res.IsError || text(res) != want+" (demo Options.Fail)" {
			t.Errorf("call %d: %q (isError %v), want tool error %q", i+1, text(res), res.IsError, want)
		}
	}
	// The same Options on another server: its own count.
	c2 := connect(t, ctx, "logs", opts)
	if res, _ := callTool(ctx, c2, "search", args); !res.IsError {
		t.Error("second server: first call did not fail")
	}
}

func TestDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		opts := &demo.Options{Delay: map[string]time.Duration{"metrics.query": 30 * time.Second}}
		c := connect(t, ctx, "metrics", opts)

		start := time.Now()
		res, err := callTool(ctx, c, "query", `{"service":"auth"}`)
		if err != nil {
			t.Fatal(err)
		}
		output(t, "metrics.query", res)
		if d := time.Since(start); d != 30*time.Second {
			t.Errorf("call took %v, want 30s", d)
		}

		// A deadline shorter than the delay ends the call early.
		short, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start = time.Now()
		if _, err := callTool(short, c, "query", `{"service":"auth"}`); err == nil {
			t.Error("call with a 10s deadline succeeded despite a 30s delay")
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Errorf("cancelled call took %v, want 10s", d)
		}
		synctest.Wait() // the handler's wait ends with the request
	})
}
