package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/dominikbraun/graph"
	"github.com/google/cel-go/cel"
	"go.yaml.in/yaml/v3"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/steps"
)

// Defaults and limits of SPEC §3.
const (
	DefaultMaxParallel = 8
	MaxSteps           = 200
	MaxForEachItems    = 1000
	MaxElicitContent   = 64 << 10
	defaultItemVar     = "item"
)

// paramSchema is the compiled `parameters` schema with its defaults.
type paramSchema struct {
	schema   *steps.Schema
	declared []string       // declared property names
	defaults map[string]any // top-level defaults
}

// CompileOptions tune Compile; nil is valid.
type CompileOptions struct {
	// Catalog resolves tool references; nil skips tool resolution,
	// argument checks and annotation derivation (offline without a
	// catalogue).
	Catalog Catalog
}

// Compile checks a loaded workflow and builds its immutable Plan. All
// problems are reported together as Diagnostics; the plan is nil when there
// is any.
func Compile(wf *dsl.Workflow, opts *CompileOptions) (*Plan, dsl.Diagnostics) {
	if opts == nil {
		opts = &CompileOptions{}
	}
	env, err := newCELEnv()
	if err != nil {
		return nil, dsl.Diagnostics{{Msg: "internal: CEL environment: " + err.Error()}}
	}
	src := wf.Src
	if src == nil {
		src = dsl.NewSource("<workflow>", nil)
	}
	c := &compiler{wf: wf, src: src, cat: opts.Catalog, cel: env, tmpl: steps.NewTemplateCompiler(src), schemas: map[string]*steps.Schema{}}
	p := c.compile()
	if len(c.diags) > 0 {
		c.diags.Sort()
		return nil, c.diags
	}
	return p, nil
}

type compiler struct {
	wf   *dsl.Workflow
	src  *dsl.Source
	cat  Catalog
	cel  *cel.Env
	tmpl *steps.TemplateCompiler
	// schemas caches compiled tool input schemas by their text.
	schemas map[string]*steps.Schema
	diags   dsl.Diagnostics
}

func (c *compiler) errorf(p dsl.Pos, format string, args ...any) {
	c.diags.Add(c.src, p, format, args...)
}

func (c *compiler) pos(n *yaml.Node) dsl.Pos { return c.src.NodePos(n) }

// stepInfo is per-step compile state.
type stepInfo struct {
	ast  *dsl.Step
	step *Step
	tool *Tool // resolved tool (nil when unknown or no catalogue)
	// mayBeEmpty: the step may end without output (condition, continue).
	mayBeEmpty bool
	why        string
	refs       []steps.Ref // from templates (subject to the ?? guard rule)
	condRefs   []steps.Ref
}

