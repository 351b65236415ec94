package dsl

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func TestLoadConfigSpecExample(t *testing.T) {
	data, err := os.ReadFile("testdata/config/vmcp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, ds := LoadConfig("testdata/config/vmcp.yaml", data, env(map[string]string{"PD_TOKEN": "s3cret"}))
	if len(ds) > 0 {
		t.Fatalf("unexpected diagnostics:\n%v", ds)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", what, diff)
		}
	}
	check("name", cfg.Name.Value, "incident-gateway")
	check("dir", cfg.Dir, "testdata/config")
	check("retention", cfg.State.Retention.Value, 168*time.Hour)
	check("backends", len(cfg.Backends), 3)
	pd := cfg.Backend("pagerduty")
	check("pd kind", pd.Kind(), BackendURL)
	check("pd header", pd.Headers["Authorization"].Value, "Bearer s3cret")
	check("pd timeout", pd.Timeout.Value, 30*time.Second)
	files := cfg.Backend("files")
	check("files kind", files.Kind(), BackendCommand)
	check("files argv", files.Argv(), []string{"npx", "-y", "@modelcontextprotocol/server-filesystem", "/srv"})
	check("files transport", files.Transport.Value, "")
	check("logs kind", cfg.Backend("logs").Kind(), BackendBuiltin)
	check("override", cfg.Aggregation.Tools[0].Overrides["read_file"].Name.Value, "read_srv_file")
	check("override hint", cfg.Aggregation.Tools[0].Overrides["read_file"].Annotations.ReadOnlyHint.Value, true)
	check("prefix", cfg.Aggregation.Prefix("files"), "files_")
	check("tokens", len(cfg.IncomingAuth.Tokens), 2)
	check("token env", cfg.IncomingAuth.Tokens[1].TokenEnv.Value, "CI_BOT_TOKEN")
	check("outgoing pd", cfg.OutgoingAuth.For("pagerduty").Type.Value, OutTokenExchange)
	check("outgoing files (bare form)", cfg.OutgoingAuth.For("files").Type.Value, OutPassThrough)
	check("outgoing default", cfg.OutgoingAuth.For("logs").Type.Value, OutNone)
	check("policies", cfg.Authz.Policies[1].Deny.Set, true)

	var names []string
	for _, wf := range cfg.LoadedWorkflows {
		names = append(names, wf.Name.Value+"@"+wf.Src.Name)
	}
	check("workflows", names, []string{
		"tool_a@testdata/config/workflows/a.yaml",
		"tool_b@testdata/config/workflows/b.yaml",
		"tool_extra@testdata/config/more/extra.yaml",
		"inline_tool@testdata/config/vmcp.yaml",
	})
	inline := cfg.CompositeTools[0]
	check("inline src is the config", inline.Src == cfg.Src, true)
	check("inline pos", inline.Pos().String(), "testdata/config/vmcp.yaml:31:5")
	args, err := NodeValue(inline.Steps[0].Arguments.Node)
	if err != nil {
		t.Fatal(err)
	}
	check("composite tools are not expanded", args, map[string]any{"q": "${NOT_EXPANDED}"})
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, ds := LoadConfig("vmcp.yaml", []byte("backends: [{name: web, url: 'https://x/mcp'}]\n"), env(nil))
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	type row struct {
		what string
		got  any
		want any
	}
	for _, r := range []row{
		{"name", cfg.Name.Value, "vmcp"},
		{"listen", cfg.Listen.Value, "127.0.0.1:4483"},
		{"listen not set", cfg.Listen.Set, false},
		{"state path", cfg.State.Path.Value, ".vmcp/state.db"},
		{"retention", cfg.State.Retention.Value, 168 * time.Hour},
		{"transport", cfg.Backends[0].Transport.Value, TransportStreamableHTTP},
		{"conflict", cfg.Aggregation.ConflictResolution.Value, ConflictPrefix},
		{"prefix", cfg.Aggregation.PrefixFormat.Value, "{backend}_"},
		{"interval", cfg.Health.Interval.Value, 30 * time.Second},
		{"health timeout", cfg.Health.Timeout.Value, 10 * time.Second},
		{"unhealthy", cfg.Health.UnhealthyThreshold.Value, 3},
		{"failure", cfg.Health.FailureThreshold.Value, 5},
		{"open_for", cfg.Health.OpenFor.Value, 60 * time.Second},
		{"live_wait", cfg.Elicitation.LiveWait.Value, 60 * time.Second},
		{"incoming", cfg.IncomingAuth.Type.Value, AuthAnonymous},
		{"outgoing", cfg.OutgoingAuth.Default.Type.Value, OutNone},
		{"dir", cfg.Dir, "."},
	} {
		if diff := cmp.Diff(r.want, r.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", r.what, diff)
		}
	}
}

