package dsl

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The config AST mirrors schemas/config.schema.json field for field (a
// test keeps them in step). Scalars use the same position-keeping wrappers
// as workflows. After LoadConfig, defaults are filled in: a defaulted field
// has its Value set but Set false and no Node, so "Set" always means "the
// key was in the file".

// Config is a loaded vmcp.yaml.
type Config struct {
	// Src is the config file.
	Src *Source `yaml:"-"`
	// Node is the root mapping.
	Node *yaml.Node `yaml:"-"`
	// Dir is the directory of the config file; workflow globs are relative
	// to it.
	Dir string `yaml:"-"`

	Name           String          `yaml:"name"`   // default "vmcp"
	Listen         String          `yaml:"listen"` // default 127.0.0.1:4483
	State          StateConfig     `yaml:"state"`
	Backends       []*Backend      `yaml:"backends"`
	Aggregation    Aggregation     `yaml:"aggregation"`
	Workflows      []String        `yaml:"workflows"` // files or globs, as written
	CompositeTools []*Workflow     `yaml:"composite_tools"`
	Health         Health          `yaml:"health"`
	IncomingAuth   IncomingAuth    `yaml:"incoming_auth"`
	OutgoingAuth   OutgoingAuth    `yaml:"outgoing_auth"`
	Authz          Authz           `yaml:"authz"`
	Elicitation    ElicitationConf `yaml:"elicitation"`
	Telemetry      Telemetry       `yaml:"telemetry"`

	// LoadedWorkflows are all composite tools: the files matched by
	// Workflows (pattern by pattern, each pattern's matches sorted, each file
	// once), then CompositeTools.
	LoadedWorkflows []*Workflow `yaml:"-"`
}

// Backend returns the backend with the given name, or nil.
func (c *Config) Backend(name string) *Backend {
	for _, b := range c.Backends {
		if b.Name.Value == name {
			return b
		}
	}
	return nil
}

// StateConfig is `state`.
type StateConfig struct {
	Node *yaml.Node `yaml:"-"`
	// Path of the bbolt file; default .vmcp/state.db. A relative path is
	// relative to the working directory, not to the config file: the state
	// belongs to the process that serves, and `vmcp serve --state` takes a
	// path relative to where it runs, so both agree.
	Path String `yaml:"path"`
	// Driver is bbolt (default) or postgres.
	Driver String `yaml:"driver"`
	// DSN of the PostgreSQL database (driver postgres only).
	DSN String `yaml:"dsn"`
	// Retention of finished runs; default 168h.
	Retention Duration `yaml:"retention"`
	// Postgres tunes the postgres driver (allowed only with it).
	Postgres StatePostgres `yaml:"postgres"`
}

// State drivers.
const (
	DriverBbolt    = "bbolt"
	DriverPostgres = "postgres"
)

// StatePostgres is `state.postgres`; zero values mean the driver's
// defaults.
type StatePostgres struct {
	Node             *yaml.Node `yaml:"-"`
	Schema           String     `yaml:"schema"`
	MaxConns         Int        `yaml:"max_conns"`
	LeaseTTL         Duration   `yaml:"lease_ttl"`
	Heartbeat        Duration   `yaml:"heartbeat"`
	SweepInterval    Duration   `yaml:"sweep_interval"`
	StatementTimeout Duration   `yaml:"statement_timeout"`
	// ReplicaID is a stable name for this replica (default random).
	ReplicaID String `yaml:"replica_id"`
	// ListenDSN is a direct connection for LISTEN (default: dsn).
	ListenDSN String `yaml:"listen_dsn"`
	// TokenKeys are base64 of 32 bytes each (checked when loading).
	TokenKeys []String `yaml:"token_keys"`
}

// Backend kinds, by which of url, command or builtin is set.
const (
	BackendURL     = "url"
	BackendCommand = "command"
	BackendBuiltin = "builtin"
)

// Transports of URL backends.
const (
	TransportStreamableHTTP = "streamable-http"
	TransportSSE            = "sse"
)

// Backend is one entry of `backends`: exactly one of URL, Command and
// Builtin is set.
type Backend struct {
	Node            *yaml.Node        `yaml:"-"`
	Name            String            `yaml:"name"`
	URL             String            `yaml:"url"`
	Command         []String          `yaml:"command"`
	Builtin         String            `yaml:"builtin"`
	Transport       String            `yaml:"transport"` // URL backends; default streamable-http
	Headers         map[string]String `yaml:"headers"`
	Timeout         Duration          `yaml:"timeout"`
	Env             map[string]String `yaml:"env"`
	Cwd             String            `yaml:"cwd"`
	ProtocolVersion String            `yaml:"protocol_version"`
	PerClient       Bool              `yaml:"per_client"`
}

// Kind returns BackendURL, BackendCommand or BackendBuiltin ("" if none is
// set, which LoadConfig reports).
func (b *Backend) Kind() string {
	switch {
	case b.URL.Set:
		return BackendURL
	case len(b.Command) > 0:
		return BackendCommand
	case b.Builtin.Set:
		return BackendBuiltin
	}
	return ""
}

// Argv returns the command and its arguments.
func (b *Backend) Argv() []string {
	out := make([]string, len(b.Command))
	for i, s := range b.Command {
		out[i] = s.Value
	}
	return out
}

// Conflict resolution strategies.
const (
	ConflictPrefix   = "prefix"
	ConflictPriority = "priority"
	ConflictManual   = "manual"
)

// Aggregation is `aggregation`.
type Aggregation struct {
	Node               *yaml.Node         `yaml:"-"`
	ConflictResolution String             `yaml:"conflict_resolution"` // default prefix
	PrefixFormat       String             `yaml:"prefix_format"`       // default "{backend}_"
	PriorityOrder      []String           `yaml:"priority_order"`
	Tools              []*ToolAggregation `yaml:"tools"`
}

// Prefix returns the tool-name prefix for a backend: PrefixFormat with
// {backend} replaced.
func (a *Aggregation) Prefix(backend string) string {
	return strings.ReplaceAll(a.PrefixFormat.Value, "{backend}", backend)
}

// ToolAggregation is one entry of `aggregation.tools`.
type ToolAggregation struct {
	Node       *yaml.Node           `yaml:"-"`
	Backend    String               `yaml:"backend"`
	Filter     []String             `yaml:"filter"`
	ExcludeAll Bool                 `yaml:"exclude_all"`
	Overrides  map[string]*Override `yaml:"overrides"` // by original tool name
}

// Override renames or redescribes one backend tool.
type Override struct {
	Node        *yaml.Node   `yaml:"-"`
	Name        String       `yaml:"name"`
	Description String       `yaml:"description"`
	Annotations *Annotations `yaml:"annotations"`
}

// Health is `health`.
type Health struct {
	Node               *yaml.Node `yaml:"-"`
	Interval           Duration   `yaml:"interval"`            // default 30s
	Timeout            Duration   `yaml:"timeout"`             // default 10s
	UnhealthyThreshold Int        `yaml:"unhealthy_threshold"` // default 3
	FailureThreshold   Int        `yaml:"failure_threshold"`   // default 5
	OpenFor            Duration   `yaml:"open_for"`            // default 60s
}

// Incoming authentication types.
const (
	AuthAnonymous = "anonymous"
	AuthTokens    = "tokens"
	AuthOIDC      = "oidc"
)

// IncomingAuth is `incoming_auth`.
type IncomingAuth struct {
	Node      *yaml.Node `yaml:"-"`
	Type      String     `yaml:"type"` // default anonymous
	Tokens    []*Token   `yaml:"tokens"`
	Issuer    String     `yaml:"issuer"`
	Audience  String     `yaml:"audience"`
	JWKSURL   String     `yaml:"jwks_url"`
	ClockSkew Duration   `yaml:"clock_skew"` // default 60s
	// Scopes are advertised in the RFC 9728 metadata (scopes_supported)
	// and in WWW-Authenticate; they are not enforced.
	Scopes []String `yaml:"scopes"`
	// PrincipalClaim names the claim that becomes the principal; default sub.
	PrincipalClaim String `yaml:"principal_claim"`
	// GroupsClaim names the claim holding the principal's groups (a string
	// or an array of strings); default groups.
	GroupsClaim String `yaml:"groups_claim"`

	AllowAnonymousNonLoopback Bool `yaml:"allow_anonymous_non_loopback"`
}

// Token is one static token of incoming_auth type tokens: exactly one of
// SHA256, TokenEnv and TokenFile is set.
type Token struct {
	Node      *yaml.Node `yaml:"-"`
	Principal String     `yaml:"principal"`
	Groups    []String   `yaml:"groups"`
	SHA256    String     `yaml:"sha256"`
	TokenEnv  String     `yaml:"token_env"`
	TokenFile String     `yaml:"token_file"`
}

// Outgoing authentication strategy types.
const (
	OutNone              = "none"
	OutError             = "error"
	OutHeaders           = "headers"
	OutTokenExchange     = "token_exchange"
	OutClientCredentials = "client_credentials"
	OutPassThrough       = "pass_through"
)

// OutgoingAuth is `outgoing_auth`.
type OutgoingAuth struct {
	Node     *yaml.Node               `yaml:"-"`
	Default  AuthStrategy             `yaml:"default"` // default type none
	Backends map[string]*AuthStrategy `yaml:"backends"`
}

// For returns the strategy for a backend: its own, or the default.
func (o *OutgoingAuth) For(backend string) *AuthStrategy {
	if s, ok := o.Backends[backend]; ok && s != nil {
		return s
	}
	return &o.Default
}

// AuthStrategy is how vmcp authenticates to a backend. In YAML it is a bare
// type ("none") or a mapping with type and the strategy's fields.
type AuthStrategy struct {
	Node             *yaml.Node              `yaml:"-"`
	Type             String                  `yaml:"type"`
	Headers          map[string]*HeaderValue `yaml:"headers"`
	TokenURL         String                  `yaml:"token_url"`
	Audience         String                  `yaml:"audience"`
	Scopes           []String                `yaml:"scopes"`
	ClientID         String                  `yaml:"client_id"`
	ClientSecretEnv  String                  `yaml:"client_secret_env"`
	ClientSecretFile String                  `yaml:"client_secret_file"`
	// Service is what token_exchange and pass_through send on requests
	// made without a caller (connect, catalogue, health checks): headers
	// or client_credentials. Without it those requests carry Headers only.
	Service *AuthStrategy `yaml:"service"`
}

// HeaderValue is one header of an outgoing auth strategy: a bare string
// (Value), or a mapping with exactly one of value, value_env (an
// environment variable's name) and value_file (a file holding the value).
type HeaderValue struct {
	Node      *yaml.Node `yaml:"-"`
	Value     String     `yaml:"value"`
	ValueEnv  String     `yaml:"value_env"`
	ValueFile String     `yaml:"value_file"`
}

// UnmarshalYAML accepts a bare value or the mapping form.
func (h *HeaderValue) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	*h = HeaderValue{Node: n}
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		return h.Value.UnmarshalYAML(n)
	}
	decodeStruct(n, reflect.ValueOf(h).Elem())
	return nil
}

