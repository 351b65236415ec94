package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
	"go.yaml.in/yaml/v3"

	"github.com/vmcp-dev/vmcp/authz"
	"github.com/vmcp-dev/vmcp/backends"
	"github.com/vmcp-dev/vmcp/backends/demo"
	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/steps"
	"github.com/vmcp-dev/vmcp/telemetry"
)

// Options tune New; nil is valid.
type Options struct {
	Logger  *slog.Logger
	Version string
	// Health overrides the config's health policy (tests use short
	// intervals).
	Health *backends.HealthPolicy
	// StatePath overrides the config's state.path (the bbolt file).
	StatePath string
	// InProcess serves `builtin: <name>` backends whose name is a key here
	// with that mcp-go server instead of a demo backend (tests and
	// benchmarks build synthetic backends this way).
	InProcess map[string]*mcpserver.MCPServer
	// Telemetry replaces the telemetry built from the config's telemetry
	// block (tests hand in span recorders and manual readers); the caller
	// shuts it down.
	Telemetry *telemetry.T
	// DisableRawCalls sends every tools/call through mcp-go on both sides:
	// no lean path to streamable-HTTP backends and no tools/call served
	// before mcp-go decodes it (see docs/gateway.md); for comparisons and
	// diagnosis.
	DisableRawCalls bool
}

// Gateway is one vmcp: backends, the engine, the catalogue and the MCP
// front. New, then Start, then serve Handler() and/or ServeStdio.
type Gateway struct {
	cfg  *dsl.Config
	log  *slog.Logger
	ver  string
	mgr  *backends.Manager
	eng  *tracedEngine
	tel  *telemetry.T // nil: telemetry off
	mcp  *mcpserver.MCPServer
	runs *runs

	statePath string
	// wrapStore, set by tests before Start, wraps the opened state driver.
	wrapStore func(state.Driver) state.Driver
	ownTel    bool
	cancel    context.CancelFunc
	bg        sync.WaitGroup
	// defs maps a composite's name to the definition its runs store.
	defs atomic.Pointer[map[string]workflowDef]

	// cat is the current catalogue; rebuilt (under buildMu) when a
	// backend's lists or health change.
	cat     atomic.Pointer[catalog]
	buildMu sync.Mutex
	started atomic.Bool
	// pending records a backend change that arrived before Start finished
	// (it is applied right after).
	pending atomic.Bool

	subs   *subscriptions
	bridge *bridge        // backend requests relayed to 2026-07-28 clients
	auth   *authenticator // nil: anonymous
	// tl is the pre-serialised tools/list served over HTTP (toolslist.go).
	tl toolsList
	// az are the authorization policies (authz.go); nil: allow all.
	az     *authz.Policies
	lviews listViews
	// sess mints and validates 2025-11-25 session ids, shared between
	// replicas on PostgreSQL (sessions.go).
	sess *sessions
	// fast tracks tools/call requests served without mcp-go (toolscall.go).
	fast fastCalls
}