func (c *compiler) compile() *Plan {
	wf := c.wf
	p := &Plan{
		Name:        wf.Name.Value,
		Description: wf.Description.Value,
		Timeout:     wf.Timeout.Value,
		MaxParallel: DefaultMaxParallel,
		Pos:         c.pos(wf.Node),
		Source:      c.src,
		byID:        map[string]*Step{},
	}
	if wf.MaxParallel.Set && wf.MaxParallel.Value > 0 {
		p.MaxParallel = wf.MaxParallel.Value
	}
	p.InputSchema, p.params = c.compileParams()

	if len(wf.Steps) > MaxSteps {
		// The schema's maxItems reports this too; same words, same place.
		at := c.pos(wf.Steps[0].Node)
		if n := valueOf(wf.Node, "steps"); n != nil {
			at = c.pos(n)
		}
		c.errorf(at, "too many steps: %d; a workflow may have at most %d steps (a vmcp limit: split it into several workflows)", len(wf.Steps), MaxSteps)
	}

	// Pass 1: ids.
	infos := make([]*stepInfo, 0, len(wf.Steps))
	byID := map[string]*stepInfo{}
	for _, s := range wf.Steps {
		if s == nil {
			continue
		}
		st := &Step{ID: s.ID.Value, Pos: c.pos(s.Node), onError: dsl.ActionAbort}
		info := &stepInfo{ast: s, step: st}
		if s.ID.Value != "" {
			if prev, dup := byID[s.ID.Value]; dup {
				c.errorf(c.pos(s.ID.Node), "duplicate step id %q (first defined at line %d)", s.ID.Value, c.pos(prev.ast.ID.Node).Line)
				continue
			}
			byID[s.ID.Value] = info
		}
		infos = append(infos, info)
	}
	ids := make([]string, 0, len(infos))
	for _, in := range infos {
		if in.step.ID != "" {
			ids = append(ids, in.step.ID)
		}
	}

	// Pass 2: each step on its own.
	for _, in := range infos {
		c.compileStep(in)
	}

	// Pass 3: edges.
	g := graph.New(graph.StringHash, graph.Directed(), graph.PreventCycles())
	for _, in := range infos {
		if in.step.ID != "" {
			_ = g.AddVertex(in.step.ID)
		}
	}
	type edge struct {
		from, to string
		pos      dsl.Pos
		explicit bool
	}
	var edges []edge
	for _, in := range infos {
		s := in.ast
		for _, d := range s.DependsOn {
			switch {
			case d.Value == "":
			case d.Value == in.step.ID:
				c.errorf(c.pos(d.Node), "step %q depends on itself", d.Value)
			case byID[d.Value] == nil:
				c.errorf(c.pos(d.Node), "depends_on: unknown step %q%s", d.Value, dsl.Suggest(d.Value, ids))
			default:
				edges = append(edges, edge{from: d.Value, to: in.step.ID, pos: c.pos(d.Node), explicit: true})
			}
		}
		for _, r := range append(append([]steps.Ref(nil), in.condRefs...), in.refs...) {
			switch {
			case r.Step == in.step.ID:
				c.errorf(r.Pos, "step %q refers to its own result (steps.%s)", r.Step, r.Step)
			case byID[r.Step] == nil:
				c.errorf(r.Pos, "unknown step %q%s", r.Step, dsl.Suggest(r.Step, ids))
			default:
				edges = append(edges, edge{from: r.Step, to: in.step.ID, pos: r.Pos})
			}
		}
	}
	deps := map[string]map[string]*Dep{}
	reportedCycle := map[string]bool{}
	for _, e := range edges {
		if in := byID[e.to]; in == nil || in.step.ID == "" {
			continue
		}
		if deps[e.to] == nil {
			deps[e.to] = map[string]*Dep{}
		}
		d := deps[e.to][e.from]
		if d == nil {
			d = &Dep{ID: e.from}
			deps[e.to][e.from] = d
			if err := g.AddEdge(e.from, e.to); err != nil {
				if errors.Is(err, graph.ErrEdgeCreatesCycle) {
					cyc := cyclePath(g, e.to, e.from)
					key := canonicalCycle(cyc)
					if !reportedCycle[key] {
						reportedCycle[key] = true
						c.errorf(e.pos, "dependency cycle: %s", strings.Join(cyc, " → "))
					}
				}
				delete(deps[e.to], e.from)
				continue
			}
		}
		if e.explicit {
			d.Explicit = true
		} else {
			d.Inferred = true
		}
	}

	// Output and the ?? guard rule.
	var outRefs []steps.Ref
	if wf.Output.IsSet() {
		t, ds := c.tmpl.Compile(wf.Output.Node, steps.TemplateOptions{})
		c.diags.Append(ds)
		p.output = t
		if t != nil {
			outRefs = t.Refs()
		}
		for _, r := range outRefs {
			if byID[r.Step] == nil {
				c.errorf(r.Pos, "output: unknown step %q%s", r.Step, dsl.Suggest(r.Step, ids))
			}
		}
	}
	if wf.OutputSchema.IsSet() {
		s, err := c.schemaOf(wf.OutputSchema.Node)
		if err != nil {
			c.schemaError(wf.OutputSchema.Node, "output_schema", err)
		} else {
			p.outputSchema = s
			p.OutputSchema = s.Raw()
		}
	}
	// A tool step's content list is decoded only when something reads it.
	markContent := func(r steps.Ref) {
		if t := byID[r.Step]; t != nil && (r.Field == "content" || r.Field == "") {
			t.step.needContent = true
		}
	}
	for _, in := range infos {
		for _, r := range append(append([]steps.Ref(nil), in.refs...), in.condRefs...) {
			markContent(r)
		}
	}
	for _, r := range outRefs {
		markContent(r)
	}
	checkGuard := func(r steps.Ref) {
		t := byID[r.Step]
		if t == nil || !r.Deep || r.Guarded || !t.mayBeEmpty || t.step.hasDefault {
			return
		}
		read := r.Path
		if read == "" {
			read = "steps." + r.Step + "." + r.Field
		}
		c.errorf(r.Pos, "%s is read without a fallback, but step %q %s and has no default_output: write `%s ?? <fallback>` or give %q a default_output",
			read, r.Step, t.why, read, r.Step)
	}
	for _, in := range infos {
		for _, r := range in.refs {
			checkGuard(r)
		}
	}
	for _, r := range outRefs {
		checkGuard(r)
	}

	if len(c.diags) > 0 {
		return nil
	}

	// Order: stable topological sort, ties broken by file order.
	fileIdx := map[string]int{}
	for i, in := range infos {
		fileIdx[in.step.ID] = i
	}
	order, err := graph.StableTopologicalSort(g, func(a, b string) bool { return fileIdx[a] < fileIdx[b] })
	if err != nil {
		c.errorf(p.Pos, "internal: ordering steps: %v", err)
		return nil
	}
	for i, id := range order {
		st := byID[id].step
		st.Index = i
		p.Steps = append(p.Steps, st)
		p.byID[id] = st
	}
	for _, st := range p.Steps {
		for from, d := range deps[st.ID] {
			d.Step = p.byID[from].Index
			st.Deps = append(st.Deps, *d)
			p.byID[from].Dependents = append(p.byID[from].Dependents, st.Index)
		}
		sort.Slice(st.Deps, func(i, j int) bool { return st.Deps[i].Step < st.Deps[j].Step })
	}
	for _, st := range p.Steps {
		sort.Ints(st.Dependents)
		if len(st.Dependents) == 0 {
			p.sinks = append(p.sinks, st.Index)
		}
	}
	c.annotations(p, infos)
	if len(c.diags) > 0 {
		return nil
	}
	return p
}