// UnmarshalYAML accepts a bare type or the mapping form.
func (a *AuthStrategy) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	*a = AuthStrategy{Node: n}
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		return a.Type.UnmarshalYAML(n)
	}
	decodeStruct(n, reflect.ValueOf(a).Elem())
	return nil
}

// Authz is `authz`.
type Authz struct {
	Node       *yaml.Node `yaml:"-"`
	CheckSteps Bool       `yaml:"check_steps"`
	Policies   []*Policy  `yaml:"policies"`
}

// Policy is one CEL policy: exactly one of Allow and Deny is set.
type Policy struct {
	Node  *yaml.Node `yaml:"-"`
	Allow String     `yaml:"allow"`
	Deny  String     `yaml:"deny"`
}

// ElicitationConf is `elicitation`.
type ElicitationConf struct {
	Node     *yaml.Node `yaml:"-"`
	LiveWait Duration   `yaml:"live_wait"` // default 60s
}

// Telemetry is `telemetry` (docs/observability.md). Zero values are off;
// the OTEL_* environment variables are honoured on top.
type Telemetry struct {
	Node        *yaml.Node     `yaml:"-"`
	ServiceName String         `yaml:"service_name"`
	Traces      TelemetryTrace `yaml:"traces"`
	Metrics     TelemetryMet   `yaml:"metrics"`
	Audit       TelemetryAudit `yaml:"audit"`
}

