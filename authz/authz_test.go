package authz

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vmcp-dev/vmcp/dsl"
)

func compile(t *testing.T, src string) (*Policies, dsl.Diagnostics) {
	t.Helper()
	cfg, ds := dsl.LoadConfig("vmcp.yaml", []byte(src), nil)
	if len(ds) > 0 {
		t.Fatalf("config: %v", ds)
	}
	return Compile(cfg)
}

func mustCompile(t *testing.T, src string) *Policies {
	t.Helper()
	p, ds := compile(t, src)
	if len(ds) > 0 {
		t.Fatalf("compile: %v", ds)
	}
	return p
}

const rules = `authz:
  policies:
    - deny: "request.method == 'tools/call' && tool == 'files_write_file'"
    - allow: "'sre' in principal.groups && tool.startsWith('files_')"
    - allow: "principal.name == 'ci' && arguments.env == 'staging'"
    - allow: "principal.claims.?dept.orValue('') == 'ops' && request.backend == 'logs'"
`

func TestDecideFirstMatchWinsDefaultDeny(t *testing.T) {
	p := mustCompile(t, rules)
	sre := &Principal{Name: "alice", Groups: []string{"sre"}}
	ci := &Principal{Name: "ci"}
	ops := &Principal{Name: "olga", Claims: map[string]any{"dept": "ops"}}
	ctx := context.Background()
	cases := []struct {
		name string
		p    *Principal
		r    *Request
		want bool
		rule int
	}{
		{"deny before allow", sre, &Request{Method: MethodToolsCall, Tool: "files_write_file"}, false, 0},
		{"deny only on call", sre, &Request{Method: MethodToolsList, Tool: "files_write_file"}, true, 1},
		{"group allow", sre, &Request{Method: MethodToolsCall, Tool: "files_read"}, true, 1},
		{"default deny", sre, &Request{Method: MethodToolsCall, Tool: "logs_search"}, false, -1},
		{"arguments allow", ci, &Request{Method: MethodToolsCall, Tool: "deploy", Arguments: json.RawMessage(`{"env":"staging"}`)}, true, 2},
		{"arguments deny", ci, &Request{Method: MethodToolsCall, Tool: "deploy", Arguments: json.RawMessage(`{"env":"prod"}`)}, false, -1},
		{"missing argument is no match", ci, &Request{Method: MethodToolsCall, Tool: "deploy"}, false, -1},
		{"claims", ops, &Request{Method: MethodToolsCall, Tool: "logs_search", Backend: "logs"}, true, 3},
		{"no claims", sre, &Request{Method: MethodToolsCall, Tool: "x", Backend: "logs"}, false, -1},
		{"nil principal", nil, &Request{Method: MethodToolsCall, Tool: "files_read"}, false, -1},
	}
	for _, c := range cases {
		d := p.Decide(ctx, c.p, c.r)
		if d.Allowed != c.want || d.Rule != c.rule {
			t.Errorf("%s: got allowed=%v rule=%d (err %v), want %v rule %d", c.name, d.Allowed, d.Rule, d.Err, c.want, c.rule)
		}
	}
}

func TestNoPoliciesAllowAll(t *testing.T) {
	p := mustCompile(t, "name: x\n")
	if p != nil || p.Active() {
		t.Fatal("no policies should compile to nil")
	}
	if d := p.Decide(context.Background(), nil, &Request{Method: MethodToolsCall, Tool: "anything"}); !d.Allowed {
		t.Fatal("no policies must allow")
	}
}

// An evaluation error never grants access: a failing allow does not
// match; a failing deny denies.
func TestEvaluationErrors(t *testing.T) {
	p := mustCompile(t, `authz:
  policies:
    - allow: "principal.claims.dept == 'ops'"
    - allow: "tool == 'open'"
`)
	d := p.Decide(context.Background(), &Principal{Name: "a"}, &Request{Tool: "open"})
	if !d.Allowed || d.Rule != 1 {
		t.Fatalf("failing allow should fall through to the next rule: %+v", d)
	}
	d = p.Decide(context.Background(), &Principal{Name: "a"}, &Request{Tool: "closed"})
	if d.Allowed || d.Err == nil || !strings.Contains(d.Err.Error(), "vmcp.yaml:3:") {
		t.Fatalf("want a positioned evaluation error and deny: %+v", d)
	}

	p = mustCompile(t, `authz:
  policies:
    - deny: "principal.claims.contractor == true"
    - allow: "true"
`)
	d = p.Decide(context.Background(), &Principal{Name: "a"}, &Request{Tool: "open"})
	if d.Allowed || d.Rule != 0 || d.Err == nil {
		t.Fatalf("a deny that cannot be evaluated must deny: %+v", d)
	}
	d = p.Decide(context.Background(), &Principal{Name: "a", Claims: map[string]any{"contractor": false}}, &Request{Tool: "open"})
	if !d.Allowed {
		t.Fatalf("want allowed: %+v", d)
	}
}