// cyclePath returns from → … → to → from using the edges already in g
// (to reaches from).
func cyclePath(g graph.Graph[string, string], from, to string) []string {
	path, err := graph.ShortestPath(g, from, to)
	if err != nil || len(path) == 0 {
		return []string{to, from, to}
	}
	return append(path, from)
}

// canonicalCycle names a cycle independent of its starting vertex.
func canonicalCycle(c []string) string {
	if len(c) < 2 {
		return strings.Join(c, ",")
	}
	ring := append([]string(nil), c[:len(c)-1]...)
	sort.Strings(ring)
	return strings.Join(ring, ",")
}

func (c *compiler) compileParams() (json.RawMessage, *paramSchema) {
	n := c.wf.Parameters.Node
	// dsl wraps the ToolHive form (a bare map of parameters) into an
	// object schema.
	m, err := c.wf.InputSchema()
	if err != nil {
		c.errorf(c.pos(n), "parameters: %v", err)
		return nil, nil
	}
	raw, err := steps.EncodeJSON(m)
	if err != nil {
		c.errorf(c.pos(n), "parameters: %v", err)
		return nil, nil
	}
	// Keep the author's property order in what clients see.
	if n != nil {
		if ordered, err := dsl.NodeJSON(n); err == nil {
			v, _ := dsl.NodeValue(n)
			written, _ := v.(map[string]any)
			if _, isSchema := written["type"].(string); isSchema {
				raw = ordered
			} else {
				raw = append(append(json.RawMessage(`{"type":"object","properties":`), ordered...), '}')
			}
		}
	}
	s, err := steps.CompileSchema(raw)
	if err != nil {
		c.schemaError(n, "parameters", err)
		return nil, nil
	}
	ps := &paramSchema{schema: s}
	if props, ok := m["properties"].(map[string]any); ok {
		for name, sub := range props {
			ps.declared = append(ps.declared, name)
			if sm, ok := sub.(map[string]any); ok {
				if d, ok := sm["default"]; ok {
					if ps.defaults == nil {
						ps.defaults = map[string]any{}
					}
					ps.defaults[name] = d
				}
			}
		}
		sort.Strings(ps.declared)
	}
	return s.Raw(), ps
}

var schemaErrRE = regexp.MustCompile(`^invalid schema: at (/[^:]*): (.*)$`)