// TelemetryTrace is `telemetry.traces`.
type TelemetryTrace struct {
	Node             *yaml.Node    `yaml:"-"`
	Exporter         String        `yaml:"exporter"` // none | otlp | stdout
	OTLP             TelemetryOTLP `yaml:"otlp"`
	SamplingRatio    Float         `yaml:"sampling_ratio"`
	PropagateBaggage Bool          `yaml:"propagate_baggage"`
}

// TelemetryOTLP is an OTLP/HTTP destination.
type TelemetryOTLP struct {
	Node     *yaml.Node `yaml:"-"`
	Enabled  Bool       `yaml:"enabled"` // metrics only; traces use exporter
	Endpoint String     `yaml:"endpoint"`
	Interval Duration   `yaml:"interval"` // metrics push interval
}

// TelemetryMet is `telemetry.metrics`.
type TelemetryMet struct {
	Node             *yaml.Node          `yaml:"-"`
	Prometheus       TelemetryPrometheus `yaml:"prometheus"`
	OTLP             TelemetryOTLP       `yaml:"otlp"`
	ToolLabel        Bool                `yaml:"tool_label"` // default true
	CardinalityLimit Int                 `yaml:"cardinality_limit"`
}

// TelemetryPrometheus is `telemetry.metrics.prometheus`.
type TelemetryPrometheus struct {
	Node    *yaml.Node `yaml:"-"`
	Enabled Bool       `yaml:"enabled"`
}