func TestLoadConfigErrors(t *testing.T) {
	l := newTestLoader(t)
	tests := []struct {
		name string
		src  string
		env  map[string]string
		want []string
	}{
		{
			name: "empty",
			src:  "",
			want: []string{`c.yaml: the file is empty; a config file is a YAML mapping (backends: …)`},
		},
		{
			name: "environment",
			env:  map[string]string{"SET": "v", "EMPTY": ""},
			src: `name: "${SET}${EMPTY}"
listen: ${UNSET_ONE}:4483
backends:
  - name: web
    url: https://host/mcp
    headers:
      A: "Bearer ${TOKEN}"
      B: "${BAD-NAME} $${LITERAL} ${OPEN"
`,
			want: []string{
				`c.yaml:2:9: environment variable UNSET_ONE is not set (in listen)`,
				`c.yaml:7:18: environment variable TOKEN is not set (in backends[0].headers.A)`,
				`c.yaml:8:11: invalid variable reference ${BAD-NAME}: write ${NAME} with letters, digits and _ (or $${ for a literal ${) (in backends[0].headers.B)`,
				`c.yaml:8:35: unterminated ${ (write $${ for a literal ${) (in backends[0].headers.B)`,
			},
		},
		{
			name: "backends",
			src: `backends:
  - name: web
    urll: https://x
  - name: both
    url: https://x
    command: [run]
  - name: cmd
    command: "npx server"
    transport: sse
    headers: {A: b}
  - name: Bad_Name
    builtin: logs
    env: {A: 1}
  - name: web
    url: ftp://x
    timeout: 5
    protocol_version: latest
`,
			want: []string{
				`c.yaml:2:5: backend "web": exactly one of "url", "command" or "builtin" must be set`,
				`c.yaml:3:5: unknown key "urll" in backend "web"; did you mean "url"?`,
				`c.yaml:4:5: backend "both": exactly one of "url", "command" or "builtin" must be set`,
				`c.yaml:8:14: "command" of backend "cmd" must be a list such as [npx, -y, server-name], got "npx server"`,
				`c.yaml:9:5: "transport" of backend "cmd" applies only to backends with a url`,
				`c.yaml:10:5: "headers" of backend "cmd" applies only to backends with a url`,
				`c.yaml:11:11: "name" of backend #4: "Bad_Name" is not a valid backend name: use lowercase letters, digits, _ and - (at most 32 characters, starting with a letter or digit)`,
				`c.yaml:13:5: "env" of backend "Bad_Name" applies only to backends with a command`,
				`c.yaml:14:11: duplicate backend name "web" (first defined at line 2)`,
				`c.yaml:15:10: "url" of backend "web": "ftp://x" is not an http:// or https:// URL`,
				`c.yaml:16:14: "timeout" of backend "web": 5 is not a duration (use e.g. 30s, 5m, 1h30m)`,
				`c.yaml:17:23: "protocol_version" of backend "web": "latest" is not an MCP protocol version (a date such as 2025-06-18)`,
			},
		},
		{
			name: "aggregation",
			src: `backends:
  - {name: files, builtin: files}
  - {name: logs, builtin: logs}
aggregation:
  conflict_resolution: priorty
  prefix_format: "{server}_"
  priority_order: [files, fils, files]
  tools:
    - backend: lgs
    - backend: files
      overrides:
        read: {name: "bad name", descripton: x}
    - backend: files
  extra: 1
`,
			want: []string{
				`c.yaml:5:24: "aggregation.conflict_resolution" must be one of prefix, priority, manual, got "priorty"; did you mean "priority"?`,
				`c.yaml:6:18: "prefix_format": unknown placeholder "{server}"; only {backend} is replaced`,
				`c.yaml:7:27: unknown backend "fils" in aggregation.priority_order; did you mean "files"?`,
				`c.yaml:7:33: "aggregation.priority_order" lists "files" twice`,
				`c.yaml:9:16: unknown backend "lgs" in aggregation.tools[0]; did you mean "logs"?`,
				`c.yaml:12:22: "aggregation.tools[1].overrides.read.name": "bad name" is not a valid tool name: use letters, digits, _, - and . (at most 64 characters)`,
				`c.yaml:12:34: unknown key "descripton" in "aggregation.tools[1].overrides.read"; did you mean "description"?`,
				`c.yaml:13:16: backend "files" already has an aggregation.tools entry (line 10); merge them`,
				`c.yaml:14:3: unknown key "extra" in "aggregation" (allowed: conflict_resolution, prefix_format, priority_order, tools)`,
			},
		},
		{
			name: "prefix format characters",
			src:  "aggregation: {prefix_format: \"{backend}: \"}\n",
			want: []string{`c.yaml:1:30: "prefix_format": "{backend}: " would put ":" in tool names; use letters, digits, _, - and . besides {backend}`},
		},
		{
			name: "auth",
			src: `backends: [{name: web, url: "https://x"}]
incoming_auth:
  type: tokens
  issuer: https://idp
  tokens:
    - {principal: a, sha256: abc}
    - {principal: b, token_env: X, token_file: /f}
    - {groups: [x]}
outgoing_auth:
  default: {type: client_credentials, token_url: https://t}
  backends:
    web: nonee
    wbe: {type: headers}
authz:
  policies:
    - {allow: "true", deny: "false"}
    - {alow: x}
`,
			want: []string{
				`c.yaml:4:3: "incoming_auth.issuer" applies only to type: oidc`,
				`c.yaml:6:30: "incoming_auth.tokens[0].sha256": "abc" is not a hex SHA-256 (64 hex digits)`,
				`c.yaml:7:7: "incoming_auth.tokens[1]": exactly one of "sha256", "token_env" or "token_file" must be set`,
				`c.yaml:8:7: "incoming_auth.tokens[2]": exactly one of "sha256", "token_env" or "token_file" must be set`,
				`c.yaml:8:7: "incoming_auth.tokens[2]": missing required key "principal"`,
				`c.yaml:10:12: "outgoing_auth.default": missing required key "client_id"`,
				`c.yaml:12:10: "outgoing_auth.backends.web" must be one of none, error, headers, token_exchange, client_credentials, pass_through, got "nonee"; did you mean "none"?`,
				`c.yaml:13:5: unknown backend "wbe" in outgoing_auth.backends; did you mean "web"?`,
				`c.yaml:13:10: "outgoing_auth.backends.wbe": missing required key "headers"`,
				`c.yaml:16:7: "authz.policies[0]": exactly one of "allow" or "deny" must be set`,
				`c.yaml:17:7: "authz.policies[1]": exactly one of "allow" or "deny" must be set`,
				`c.yaml:17:8: unknown key "alow" in "authz.policies[1]"; did you mean "allow"?`,
			},
		},
		{
			name: "outgoing header values",
			src: `backends: [{name: web, url: "https://x"}]
outgoing_auth:
  backends:
    web:
      type: headers
      headers:
        X-A: plain
        X-B: {value_env: API_KEY}
        X-C: {value_file: /run/key}
        X-D: {value_env: A, value_file: /f}
        X-E: {value_env: "not a name"}
        X-F: {valu: x}
`,
			want: []string{
				`c.yaml:10:14: "outgoing_auth.backends.web.headers.X-D" matches more than one of its alternatives`,
				`c.yaml:11:26: "outgoing_auth.backends.web.headers.X-E.value_env": "not a name" is not an environment variable name`,
				`c.yaml:12:14: "outgoing_auth.backends.web.headers.X-F": missing required key "value"`,
				`c.yaml:12:15: unknown key "valu" in "outgoing_auth.backends.web.headers.X-F"; did you mean "value"?`,
			},
		},
		{
			name: "composite tools",
			src: `composite_tools:
  - name: one
    steps:
      - {id: a, tool: x.y, timout: 5s}
  - name: one
    steps: [{id: b, tool: x.y}, {id: b, tool: x.y}]
  - steps: []
`,
			want: []string{
				`c.yaml:4:28: unknown key "timout" in step "a"; did you mean "timeout"?`,
				`c.yaml:5:11: duplicate composite tool name "one" (also defined at c.yaml:2:11)`,
				`c.yaml:6:38: duplicate step id "b" (first defined at line 6)`,
				`c.yaml:7:5: composite tool #3: missing required key "name"`,
				`c.yaml:7:12: "steps" of composite tool #3 must not be empty`,
			},
		},
		{
			name: "unknown top-level key and wrong types",
			src:  "backend: []\nlisten: 4483\nstate: .vmcp/state.db\nhealth: {interval: 1m, unhealthy_threshold: 0}\ntelemetry: {tracez: {}}\n",
			want: []string{
				`c.yaml:1:1: unknown key "backend" in config; did you mean "backends"?`,
				`c.yaml:2:9: "listen" must be a non-empty string, got 4483`,
				`c.yaml:3:8: "state" must be a mapping, got ".vmcp/state.db"`,
				`c.yaml:4:45: "health.unhealthy_threshold" must be an integer ≥ 1, got 0`,
				`c.yaml:5:13: unknown key "tracez" in "telemetry"; did you mean "traces"?`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ds := l.LoadConfig("c.yaml", []byte(tt.src), env(tt.env))
			if diff := cmp.Diff(tt.want, diagStrings(ds)); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadConfigWorkflowFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("wf/good.yaml", "name: good\nsteps: [{id: a, tool: x.y}]\n")
	write("wf/bad.yaml", "name: bad\nsteps: [{id: a, tol: x.y}]\n")
	write("wf/dup.yaml", "name: good\nsteps: [{id: a, tool: x.y}]\n")
	write("vmcp.yaml", "workflows: [wf/*.yaml, wf/good.yaml, none/*.yaml, nofile.yaml, \"[\"]\n")

	cfgPath := filepath.Join(dir, "vmcp.yaml")
	cfg, ds := LoadConfigFile(cfgPath)
	wfDir := filepath.Join(dir, "wf")
	want := []string{
		cfgPath + `:1:38: "workflows[2]": "none/*.yaml" matches no files (looked for ` + filepath.Join(dir, "none/*.yaml") + `)`,
		cfgPath + `:1:51: "workflows[3]": workflow file "nofile.yaml" does not exist (looked for ` + filepath.Join(dir, "nofile.yaml") + `)`,
		cfgPath + `:1:64: "workflows[4]": bad pattern "[": syntax error in pattern`,
		filepath.Join(wfDir, "bad.yaml") + `:2:9: step "a": missing required key "tool"`,
		filepath.Join(wfDir, "bad.yaml") + `:2:17: unknown key "tol" in step "a"; did you mean "tool"?`,
		filepath.Join(wfDir, "good.yaml") + `:1:7: duplicate composite tool name "good" (also defined at ` + filepath.Join(wfDir, "dup.yaml") + `:1:7)`,
	}
	if diff := cmp.Diff(want, diagStrings(ds)); diff != "" {
		t.Errorf("diagnostics (-want +got):\n%s", diff)
	}
	if got := len(cfg.LoadedWorkflows); got != 3 {
		t.Errorf("loaded %d workflows, want 3 (each file once)", got)
	}

	_, ds = LoadConfigFile(filepath.Join(dir, "absent.yaml"))
	if diff := cmp.Diff([]string{filepath.Join(dir, "absent.yaml") + ": cannot read file: no such file or directory"}, diagStrings(ds)); diff != "" {
		t.Errorf("missing config (-want +got):\n%s", diff)
	}
}