// schemaError reports a JSON Schema that does not compile, at the value the
// problem is about when the error names one (as a JSON pointer).
func (c *compiler) schemaError(n *yaml.Node, key string, err error) {
	m := schemaErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		c.errorf(c.pos(n), "%s: %v", key, err)
		return
	}
	var path []string
	for _, t := range strings.Split(strings.TrimPrefix(m[1], "/"), "/") {
		path = append(path, strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~"))
	}
	// The ToolHive form of parameters (a bare map of parameters) was
	// wrapped in {type: object, properties: …}; name what the file has.
	if key == "parameters" && len(path) > 0 && path[0] == "properties" && valueOf(n, "properties") == nil {
		path = path[1:]
	}
	at := nodeAt(n, path)
	c.errorf(c.pos(at), "invalid JSON Schema at %s: %s", strings.Join(append([]string{key}, path...), "."), m[2])
}

// valueOf returns the value of key in mapping n, or nil.
func valueOf(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// keyOf returns the key node of key in mapping n, or nil.
func keyOf(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i]
		}
	}
	return nil
}

// schemaOf compiles the JSON Schema written at n.
func (c *compiler) schemaOf(n *yaml.Node) (*steps.Schema, error) {
	raw, err := dsl.NodeJSON(n)
	if err != nil {
		return nil, err
	}
	return steps.CompileSchema(raw)
}

func (c *compiler) compileStep(in *stepInfo) {
	s, st := in.ast, in.step
	if s.Condition.Set {
		cond, refs := c.compileCondition(s.Condition.Node)
		st.condition = cond
		in.condRefs = refs
		in.mayBeEmpty, in.why = true, "may be skipped (it has a condition)"
	}
	if s.DefaultOutput.IsSet() {
		v, err := dsl.NodeValue(s.DefaultOutput.Node)
		if err != nil {
			c.errorf(c.pos(s.DefaultOutput.Node), "default_output: %v", err)
		}
		if str, ok := v.(string); ok && strings.Contains(str, "{{") {
			c.errorf(c.pos(s.DefaultOutput.Node), "default_output is a literal value; templates are not evaluated here")
		}
		st.defaultOutput, st.hasDefault = v, true
	}
	if s.Timeout.Set {
		st.timeout = s.Timeout.Value
	}
	switch s.OnError.Action.Value {
	case dsl.ActionContinue:
		st.onError = dsl.ActionContinue
		if !in.mayBeEmpty {
			in.mayBeEmpty, in.why = true, "may fail and continue (on_error: continue)"
		}
	case dsl.ActionRetry:
		// ToolHive form: {action: retry, retry_count: N, retry_delay: D}.
		st.retry = &retryPolicy{maxAttempts: 1 + s.OnError.RetryCount.Value, delay: s.OnError.RetryDelay.Value, backoff: 1}
		if !s.OnError.RetryCount.Set {
			st.retry.maxAttempts = 4
		}
	}
	if s.Retry != nil {
		if st.retry != nil {
			c.errorf(c.pos(s.Retry.Node), "retry is given twice (here and as on_error: {action: retry}); keep one")
		}
		st.retry = c.compileRetry(s.Retry)
	}

	switch s.Kind() {
	case dsl.StepElicitation:
		st.Kind = c.compileElicitation(in)
		if s.OnDecline.Action.Value == dsl.ActionContinue || s.OnCancel.Action.Value == dsl.ActionContinue {
			if !in.mayBeEmpty {
				in.mayBeEmpty, in.why = true, "may be declined or cancelled and continue"
			}
		}
	case dsl.StepTool:
		call := c.compileToolCall(in)
		if s.ForEach.Set {
			st.Kind = c.compileForEach(in, call)
		} else {
			st.Kind = call
		}
	}
}

func (c *compiler) compileRetry(r *dsl.Retry) *retryPolicy {
	rp := &retryPolicy{maxAttempts: 3, delay: 500 * time.Millisecond, backoff: 2, maxDelay: 30 * time.Second, jitter: r.Jitter.Value}
	if r.MaxAttempts.Set {
		rp.maxAttempts = r.MaxAttempts.Value
	}
	if r.Delay.Set {
		rp.delay = r.Delay.Value
	}
	if r.Backoff.Set {
		rp.backoff = r.Backoff.Value
	}
	if r.MaxDelay.Set {
		rp.maxDelay = r.MaxDelay.Value
	}
	if r.Delay.Set && r.MaxDelay.Set && r.MaxDelay.Value < r.Delay.Value {
		c.errorf(c.pos(r.MaxDelay.Node), "retry.max_delay (%s) is shorter than retry.delay (%s)", r.MaxDelay.Value, r.Delay.Value)
	}
	for _, on := range r.On {
		switch on.Value {
		case dsl.ErrClassTransport:
			rp.on |= classTransport
		case dsl.ErrClassTimeout:
			rp.on |= classTimeout
		case dsl.ErrClassToolError:
			rp.on |= classToolError
		}
	}
	return rp
}