// TelemetryAudit is `telemetry.audit`.
type TelemetryAudit struct {
	Node             *yaml.Node `yaml:"-"`
	Path             String     `yaml:"path"` // "" off, "-" stdout
	IncludeArguments Bool       `yaml:"include_arguments"`
	IncludeAnswers   Bool       `yaml:"include_answers"`
	Redact           []String   `yaml:"redact"`
}

// Defaults.
const (
	DefaultName               = "vmcp"
	DefaultListen             = "127.0.0.1:4483"
	DefaultStatePath          = ".vmcp/state.db"
	DefaultRetention          = 168 * time.Hour
	DefaultPrefixFormat       = "{backend}_"
	DefaultHealthInterval     = 30 * time.Second
	DefaultHealthTimeout      = 10 * time.Second
	DefaultUnhealthyThreshold = 3
	DefaultFailureThreshold   = 5
	DefaultOpenFor            = 60 * time.Second
	DefaultLiveWait           = 60 * time.Second
)

// LoadConfig parses, validates and decodes a config file, loads the
// workflow files it names (relative to the directory of name) and fills in
// defaults. ${VAR} in string values is expanded with lookupEnv (nil means
// os.LookupEnv) except inside composite_tools, which, like workflow files,
// are taken literally. The config is nil only when the file is not a YAML
// mapping; with diagnostics it may be incomplete. Diagnostics (of the config
// and of every workflow file) are sorted.
func LoadConfig(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, Diagnostics) {
	l, ds := newLoader(name, true)
	if l == nil {
		return nil, ds
	}
	return l.LoadConfig(name, data, lookupEnv)
}

// LoadConfigFile reads and loads a config file, expanding ${VAR} from the
// process environment.
func LoadConfigFile(path string) (*Config, Diagnostics) {
	l, ds := newLoader(path, true)
	if l == nil {
		return nil, ds
	}
	return l.LoadConfigFile(path)
}

// LoadConfigFile reads and loads a config file; see the package-level
// LoadConfigFile.
func (l *Loader) LoadConfigFile(path string) (*Config, Diagnostics) {
	data, d, ok := readFile(path)
	if !ok {
		return nil, Diagnostics{d}
	}
	return l.LoadConfig(path, data, os.LookupEnv)
}

// LoadConfig loads a config; see the package-level LoadConfig.
func (l *Loader) LoadConfig(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, Diagnostics) {
	if l == nil || l.workflow == nil || l.config == nil {
		return nil, Diagnostics{{Pos: Pos{File: name}, Msg: "internal error: dsl.Loader used without NewLoader"}}
	}
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	src := NewSource(name, data)
	var ds Diagnostics
	root := parseDocument(src, "config", &ds)
	if root == nil {
		finish(src, &ds)
		return nil, ds
	}
	v := newVerifier(l, src, root, configEntities(), &ds)
	expandEnv(v, lookupEnv)
	v.validate(l.config)

	cfg := &Config{}
	decodeStruct(root, reflect.ValueOf(cfg).Elem())
	cfg.Src, cfg.Dir = src, filepath.Dir(name)
	for _, wf := range cfg.CompositeTools {
		wf.Src = src
		checkWorkflow(wf, &ds)
	}
	checkConfig(v, cfg)
	l.loadWorkflowFiles(cfg, &ds)
	checkWorkflowNames(cfg, &ds)
	applyDefaults(cfg)
	finish(src, &ds)
	return cfg, ds
}