// New prepares a gateway from a loaded config.
func New(cfg *dsl.Config, opts *Options) (*Gateway, error) {
	if opts == nil {
		opts = &Options{}
	}
	g := &Gateway{cfg: cfg, log: opts.Logger, ver: opts.Version, subs: newSubscriptions(), bridge: newBridge(), statePath: opts.StatePath}
	g.sess = newSessions(g)
	if g.statePath == "" {
		g.statePath = cfg.State.Path.Value
	}
	if g.statePath == "" {
		g.statePath = ".vmcp/state.db"
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.ver == "" {
		g.ver = "dev"
	}
	if err := g.initTelemetry(opts); err != nil {
		return nil, err
	}
	if g.tel.Tracing() {
		// Log lines written with a traced request's context carry its
		// trace_id and span_id.
		g.log = slog.New(telemetry.LogHandler(g.log.Handler()))
	}
	specs, err := backendSpecsWith(cfg, opts.InProcess)
	if err != nil {
		return nil, err
	}
	auths, err := outgoingAuth(cfg, g.log)
	if err != nil {
		return nil, err
	}
	for i := range specs {
		specs[i].Auth = auths[specs[i].Name]
	}
	if g.auth, err = newAuthenticator(cfg); err != nil {
		return nil, err
	}
	if g.auth != nil {
		g.auth.log = g.log
	}
	if g.az, err = newPolicies(cfg); err != nil {
		return nil, err
	}
	health := backends.HealthPolicy{
		Interval:           cfg.Health.Interval.Value,
		Timeout:            cfg.Health.Timeout.Value,
		UnhealthyThreshold: cfg.Health.UnhealthyThreshold.Value,
		FailureThreshold:   cfg.Health.FailureThreshold.Value,
		OpenFor:            cfg.Health.OpenFor.Value,
	}
	if opts.Health != nil {
		health = *opts.Health
	}
	g.mgr, err = backends.NewManager(specs, &backends.Options{
		Logger: g.log, Relay: relay{g}, Health: health,
		OnChange:      g.onBackendChange,
		OnStateChange: g.noteBackendChange,
		ClientName:    "vmcp", ClientVersion: g.ver,
		DisableRawCalls: opts.DisableRawCalls,
		TraceContext:    g.backendTraceContext(),
	})
	if err != nil {
		return nil, err
	}
	g.eng = &tracedEngine{Engine: engine.New(tracedCaller{caller{mgr: g.mgr, g: g}, g.tel}, &engine.Options{Logger: g.log, Store: checkpointer{g: g}, ReuseWorkers: true}), g: g}
	g.mcp = newMCPServer(g)
	g.tl.watch(g.mcp)
	if g.az.Active() {
		g.tl.filter = g.filteredPages
		g.tl.ownHooks = 1 // the authz list hook: the fast path filters itself
	}
	if g.tel != nil {
		g.tl.observe = g.observeToolsList
	}
	if !observesToolCalls(g.mcp.GetHooks()) && !opts.DisableRawCalls {
		g.tl.call = g.fastCall
		g.tl.cancelled = func(ls *liveSession, body []byte) {
			if ls.session != nil {
				g.fast.cancelled(ls.session.SessionID(), body)
			}
		}
	}
	return g, nil
}

// backendSpecs converts the config's backends.
func backendSpecs(cfg *dsl.Config) ([]backends.Spec, error) { return backendSpecsWith(cfg, nil) }

// backendSpecsWith is backendSpecs with Options.InProcess.
func backendSpecsWith(cfg *dsl.Config, inProcess map[string]*mcpserver.MCPServer) ([]backends.Spec, error) {
	var specs []backends.Spec
	for _, b := range cfg.Backends {
		s := backends.Spec{Name: b.Name.Value, Timeout: b.Timeout.Value, ProtocolVersion: b.ProtocolVersion.Value, PerClient: b.PerClient.Value}
		switch b.Kind() {
		case dsl.BackendURL:
			s.URL, s.Transport = b.URL.Value, b.Transport.Value
			s.Headers = map[string]string{}
			for k, v := range b.Headers {
				s.Headers[k] = v.Value
			}
		case dsl.BackendCommand:
			s.Command, s.Cwd = b.Argv(), b.Cwd.Value
			s.Env = map[string]string{}
			for k, v := range b.Env {
				s.Env[k] = v.Value
			}
		case dsl.BackendBuiltin:
			if srv, ok := inProcess[b.Builtin.Value]; ok {
				s.InProcess = srv
				break
			}
			srv, err := demo.New(b.Builtin.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: backend %q: %w", cfg.Src.NodePos(b.Builtin.Node), b.Name.Value, err)
			}
			s.InProcess = srv
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// Start connects the backends (each is tried once; unreachable ones are
// retried in the background) and builds the catalogue. Name conflicts,
// and workflows that do not compile against the backends, are startup
// errors listing every problem.
func (g *Gateway) Start(ctx context.Context) error {
	r, err := openRuns(ctx, g, g.statePath, g.cfg.State.Retention.Value)
	if err != nil {
		return err
	}
	g.runs = r
	g.mgr.Start(ctx)
	if err := g.rebuild(true); err != nil {
		_ = g.mgr.Close()
		_ = r.close()
		return err
	}
	g.started.Store(true)
	if g.pending.Swap(false) {
		if err := g.rebuild(false); err != nil {
			g.log.Error("catalogue rebuild", "err", err)
		}
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.cancel = cancel
	g.bg.Add(6)
	go func() { defer g.bg.Done(); r.followChanges(bg) }()
	go func() { defer g.bg.Done(); g.sess.pruneLoop(bg) }()
	go func() { defer g.bg.Done(); r.sweepDeadlines(bg) }()
	go func() { defer g.bg.Done(); r.pruneLoop(bg) }()
	go func() { defer g.bg.Done(); r.takeoverLoop(bg) }()
	go func() { defer g.bg.Done(); r.releaseLoop(bg) }()
	for _, st := range g.mgr.Status() {
		if st.State != backends.StateReady {
			g.log.Warn("backend not available at startup; retrying in the background", "backend", st.Name, "err", st.LastError)
		}
	}
	return nil
}

// Close stops the background loops and the backends (children are
// reaped) and closes the state file.
func (g *Gateway) Close() error {
	if g.cancel != nil {
		g.cancel()
	}
	g.bg.Wait()
	g.bridge.close()
	err := g.mgr.Close()
	if g.runs != nil {
		err = errors.Join(err, g.runs.close())
	}
	if g.ownTel {
		err = errors.Join(err, g.shutdownTelemetry())
	}
	return err
}

func (g *Gateway) onBackendChange() {
	if !g.started.Load() {
		g.pending.Store(true)
		return
	}
	if err := g.rebuild(false); err != nil {
		g.log.Error("catalogue rebuild", "err", err)
	}
}

// catalog is one immutable version of what clients see.
type catalog struct {
	// tools by advertised name: composites and backend tools.
	tools map[string]*toolEntry
	// entries are every backend tool, hidden ones included.
	entries []*backends.Entry
	// byRef maps "<backend>.<name>" to entries.
	byRef map[string]*backends.Entry
	// plans are the compiled composites by name.
	plans map[string]*engine.Plan
	snap  *backends.Snapshot
}

type toolEntry struct {
	name      string
	plan      *engine.Plan
	composite bool
	backend   string
	// backendTool is the backend's own name of the tool.
	backendTool string
}

// rebuild aggregates the backends' tools, compiles the workflows against
// them and installs the new tool list. At startup every problem is an
// error; later, problems are logged and the previous tools stay.
func (g *Gateway) rebuild(startup bool) error {
	g.buildMu.Lock()
	defer g.buildMu.Unlock()
	snap := g.mgr.Snapshot()
	all := g.mgr.AllTools()

	reserved := map[string]string{}
	for _, wf := range g.cfg.LoadedWorkflows {
		reserved[wf.Name.Value] = fmt.Sprintf("composite tool %q (%s)", wf.Name.Value, wf.Pos())
	}
	rules := namingRules(g.cfg, reserved)
	order := g.mgr.Names()
	entries, warnings, aggErr := backends.Aggregate(order, all, rules)
	for _, w := range warnings {
		g.log.Warn(w)
	}
	cat := &catalog{tools: map[string]*toolEntry{}, byRef: map[string]*backends.Entry{}, plans: map[string]*engine.Plan{}, entries: entries, snap: snap}
	for _, e := range entries {
		cat.byRef[e.Ref()] = e
	}

	// Composites compile against every known tool (hidden ones included);
	// a backend not yet connected resolves leniently.
	var problems []string
	if aggErr != nil {
		problems = append(problems, aggErr.Error())
	}
	ec := newEngineCatalog(cat, order, all)
	defs := map[string]workflowDef{}
	for _, wf := range g.cfg.LoadedWorkflows {
		p, ds := engine.Compile(wf, &engine.CompileOptions{Catalog: ec})
		if len(ds) > 0 {
			problems = append(problems, fmt.Sprintf("workflow %q does not compile against the backends:\n%s", wf.Name.Value, indent(ds.Error())))
			continue
		}
		cat.plans[p.Name] = p
		cat.tools[p.Name] = &toolEntry{name: p.Name, plan: p, composite: true}
		name, src := definition(p, wf)
		defs[p.Name] = workflowDef{name: name, src: src}
	}
	g.defs.Store(&defs)
	if g.runs != nil {
		g.runs.forgetPlans()
	}
	healthy := map[string]bool{}
	for _, b := range snap.Order {
		healthy[b] = true
	}
	for _, e := range entries {
		if e.Advertised == "" || !healthy[e.Backend] {
			continue
		}
		if taskRequired(e.Tool.JSON) {
			g.log.Warn("tool requires task augmentation, which vmcp does not pass through yet; not advertised", "backend", e.Backend, "tool", e.Tool.Name)
			continue
		}
		t := toEngineTool(e)
		cat.tools[e.Advertised] = &toolEntry{name: e.Advertised, plan: engine.NewToolPlan(t, e.Advertised, 0), backend: e.Backend, backendTool: e.Tool.Name}
	}
	for _, n := range builtinToolNames() {
		if _, clash := cat.tools[n]; clash {
			problems = append(problems, fmt.Sprintf("tool name %q is reserved for vmcp's built-in run tools", n))
		}
	}
	if len(problems) > 0 {
		msg := strings.Join(problems, "\n")
		if startup {
			return errors.New(msg)
		}
		g.log.Error("catalogue has problems; affected tools are left out", "problems", msg)
	}
	g.noteRebuilt(startup)
	prev := g.cat.Swap(cat)
	g.installTools(cat, prev)
	if prev == nil || !samePassthrough(prev.snap, cat.snap) {
		g.installResources(cat)
	}
	return nil
}

// taskRequired reports a tool whose execution.taskSupport is "required".
func taskRequired(tool []byte) bool {
	var t struct {
		Execution struct {
			TaskSupport string `json:"taskSupport"`
		} `json:"execution"`
	}
	return json.Unmarshal(tool, &t) == nil && t.Execution.TaskSupport == "required"
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// namingRules converts the config's aggregation block.
func namingRules(cfg *dsl.Config, reserved map[string]string) *backends.NamingRules {
	a := cfg.Aggregation
	r := &backends.NamingRules{Strategy: a.ConflictResolution.Value, PrefixFormat: a.PrefixFormat.Value,
		PerBackend: map[string]*backends.BackendRules{}, Reserved: reserved}
	for _, p := range a.PriorityOrder {
		r.PriorityOrder = append(r.PriorityOrder, p.Value)
	}
	for _, t := range a.Tools {
		br := &backends.BackendRules{ExcludeAll: t.ExcludeAll.Value, Overrides: map[string]backends.Override{}}
		for _, f := range t.Filter {
			br.Filter = append(br.Filter, f.Value)
		}
		for name, ov := range t.Overrides {
			o := backends.Override{Name: ov.Name.Value, Description: ov.Description.Value}
			if ov.Annotations != nil && ov.Annotations.Node != nil {
				if v, err := dsl.NodeValue(ov.Annotations.Node); err == nil {
					o.Annotations, _ = steps.EncodeJSON(v)
				}
			}
			br.Overrides[name] = o
		}
		r.PerBackend[t.Backend.Value] = br
	}
	return r
}

// engineCatalog resolves workflow tool references for the compiler.
type engineCatalog struct {
	cat *catalog
	// configured backends whose tools are not known yet (never
	// connected): references to them resolve to a schema-less tool.
	configured map[string]bool
}

// newEngineCatalog resolves against cat; backends (in names) with no known
// tools yet resolve leniently.
func newEngineCatalog(cat *catalog, names []string, all map[string][]*backends.RawTool) *engineCatalog {
	ec := &engineCatalog{cat: cat, configured: map[string]bool{}}
	for _, n := range names {
		ec.configured[n] = len(all[n]) == 0
	}
	return ec
}

func (c *engineCatalog) Resolve(ref string) (*engine.Tool, bool) {
	if e, ok := c.cat.byRef[ref]; ok {
		return toEngineTool(e), true
	}
	for _, e := range c.cat.entries {
		if e.Advertised == ref {
			return toEngineTool(e), true
		}
	}
	if b, n, ok := strings.Cut(ref, "."); ok {
		if unknown, isBackend := c.configured[b]; isBackend && unknown {
			return &engine.Tool{Backend: b, Name: n}, true
		}
	}
	return nil, false
}

func (c *engineCatalog) Refs() []string {
	var out []string
	for ref, e := range c.cat.byRef {
		out = append(out, ref)
		if e.Advertised != "" {
			out = append(out, e.Advertised)
		}
	}
	sort.Strings(out)
	return out
}

func toEngineTool(e *backends.Entry) *engine.Tool {
	t := &engine.Tool{Backend: e.Backend, Name: e.Tool.Name, Advertised: e.Advertised, Description: e.Tool.Description,
		InputSchema: e.Tool.InputSchema, OutputSchema: e.Tool.OutputSchema}
	if len(e.Tool.Annotations) > 0 {
		var a engine.ToolAnnotations
		if json.Unmarshal(e.Tool.Annotations, &a) == nil {
			t.Annotations = &a
		}
	}
	return t
}

// installTools hands the tool list to mcp-go (which notifies sessions of
// the change) when it differs from the previous one.
func (g *Gateway) installTools(cat, prev *catalog) {
	var tools []mcpserver.ServerTool
	for _, name := range sortedNames(cat.tools) {
		te := cat.tools[name]
		tools = append(tools, mcpserver.ServerTool{Tool: g.mcpTool(cat, te), Handler: g.toolHandler(name)})
	}
	tools = append(tools, g.builtinTools()...)
	if prev != nil && sameTools(prev, cat) {
		return
	}
	g.tl.render(tools, g.log) // before SetTools: its list_changed must find the new list
	g.mcp.SetTools(tools...)
}

func sameTools(a, b *catalog) bool {
	if len(a.tools) != len(b.tools) {
		return false
	}
	for n, ta := range a.tools {
		tb, ok := b.tools[n]
		if !ok || ta.composite != tb.composite || ta.backend != tb.backend {
			return false
		}
	}
	return toolsJSON(a) == toolsJSON(b)
}

func toolsJSON(c *catalog) string {
	var sb strings.Builder
	for _, e := range c.entries {
		sb.Write(e.JSON)
	}
	for _, n := range sortedNames(c.plans) {
		sb.WriteString(n)
	}
	return sb.String()
}

// mcpTool builds the advertised tool: a backend tool keeps its raw
// schemas; a composite advertises its parameters, output schema and
// derived annotations.
func (g *Gateway) mcpTool(cat *catalog, te *toolEntry) mcp.Tool {
	p := te.plan
	t := mcp.NewToolWithRawSchema(te.name, p.Description, p.InputSchema)
	if len(p.InputSchema) == 0 {
		t.RawInputSchema = []byte(`{"type":"object"}`)
	}
	if len(p.OutputSchema) > 0 {
		t.RawOutputSchema = p.OutputSchema
	}
	a := p.Annotations
	t.Annotations = mcp.ToolAnnotation{Title: a.Title, ReadOnlyHint: a.ReadOnlyHint, DestructiveHint: a.DestructiveHint,
		IdempotentHint: a.IdempotentHint, OpenWorldHint: a.OpenWorldHint}
	if !te.composite {
		for _, e := range cat.entries {
			if e.Advertised == te.name {
				var raw struct {
					Title       string             `json:"title"`
					Description string             `json:"description"`
					Annotations mcp.ToolAnnotation `json:"annotations"`
				}
				if json.Unmarshal(e.JSON, &raw) == nil {
					t.Title, t.Description, t.Annotations = raw.Title, raw.Description, raw.Annotations
				}
			}
		}
	}
	return t
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Ready reports whether every backend was tried and the catalogue built.
func (g *Gateway) Ready() bool { return g.started.Load() && g.mgr.Ready() }

// Status is /status.
type Status struct {
	Name       string                   `json:"name"`
	Version    string                   `json:"version"`
	Ready      bool                     `json:"ready"`
	Backends   []backends.BackendStatus `json:"backends"`
	Tools      int                      `json:"tools"`
	Composites int                      `json:"composite_tools"`
	Runs       map[string]int           `json:"runs"`
	// Replicas are the vmcp processes sharing the PostgreSQL state store
	// (absent with bbolt).
	Replicas []ReplicaStatus `json:"replicas,omitempty"`
	Time     time.Time       `json:"time"`
}

// ReplicaStatus is one replica on /status.
type ReplicaStatus struct {
	ID        string    `json:"id"`
	Self      bool      `json:"self,omitempty"`
	Live      bool      `json:"live"`
	Started   time.Time `json:"started,omitzero"`
	Heartbeat time.Time `json:"heartbeat,omitzero"`
	Expires   time.Time `json:"expires,omitzero"`
	Version   string    `json:"version,omitempty"`
	Address   string    `json:"address,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// Status reports backends, health and counts.
func (g *Gateway) Status() Status {
	st := Status{Name: g.cfg.Name.Value, Version: g.ver, Ready: g.Ready(), Backends: g.mgr.Status(), Time: time.Now().UTC()}
	if c := g.cat.Load(); c != nil {
		st.Tools = len(c.tools)
		st.Composites = len(c.plans)
	}
	st.Runs = g.runCounts(context.Background())
	st.Replicas = g.replicas(context.Background())
	return st
}

// replicas lists the processes sharing a PostgreSQL store.
func (g *Gateway) replicas(ctx context.Context) []ReplicaStatus {
	if g.runs == nil {
		return nil
	}
	pg, ok := g.runs.base.(*postgres.Store)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	rs, err := pg.Replicas(ctx)
	if err != nil {
		// The database is unreachable: say so, and what this replica
		// knows of itself.
		g.log.Warn("listing replicas for /status", "err", err)
		return []ReplicaStatus{{ID: pg.ReplicaID(), Self: true, Live: pg.Live(), Error: "listing the replicas failed: " + err.Error()}}
	}
	out := make([]ReplicaStatus, 0, len(rs))
	for _, r := range rs {
		rs := ReplicaStatus{ID: r.ID, Live: r.Live, Started: r.Started, Heartbeat: r.Heartbeat,
			Expires: r.Expires, Version: r.Version, Address: r.Address}
		if r.ID == pg.ReplicaID() {
			// Its own liveness is what it acts on (Live: a heartbeat
			// within half a lease), not the row's expiry.
			rs.Self, rs.Live = true, pg.Live()
		}
		out = append(out, rs)
	}
	return out
}

// workflowDef is the source a composite's runs store.
type workflowDef struct {
	name string
	src  []byte
}

func (g *Gateway) definitionOf(p *engine.Plan) (string, []byte) {
	if m := g.defs.Load(); m != nil {
		if d, ok := (*m)[p.Name]; ok {
			return d.name, d.src
		}
	}
	return p.Name, nil
}

// engineCatalog resolves tool references against the current catalogue.
func (g *Gateway) engineCatalog() engine.Catalog {
	return newEngineCatalog(g.cat.Load(), g.mgr.Names(), g.mgr.AllTools())
}

func yamlMarshal(n *yaml.Node) ([]byte, error) { return yaml.Marshal(n) }