func (c *compiler) compileToolCall(in *stepInfo) *steps.ToolCall {
	s := in.ast
	itemVar := ""
	// A for_each of the wrong kind (reported by the loader) still makes
	// this a for_each step: its item variable must not be reported unknown.
	if s.ForEach.Set || keyOf(s.Node, "for_each") != nil {
		itemVar = defaultItemVar
		if s.As.Set {
			itemVar = s.As.Value
			switch itemVar {
			case "params", "steps", "workflow", "index":
				// Worded as the loader words it (one diagnostic when both report it).
				c.errorf(c.pos(s.As.Node), "\"as\": %q would hide the built-in variable %s; choose another name", itemVar, itemVar)
			}
		}
	}
	call := &steps.ToolCall{Ref: s.Tool.Value}
	if s.Arguments.IsSet() {
		t, ds := c.tmpl.Compile(s.Arguments.Node, steps.TemplateOptions{ItemVar: itemVar})
		c.diags.Append(ds)
		call.Args = t
		if t != nil {
			in.refs = append(in.refs, t.Refs()...)
		}
	}
	if !s.Tool.Set || s.Tool.Value == "" {
		return call
	}
	if b, n, ok := splitRef(s.Tool.Value); ok {
		call.Backend, call.Tool = b, n
	}
	if c.cat == nil {
		return call
	}
	t, ok := c.cat.Resolve(s.Tool.Value)
	if !ok {
		c.errorf(c.pos(s.Tool.Node), "unknown tool %q%s", s.Tool.Value, suggestTool(s.Tool.Value, c.cat.Refs()))
		return call
	}
	in.tool = t
	call.Backend, call.Tool = t.Backend, t.Name
	call.ReadOnly, call.Idempotent = t.Annotations.readOnly(), t.Annotations.idempotent()
	if len(t.InputSchema) > 0 {
		sch, err := c.toolSchema(t.InputSchema)
		if err != nil {
			c.errorf(c.pos(s.Tool.Node), "tool %q has an input schema vmcp cannot use: %v", s.Tool.Value, err)
			return call
		}
		call.Input = sch
		c.checkArguments(s, sch)
	}
	return call
}

// toolSchema compiles a tool's input schema once per Compile.
func (c *compiler) toolSchema(raw json.RawMessage) (*steps.Schema, error) {
	if s, ok := c.schemas[string(raw)]; ok {
		return s, nil
	}
	s, err := steps.CompileSchema(raw)
	if err == nil {
		c.schemas[string(raw)] = s
	}
	return s, err
}

// checkArguments checks argument names and literal values against the
// tool's input schema.
func (c *compiler) checkArguments(s *dsl.Step, sch *steps.Schema) {
	n := s.Arguments.Node
	given := map[string]bool{}
	if n != nil && n.Kind == yaml.MappingNode {
		props := sch.Properties()
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			given[k.Value] = true
			if sch.Closed() && !contains(props, k.Value) {
				c.errorf(c.pos(k), "tool %q has no argument %q%s (arguments: %s)", s.Tool.Value, k.Value, dsl.Suggest(k.Value, props), strings.Join(props, ", "))
				// A misspelt required argument is one mistake: do not
				// report it missing as well.
				if m := dsl.DidYouMean(k.Value, props); m != "" {
					given[m] = true
				}
				continue
			}
			if hasTemplate(v) {
				continue
			}
			lit, err := dsl.NodeValue(v)
			if err != nil {
				continue
			}
			if err := sch.CheckProperty(k.Value, lit); err != nil {
				c.errorf(c.pos(v), "argument %q of %q: %v", k.Value, s.Tool.Value, err)
			}
		}
	}
	if n != nil && n.Kind != yaml.MappingNode {
		return
	}
	var missing []string
	for _, r := range sch.Required() {
		if !given[r] {
			missing = append(missing, r)
		}
	}
	if len(missing) == 0 {
		return
	}
	at := c.pos(s.Tool.Node)
	if k := keyOf(s.Node, "arguments"); k != nil {
		at = c.pos(k)
	} else if unknownStepKey(s.Node) {
		// The loader reported a key it does not know (likely a
		// misspelt "arguments"); missing arguments would repeat it.
		return
	}
	c.errorf(at, "tool %q requires argument%s %s", s.Tool.Value, plural(len(missing)), quoteList(missing))
}