// expandEnv expands ${VAR} in every string value outside composite_tools,
// in place, reporting unset variables and malformed references at their
// position inside the scalar.
func expandEnv(v *verifier, lookupEnv func(string) (string, bool)) {
	var walk func(n *yaml.Node, path []string)
	walk = func(n *yaml.Node, path []string) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if len(path) == 0 && k.Value == "composite_tools" {
					continue
				}
				walk(n.Content[i+1], append(slices.Clip(path), k.Value))
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, append(slices.Clip(path), strconv.Itoa(i)))
			}
		case yaml.ScalarNode:
			if n.ShortTag() != "!!str" || !strings.Contains(n.Value, "$") {
				return
			}
			out, problems := expandString(n.Value, lookupEnv)
			for _, p := range problems {
				v.ds.Add(v.src, v.src.OffsetPos(n, p.offset), "%s (in %s)", p.msg, displayPath(v, path))
				v.bad[pointer(path)] = true // its schema errors would only repeat this
			}
			n.Value = out
		}
		// Aliases are expanded where their anchor is defined.
	}
	walk(v.root, nil)
}

// displayPath renders a full path from the root: backends[0].headers.X.
func displayPath(v *verifier, path []string) string {
	return v.relPath(path, 0)
}

type expandProblem struct {
	offset int
	msg    string
}

// expandString replaces ${NAME} with the variable's value and $${ with ${.
func expandString(s string, lookupEnv func(string) (string, bool)) (string, []expandProblem) {
	var b strings.Builder
	var problems []expandProblem
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				problems = append(problems, expandProblem{i, "unterminated ${ (write $${ for a literal ${)"})
				b.WriteString(s[i:])
				i = len(s)
				continue
			}
			name := s[i+2 : i+2+end]
			ref := s[i : i+3+end]
			switch {
			case !isEnvName(name):
				problems = append(problems, expandProblem{i, fmt.Sprintf("invalid variable reference %s: write ${NAME} with letters, digits and _ (or $${ for a literal ${)", ref)})
				b.WriteString(ref)
			default:
				val, ok := lookupEnv(name)
				if !ok {
					problems = append(problems, expandProblem{i, fmt.Sprintf("environment variable %s is not set", name)})
				}
				b.WriteString(val)
			}
			i += len(ref)
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), problems
}

func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// checkConfig reports what the schema cannot: duplicate backend names,
// references to unknown backends, and prefix formats that cannot work.
func checkConfig(v *verifier, cfg *Config) {
	src, ds := cfg.Src, v.ds
	names := map[string]*Backend{}
	var known []string
	for _, b := range cfg.Backends {
		if b == nil || !b.Name.Set {
			continue
		}
		if first, dup := names[b.Name.Value]; dup {
			ds.Add(src, src.NodePos(b.Name.Node), "duplicate backend name %q (first defined at line %d)", b.Name.Value, first.Name.Node.Line)
			continue
		}
		names[b.Name.Value] = b
		known = append(known, b.Name.Value)
	}
	unknown := func(s String, where string) {
		if s.Set && names[s.Value] == nil {
			ds.Add(src, src.NodePos(s.Node), "unknown backend %q in %s%s", s.Value, where, Suggest(s.Value, known))
		}
	}
	for _, s := range cfg.Aggregation.PriorityOrder {
		unknown(s, "aggregation.priority_order")
	}
	seenTools := map[string]*ToolAggregation{}
	for i, t := range cfg.Aggregation.Tools {
		if t == nil {
			continue
		}
		unknown(t.Backend, fmt.Sprintf("aggregation.tools[%d]", i))
		if !t.Backend.Set {
			continue
		}
		if first, dup := seenTools[t.Backend.Value]; dup {
			ds.Add(src, src.NodePos(t.Backend.Node), "backend %q already has an aggregation.tools entry (line %d); merge them", t.Backend.Value, first.Backend.Node.Line)
			continue
		}
		seenTools[t.Backend.Value] = t
	}
	// outgoing_auth.backends keys, located through the YAML so the message
	// points at the key.
	if _, n := v.locate([]string{"outgoing_auth", "backends"}); resolve(n) != nil && resolve(n).Kind == yaml.MappingNode {
		m := resolve(n)
		for i := 0; i+1 < len(m.Content); i += 2 {
			k := resolve(m.Content[i])
			if k != nil && k.Kind == yaml.ScalarNode && names[k.Value] == nil {
				ds.Add(src, src.NodePos(m.Content[i]), "unknown backend %q in outgoing_auth.backends%s", k.Value, Suggest(k.Value, known))
			}
		}
	}
	if pf := cfg.Aggregation.PrefixFormat; pf.Set && pf.Value != "" {
		checkPrefixFormat(src, pf, ds)
	}
	checkState(src, &cfg.State, ds)
}