func TestCompileErrorsArePositioned(t *testing.T) {
	cases := []struct{ src, want string }{
		{`authz:
  policies:
    - allow: "true"
    - deny: "tool == 'x' &&"
`, "vmcp.yaml:4:"},
		{`authz:
  policies:
    - allow: "principle.name == 'x'"
`, `vmcp.yaml:3:15: authz.policies[0].allow: unknown name "principle"`},
		{`authz:
  policies:
    - allow: "tool"
`, `vmcp.yaml:3:15: authz.policies[0].allow: a policy must be a bool expression`},
		{`authz:
  policies:
    - allow: |
        principal.name == 'x' &&
          tool.startsWith(1)
`, `vmcp.yaml:5:`},
	}
	for _, c := range cases {
		_, ds := compile(t, c.src)
		if len(ds) == 0 {
			t.Errorf("%q: compiled", c.src)
			continue
		}
		if !strings.Contains(ds.Error(), c.want) {
			t.Errorf("%q:\n got %s\nwant %s", c.src, ds.Error(), c.want)
		}
	}
}

func TestTooExpensive(t *testing.T) {
	_, ds := compile(t, `authz:
  policies:
    - allow: "principal.groups.all(a, principal.groups.all(b, principal.groups.all(c, a + b + c != '')))"
`)
	if len(ds) == 0 || !strings.Contains(ds.Error(), "too expensive") {
		t.Fatalf("want a cost error, got %v", ds)
	}
}

func BenchmarkDecide(b *testing.B) {
	cfg, ds := dsl.LoadConfig("vmcp.yaml", []byte(rules), nil)
	if len(ds) > 0 {
		b.Fatal(ds)
	}
	p, ds := Compile(cfg)
	if len(ds) > 0 {
		b.Fatal(ds)
	}
	ctx := context.Background()
	b.Run("allow-first-rule-miss", func(b *testing.B) {
		pr := &Principal{Name: "alice", Groups: []string{"sre", "dev"}}
		req := &Request{Method: MethodToolsCall, Tool: "files_read_file", Backend: "files", BackendTool: "read_file"}
		b.ReportAllocs()
		for b.Loop() {
			if !p.Decide(ctx, pr, req).Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("default-deny-all-rules", func(b *testing.B) {
		pr := &Principal{Name: "ci"}
		req := &Request{Method: MethodToolsCall, Tool: "deploy", Arguments: json.RawMessage(`{"env":"prod","n":3}`)}
		b.ReportAllocs()
		for b.Loop() {
			if p.Decide(ctx, pr, req).Allowed {
				b.Fatal("allowed")
			}
		}
	})
}

// Run-time cost is capped like a condition's, and time as well: a policy
// over a huge argument stops, and (an allow) does not match.
func TestRuntimeLimits(t *testing.T) {
	p := mustCompile(t, `authz:
  policies:
    - allow: "arguments.items.all(x, x != 'z')"
    - allow: "arguments.s.contains('needle')"
    - allow: "tool == 'cheap'"
`)
	if p.rules[0].constant() || p.rules[1].constant() || !p.rules[2].constant() {
		t.Fatalf("constant cost: %v %v %v", p.rules[0].constant(), p.rules[1].constant(), p.rules[2].constant())
	}
	// 12M characters: contains costs more than the limit (1M).
	big := strings.Repeat("a", 12_000_000)
	args, _ := json.Marshal(map[string]any{"s": big, "items": []string{"z"}})
	d := p.Decide(context.Background(), &Principal{Name: "a"}, &Request{Tool: "x", Arguments: args})
	if d.Allowed || d.Err == nil || !strings.Contains(d.Err.Error(), "cost limit") {
		t.Fatalf("want the cost limit to stop the policy: %+v", d)
	}
	// 500,000 items: stopped by the time limit long before the cost limit.
	items := strings.Repeat(`"a",`, 500_000)
	args = json.RawMessage(`{"s":"","items":[` + items + `"a"]}`)
	d = p.Decide(context.Background(), &Principal{Name: "a"}, &Request{Tool: "x", Arguments: args})
	if d.Allowed || d.Err == nil {
		t.Fatalf("want the time limit to stop the policy: %+v", d)
	}
	t.Log(d.Err)
	d = p.Decide(context.Background(), &Principal{Name: "a"}, &Request{Tool: "x", Arguments: json.RawMessage(`{"items":["a","b"]}`)})
	if !d.Allowed || d.Rule != 0 {
		t.Fatalf("small input: %+v", d)
	}
}