func (c *compiler) compileForEach(in *stepInfo, call *steps.ToolCall) *steps.ForEach {
	s := in.ast
	fe := &steps.ForEach{Call: call, As: defaultItemVar, MaxParallel: 4}
	if s.As.Set && s.As.Value != "" {
		fe.As = s.As.Value
	}
	if s.MaxParallel.Set && s.MaxParallel.Value > 0 {
		fe.MaxParallel = s.MaxParallel.Value
	}
	t, ds := c.tmpl.Compile(s.ForEach.Node, steps.TemplateOptions{})
	c.diags.Append(ds)
	fe.Items = t
	if t != nil {
		in.refs = append(in.refs, t.Refs()...)
		_, static := t.Static()
		if v, ok := t.Constant(); ok {
			list, isList := v.([]any)
			switch {
			case static:
				c.errorf(c.pos(s.ForEach.Node), "for_each must be a {{ }} expression that gives a list, e.g. \"{{ steps.incident.output.teams }}\" or \"{{ ['#a', '#b'] }}\"")
			case !isList:
				c.errorf(c.pos(s.ForEach.Node), "for_each must give a list, but this expression gives %s", steps.TypeName(v))
			case len(list) > MaxForEachItems:
				c.errorf(c.pos(s.ForEach.Node), "for_each has %d items; the limit is %d", len(list), MaxForEachItems)
			}
		}
	}
	return fe
}

func (c *compiler) compileElicitation(in *stepInfo) *steps.Elicitation {
	s := in.ast
	el := &steps.Elicitation{OnDecline: dsl.ActionAbort, OnCancel: dsl.ActionAbort}
	if s.OnDecline.Action.Value != "" {
		el.OnDecline = s.OnDecline.Action.Value
	}
	if s.OnCancel.Action.Value != "" {
		el.OnCancel = s.OnCancel.Action.Value
	}
	if s.Message.Set {
		t, ds := c.tmpl.Compile(s.Message.Node, steps.TemplateOptions{})
		c.diags.Append(ds)
		el.Message = t
		if t != nil {
			in.refs = append(in.refs, t.Refs()...)
		}
	}
	if n := s.Schema.Node; n != nil {
		v, err := dsl.NodeValue(n)
		if err != nil {
			c.errorf(c.pos(n), "schema: %v", err)
			return el
		}
		problems := steps.CheckElicitationSchema(v)
		for _, pr := range problems {
			c.errorf(c.pos(nodeAt(n, pr.Path)), "schema: %s", pr.Msg)
		}
		if len(problems) > 0 {
			return el
		}
		raw, _ := dsl.NodeJSON(n) // keeps the author's field order for forms
		sch, err := steps.CompileSchema(raw)
		if err != nil {
			c.schemaError(n, "schema", err)
			return el
		}
		el.SchemaJSON, el.Schema = sch.Raw(), sch
	}
	return el
}

// nodeAt follows a path of mapping keys / sequence indexes from n, stopping
// at the deepest node found.
func nodeAt(n *yaml.Node, path []string) *yaml.Node {
	for _, key := range path {
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					n, found = n.Content[i+1], true
					break
				}
			}
			if !found {
				return n
			}
		case yaml.SequenceNode:
			var idx int
			if _, err := fmt.Sscanf(key, "%d", &idx); err != nil || idx < 0 || idx >= len(n.Content) {
				return n
			}
			n = n.Content[idx]
		default:
			return n
		}
	}
	return n
}