// checkState reports settings that do not fit the state driver.
func checkState(src *Source, st *StateConfig, ds *Diagnostics) {
	at := func(n *yaml.Node) Pos {
		if n == nil {
			n = st.Node
		}
		if n == nil {
			return Pos{File: src.Name}
		}
		return src.NodePos(n)
	}
	pg := st.Driver.Value == DriverPostgres
	switch {
	case pg && (!st.DSN.Set || st.DSN.Value == ""):
		ds.Add(src, at(st.Driver.Node), "state.driver is postgres but state.dsn is not set: give the PostgreSQL connection string (e.g. dsn: ${VMCP_STATE_DSN})")
	case !pg && st.DSN.Set:
		ds.Add(src, at(st.DSN.Node), "state.dsn is set but state.driver is %q: dsn is for driver postgres (set driver: postgres, or remove dsn)", driverName(st))
	}
	if pg && st.Path.Set {
		ds.Add(src, at(st.Path.Node), "state.path is for driver bbolt; with driver postgres the runs are in the database (remove path)")
	}
	if !pg && st.Postgres.Node != nil {
		ds.Add(src, at(st.Postgres.Node), "state.postgres is set but state.driver is %q: the postgres settings need driver: postgres", driverName(st))
	}
	p := &st.Postgres
	if p.Heartbeat.Set && p.LeaseTTL.Set && 3*p.Heartbeat.Value > p.LeaseTTL.Value {
		ds.Add(src, at(p.Heartbeat.Node), "state.postgres.heartbeat %v must be at most a third of lease_ttl %v (a replica stops calling backends when its last heartbeat is half a lease old)", p.Heartbeat.Value, p.LeaseTTL.Value)
	}
	for i, k := range p.TokenKeys {
		if _, err := DecodeTokenKey(k.Value); err != nil {
			ds.Add(src, at(k.Node), "state.postgres.token_keys[%d]: %v", i, err)
		}
	}
}

func driverName(st *StateConfig) string {
	if st.Driver.Value == "" {
		return DriverBbolt
	}
	return st.Driver.Value
}

// DecodeTokenKey decodes a configured resume-token key: base64 (standard
// or URL alphabet, padded or not) of exactly 32 bytes.
func DecodeTokenKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("decodes to %d bytes, want 32 (generate one with: head -c 32 /dev/urandom | base64)", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("not base64 (generate one with: head -c 32 /dev/urandom | base64)")
}

// checkPrefixFormat accepts "{backend}" plus letters, digits, _, - and .
// (or such a literal): tool names must stay acceptable to clients.
func checkPrefixFormat(src *Source, pf String, ds *Diagnostics) {
	rest := strings.ReplaceAll(pf.Value, "{backend}", "")
	if i := strings.IndexByte(rest, '{'); i >= 0 {
		ph := rest[i:]
		if j := strings.IndexByte(ph, '}'); j >= 0 {
			ph = ph[:j+1]
		}
		ds.Add(src, src.NodePos(pf.Node), "\"prefix_format\": unknown placeholder %q; only {backend} is replaced", ph)
		return
	}
	for _, r := range rest {
		if !(r == '_' || r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			ds.Add(src, src.NodePos(pf.Node), "\"prefix_format\": %q would put %q in tool names; use letters, digits, _, - and . besides {backend}", pf.Value, string(r))
			return
		}
	}
}

// loadWorkflowFiles resolves the workflow globs and loads each file once.
func (l *Loader) loadWorkflowFiles(cfg *Config, ds *Diagnostics) {
	seen := map[string]bool{}
	// A glob such as *.yaml next to the config matches the config itself:
	// it is not a workflow.
	self, _ := filepath.Abs(cfg.Src.Name)
	for i, p := range cfg.Workflows {
		if !p.Set || p.Value == "" {
			continue
		}
		pat := p.Value
		if !filepath.IsAbs(pat) {
			pat = filepath.Join(cfg.Dir, pat)
		}
		at := cfg.Src.NodePos(p.Node)
		matches, err := filepath.Glob(pat)
		if err != nil {
			ds.Add(cfg.Src, at, "\"workflows[%d]\": bad pattern %q: %v", i, p.Value, err)
			continue
		}
		var files []string
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil && fi.IsDir() {
				continue
			}
			if abs, err := filepath.Abs(m); err == nil && abs == self {
				continue
			}
			files = append(files, m)
		}
		if len(files) == 0 {
			where := ""
			if pat != p.Value {
				where = fmt.Sprintf(" (looked for %s)", pat)
			}
			if strings.ContainsAny(p.Value, "*?[") {
				ds.Add(cfg.Src, at, "\"workflows[%d]\": %q matches no files%s", i, p.Value, where)
			} else {
				ds.Add(cfg.Src, at, "\"workflows[%d]\": workflow file %q does not exist%s", i, p.Value, where)
			}
			continue
		}
		for _, f := range files {
			key := filepath.Clean(f)
			if abs, err := filepath.Abs(f); err == nil {
				key = abs
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			wf, wds := l.LoadWorkflowFile(f)
			ds.Append(wds)
			if wf != nil {
				cfg.LoadedWorkflows = append(cfg.LoadedWorkflows, wf)
			}
		}
	}
	for _, wf := range cfg.CompositeTools {
		if wf != nil {
			cfg.LoadedWorkflows = append(cfg.LoadedWorkflows, wf)
		}
	}
}

// checkWorkflowNames reports two composite tools with the same name.
func checkWorkflowNames(cfg *Config, ds *Diagnostics) {
	first := map[string]*Workflow{}
	for _, wf := range cfg.LoadedWorkflows {
		if !wf.Name.Set || wf.Name.Value == "" {
			continue
		}
		if f, dup := first[wf.Name.Value]; dup {
			ds.Add(wf.Src, wf.Src.NodePos(wf.Name.Node), "duplicate composite tool name %q (also defined at %s)", wf.Name.Value, f.Src.NodePos(f.Name.Node))
			continue
		}
		first[wf.Name.Value] = wf
	}
}

// applyDefaults fills in every default (Set stays false).
func applyDefaults(c *Config) {
	str := func(s *String, d string) {
		if !s.Set {
			s.Value = d
		}
	}
	dur := func(x *Duration, d time.Duration) {
		if !x.Set {
			x.Value = d
		}
	}
	num := func(x *Int, d int) {
		if !x.Set {
			x.Value = d
		}
	}
	str(&c.Name, DefaultName)
	str(&c.Listen, DefaultListen)
	str(&c.State.Driver, DriverBbolt)
	if c.State.Driver.Value == DriverBbolt {
		str(&c.State.Path, DefaultStatePath)
	}
	dur(&c.State.Retention, DefaultRetention)
	for _, b := range c.Backends {
		if b != nil && b.URL.Set {
			str(&b.Transport, TransportStreamableHTTP)
		}
	}
	str(&c.Aggregation.ConflictResolution, ConflictPrefix)
	str(&c.Aggregation.PrefixFormat, DefaultPrefixFormat)
	dur(&c.Health.Interval, DefaultHealthInterval)
	dur(&c.Health.Timeout, DefaultHealthTimeout)
	num(&c.Health.UnhealthyThreshold, DefaultUnhealthyThreshold)
	num(&c.Health.FailureThreshold, DefaultFailureThreshold)
	dur(&c.Health.OpenFor, DefaultOpenFor)
	str(&c.IncomingAuth.Type, AuthAnonymous)
	str(&c.OutgoingAuth.Default.Type, OutNone)
	dur(&c.Elicitation.LiveWait, DefaultLiveWait)
}