// annotations derives the composite's hints from its tool steps and checks
// that explicit ones claim no more safety.
func (c *compiler) annotations(p *Plan, infos []*stepInfo) {
	known := c.cat != nil
	readOnly, idempotent, destructive, openWorld := true, true, false, false
	// The first step that makes each hint less safe, for messages.
	var notRO, notIdem, destr, open *stepInfo
	for _, in := range infos {
		if in.ast.Kind() != dsl.StepTool {
			continue
		}
		if in.tool == nil {
			known = false
			continue
		}
		a := in.tool.Annotations
		readOnly = readOnly && a.readOnly()
		idempotent = idempotent && (a.idempotent() || a.readOnly())
		destructive = destructive || a.destructive()
		openWorld = openWorld || a.openWorld()
		if !a.readOnly() && notRO == nil {
			notRO = in
		}
		if !a.idempotent() && !a.readOnly() && notIdem == nil {
			notIdem = in
		}
		if a.destructive() && destr == nil {
			destr = in
		}
		if a.openWorld() && open == nil {
			open = in
		}
	}
	why := func(in *stepInfo, what string) string {
		if in == nil {
			return ""
		}
		return fmt.Sprintf("step %q calls %s, which %s", in.step.ID, in.ast.Tool.Value, what)
	}
	if known {
		p.Annotations = ToolAnnotations{ReadOnlyHint: &readOnly, IdempotentHint: &idempotent, DestructiveHint: &destructive, OpenWorldHint: &openWorld}
	}
	ex := c.wf.Annotations
	if ex == nil {
		return
	}
	p.Annotations.Title = ex.Title.Value
	claim := func(b dsl.Bool, derived bool, safeWhen bool, name, why string) *bool {
		if !b.Set {
			if known {
				return &derived
			}
			return nil
		}
		if known && b.Value == safeWhen && derived != safeWhen {
			c.errorf(c.pos(b.Node), "annotations.%s: %v claims more safety than the steps have (%s)", name, b.Value, why)
		}
		v := b.Value
		return &v
	}
	p.Annotations.ReadOnlyHint = claim(ex.ReadOnlyHint, readOnly, true, "readOnlyHint", why(notRO, "is not read-only"))
	p.Annotations.IdempotentHint = claim(ex.IdempotentHint, idempotent, true, "idempotentHint", why(notIdem, "is not idempotent"))
	p.Annotations.DestructiveHint = claim(ex.DestructiveHint, destructive, false, "destructiveHint", why(destr, "is destructive"))
	p.Annotations.OpenWorldHint = claim(ex.OpenWorldHint, openWorld, false, "openWorldHint", why(open, "is open-world"))
}

// suggestTool is a did-you-mean for a tool reference: a close spelling, or
// else the <backend>.<name> forms whose name is the one written.
func suggestTool(ref string, refs []string) string {
	if s := dsl.Suggest(ref, refs); s != "" {
		return s
	}
	var same []string
	for _, r := range refs {
		if _, n, ok := splitRef(r); ok && n == ref {
			same = append(same, r)
		}
	}
	if len(same) > 0 {
		return "; did you mean " + strings.Join(quoteEach(same), " or ") + "? (write <backend>.<tool>)"
	}
	if b, _, ok := splitRef(ref); ok {
		seen := map[string]bool{}
		var backends []string
		for _, r := range refs {
			if rb, _, ok := splitRef(r); ok && !seen[rb] {
				seen[rb] = true
				backends = append(backends, rb)
			}
		}
		if !seen[b] {
			sort.Strings(backends)
			return fmt.Sprintf(": there is no backend %q%s (backends: %s)", b, dsl.Suggest(b, backends), strings.Join(backends, ", "))
		}
	}
	return ""
}

func quoteEach(s []string) []string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = fmt.Sprintf("%q", x)
	}
	return q
}

func hasTemplate(n *yaml.Node) bool {
	if n == nil {
		return false
	}
	if n.Kind == yaml.ScalarNode {
		return strings.Contains(n.Value, "{{")
	}
	for _, ch := range n.Content {
		if hasTemplate(ch) {
			return true
		}
	}
	return n.Kind == yaml.AliasNode && hasTemplate(n.Alias)
}

// stepKeys are the keys a step may have (from dsl.Step's yaml tags).
var stepKeys = func() map[string]bool {
	keys := map[string]bool{}
	t := reflect.TypeOf(dsl.Step{})
	for i := 0; i < t.NumField(); i++ {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}()

// unknownStepKey reports whether the step mapping n has a key that is not
// a step key (the loader reports those).
func unknownStepKey(n *yaml.Node) bool {
	if n == nil || n.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !stepKeys[n.Content[i].Value] {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}
