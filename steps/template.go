package steps

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
	"go.yaml.in/yaml/v3"

	"github.com/vmcp-dev/vmcp/dsl"
)

// MaxRenderedBytes bounds one rendered value (an interpolated string, or the
// JSON of a rendered argument document): SPEC §3's 1 MiB limit.
const MaxRenderedBytes = 1 << 20

// StepFields are the fields of `steps.<id>` an expression may read.
var StepFields = []string{"status", "output", "error", "attempts", "content", "action", "items"}

// IsStepField reports whether f is one of StepFields.
func IsStepField(f string) bool { return contains(StepFields, f) }

// Template is a compiled JSON value whose strings may hold {{ … }} blocks of
// expr-lang. A string that is exactly one block keeps the value's type;
// otherwise blocks are interpolated into text (non-strings as JSON).
// Templates are immutable and safe for concurrent use.
type Template struct {
	root   tnode
	static bool
	// staticJSON is the encoded value of a template without blocks, so
	// arguments with no templates pass through as raw JSON.
	staticJSON json.RawMessage
	staticVal  any
	refs       []Ref
}

// Ref is one `steps.<id>` reference found in a template or condition.
type Ref struct {
	Step string
	// Field is the step field read ("" when the whole step is used).
	Field string
	// Deep is true when the reference reads inside output or content
	// (steps.x.output.y), which fails if the step produced no value.
	Deep bool
	// Guarded is true when the read is the left side of `??` or under
	// optional chaining, so a missing value is tolerated.
	Guarded bool
	// Path is the read as written, e.g. "steps.logs.output.summary".
	Path string
	Pos  dsl.Pos
}

// TemplateOptions tune CompileTemplate.
type TemplateOptions struct {
	// ItemVar, when set, declares the for_each item variable and `index`.
	ItemVar string
}

// Scope holds the variables a template or condition sees at run time.
type Scope struct {
	Params   map[string]any
	Steps    map[string]any
	Workflow map[string]any
	ItemVar  string
	Item     any
	Index    int
	// Lenient makes a failing block render as null instead of an error
	// (used for the output of a run cut short by skip_remaining).
	Lenient bool
}

func (s *Scope) env() map[string]any {
	env := map[string]any{"params": s.Params, "steps": s.Steps, "workflow": s.Workflow}
	if s.ItemVar != "" {
		env[s.ItemVar] = s.Item
		env["index"] = s.Index
	}
	if s.Lenient {
		env[lenientKey] = true
	}
	return env
}

// lenientKey marks a lenient render in the env map; it is not a valid
// identifier, so expressions cannot read it.
const lenientKey = "$lenient"

// ExprError is a run-time failure of one expression: the expression, where
// it is written, and what went wrong (with the values involved).
type ExprError struct {
	Pos  dsl.Pos
	Expr string
	Msg  string
}

func (e *ExprError) Error() string {
	return fmt.Sprintf("%s: {{ %s }}: %s", e.Pos, e.Expr, e.Msg)
}

// tnode is a node of the compiled value tree.
type tnode interface {
	render(env map[string]any) (any, error)
}

type (
	literal struct{ v any }
	objNode struct {
		keys []string
		vals []tnode
	}
	arrNode   struct{ items []tnode }
	blockNode struct{ b *block } // a string that is exactly one block
	textNode  struct {
		parts  []string // len(parts) == len(blocks)+1
		blocks []*block
	}
)

type block struct {
	prog *vm.Program
	src  string
	pos  dsl.Pos
	// literal: the expression is built from literals only (no variables,
	// no calls), so its value is known at load time.
	literal bool
	// posAt maps a rune offset inside src to a source position.
	posAt func(int) dsl.Pos
}

// CompileTemplate compiles a YAML value (arguments, output, default
// values) into a Template. Every problem is reported, with positions inside
// the scalars.
func CompileTemplate(src *dsl.Source, n *yaml.Node, opts TemplateOptions) (*Template, dsl.Diagnostics) {
	return NewTemplateCompiler(src).Compile(n, opts)
}

// TemplateCompiler compiles many templates of one file, sharing the
// expression environment between them (building it dominates the cost of
// compiling a short expression). Not safe for concurrent use.
type TemplateCompiler struct {
	src  *dsl.Source
	cfgs map[string]*conf.Config // by item variable
}

// NewTemplateCompiler returns a compiler for templates in src.
func NewTemplateCompiler(src *dsl.Source) *TemplateCompiler {
	return &TemplateCompiler{src: src, cfgs: map[string]*conf.Config{}}
}

func (tc *TemplateCompiler) config(opts TemplateOptions) *conf.Config {
	if cfg, ok := tc.cfgs[opts.ItemVar]; ok {
		return cfg
	}
	cfg := conf.CreateNew()
	expr.Env(exprEnv(opts))(cfg)
	expr.Function(fnGet, strictGet)(cfg)
	expr.Function(fnOpt, lenientGet)(cfg)
	expr.MaxNodes(2000)(cfg)
	cfg.Check()
	tc.cfgs[opts.ItemVar] = cfg
	return cfg
}

// Compile compiles one YAML value; see CompileTemplate.
func (tc *TemplateCompiler) Compile(n *yaml.Node, opts TemplateOptions) (*Template, dsl.Diagnostics) {
	c := &tcompiler{src: tc.src, opts: opts, cfg: tc.config(opts)}
	t := &Template{}
	if n == nil {
		t.static, t.staticJSON = true, json.RawMessage("null")
		t.root = literal{}
		return t, nil
	}
	t.root = c.node(n, 0)
	t.refs = c.refs
	if lit, ok := t.root.(literal); ok && len(c.diags) == 0 {
		b, err := EncodeJSON(lit.v)
		if err == nil {
			t.static, t.staticJSON, t.staticVal = true, b, lit.v
		}
	}
	return t, c.diags
}

// Static reports whether the template has no blocks, and its value.
func (t *Template) Static() (any, bool) { return t.staticVal, t.static }

// Constant reports whether the template's value is known at load time,
// and that value: a template without blocks, or a string that is exactly
// one block built from literals only (e.g. "{{ ['a', 'b'] }}").
func (t *Template) Constant() (any, bool) {
	if t.static {
		return t.staticVal, true
	}
	if b, ok := t.root.(blockNode); ok && b.b.literal {
		if v, err := b.b.run(map[string]any{}); err == nil {
			return normalize(v), true
		}
	}
	return nil, false
}

// Refs lists the step references, in source order.
func (t *Template) Refs() []Ref { return t.refs }

// Render evaluates the template.
func (t *Template) Render(s *Scope) (any, error) {
	if t.static {
		return t.staticVal, nil
	}
	return t.root.render(s.env())
}

// RenderJSON evaluates the template and encodes it, enforcing the 1 MiB
// limit. A template without blocks returns its precomputed bytes.
func (t *Template) RenderJSON(s *Scope) (json.RawMessage, error) {
	if t.static {
		return t.staticJSON, nil
	}
	v, err := t.root.render(s.env())
	if err != nil {
		return nil, err
	}
	b, err := EncodeJSON(v)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRenderedBytes {
		return nil, fmt.Errorf("rendered value is %d bytes, over the 1 MiB limit", len(b))
	}
	return b, nil
}

func (l literal) render(map[string]any) (any, error) { return l.v, nil }

func (o *objNode) render(env map[string]any) (any, error) {
	m := make(map[string]any, len(o.keys))
	for i, k := range o.keys {
		v, err := o.vals[i].render(env)
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

func (a *arrNode) render(env map[string]any) (any, error) {
	s := make([]any, len(a.items))
	for i, it := range a.items {
		v, err := it.render(env)
		if err != nil {
			return nil, err
		}
		s[i] = v
	}
	return s, nil
}

func (b blockNode) render(env map[string]any) (any, error) {
	v, err := b.b.run(env)
	if err != nil && env[lenientKey] == true {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return normalize(v), nil
}

func (t *textNode) render(env map[string]any) (any, error) {
	var sb strings.Builder
	for i, p := range t.parts {
		sb.WriteString(p)
		if i == len(t.blocks) {
			break
		}
		v, err := t.blocks[i].run(env)
		if err != nil {
			if env[lenientKey] != true {
				return nil, err
			}
			v = nil
		}
		switch x := normalize(v).(type) {
		case string:
			sb.WriteString(x)
		case nil:
			sb.WriteString("null")
		default:
			enc, err := EncodeJSON(x)
			if err != nil {
				return nil, t.blocks[i].fail(nil, err.Error())
			}
			sb.Write(enc)
		}
		if sb.Len() > MaxRenderedBytes {
			return nil, t.blocks[i].fail(nil, "rendered text is over the 1 MiB limit")
		}
	}
	return sb.String(), nil
}

// vms are reused between expression runs: a fresh vm.VM (what vm.Run
// makes) allocates its stack and variables on every template block.
var vms = sync.Pool{New: func() any { return &vm.VM{} }}

func (b *block) run(env map[string]any) (any, error) {
	m := vms.Get().(*vm.VM)
	v, err := m.Run(b.prog, env)
	// Drop references to the run's values before the VM waits in the pool.
	clear(m.Stack)
	clear(m.Variables)
	vms.Put(m)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			return nil, b.fail(fe, cleanExprMsg(fe.Message))
		}
		return nil, b.fail(nil, err.Error())
	}
	return v, nil
}

func (b *block) fail(fe *file.Error, msg string) *ExprError {
	pos := b.pos
	if fe != nil && b.posAt != nil {
		pos = b.posAt(fe.From)
	}
	return &ExprError{Pos: pos, Expr: b.src, Msg: msg}
}

// normalize turns the numeric types expr produces into the data model
// (int64 for integers, float64 otherwise).
func normalize(v any) any {
	switch x := v.(type) {
	case int:
		return int64(x)
	case int32:
		return int64(x)
	case float32:
		return float64(x)
	case []string:
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out
	}
	return v
}

type tcompiler struct {
	src   *dsl.Source
	opts  TemplateOptions
	cfg   *conf.Config
	diags dsl.Diagnostics
	refs  []Ref
}

func (c *tcompiler) errorf(p dsl.Pos, format string, args ...any) {
	c.diags.Add(c.src, p, format, args...)
}

func (c *tcompiler) node(n *yaml.Node, depth int) tnode {
	if depth > 64 {
		c.errorf(c.src.NodePos(n), "value nested deeper than 64 levels")
		return literal{}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return literal{}
		}
		return c.node(n.Content[0], depth)
	case yaml.AliasNode:
		return c.node(n.Alias, depth+1)
	case yaml.MappingNode:
		o := &objNode{}
		allLit := true
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if strings.Contains(k.Value, "{{") {
				c.errorf(c.src.NodePos(k), "templates are not allowed in keys (%q)", k.Value)
			}
			tn := c.node(v, depth+1)
			if _, ok := tn.(literal); !ok {
				allLit = false
			}
			o.keys = append(o.keys, k.Value)
			o.vals = append(o.vals, tn)
		}
		if allLit {
			m := make(map[string]any, len(o.keys))
			for i, k := range o.keys {
				m[k] = o.vals[i].(literal).v
			}
			return literal{m}
		}
		return o
	case yaml.SequenceNode:
		a := &arrNode{}
		allLit := true
		for _, it := range n.Content {
			tn := c.node(it, depth+1)
			if _, ok := tn.(literal); !ok {
				allLit = false
			}
			a.items = append(a.items, tn)
		}
		if allLit {
			s := make([]any, len(a.items))
			for i, it := range a.items {
				s[i] = it.(literal).v
			}
			return literal{s}
		}
		return a
	case yaml.ScalarNode:
		if n.ShortTag() == "!!str" && strings.Contains(n.Value, "{{") {
			return c.scalar(n)
		}
		v, err := dsl.NodeValue(n)
		if err != nil {
			c.errorf(c.src.NodePos(n), "%v", err)
		}
		return literal{v}
	}
	return literal{}
}

// scalar compiles a string holding blocks.
func (c *tcompiler) scalar(n *yaml.Node) tnode {
	s := n.Value
	var parts []string
	var blocks []*block
	i := 0
	for {
		open := strings.Index(s[i:], "{{")
		if open < 0 {
			parts = append(parts, s[i:])
			break
		}
		open += i
		end := strings.Index(s[open+2:], "}}")
		if end < 0 {
			c.errorf(c.src.OffsetPos(n, open), "unclosed {{ (missing }})")
			return literal{s}
		}
		end += open + 2
		parts = append(parts, s[i:open])
		blocks = append(blocks, c.block(n, s[open+2:end], open+2))
		i = end + 2
	}
	for _, b := range blocks {
		if b == nil {
			return literal{s}
		}
	}
	if len(blocks) == 1 && strings.TrimSpace(parts[0]) == "" && strings.TrimSpace(parts[1]) == "" {
		return blockNode{blocks[0]}
	}
	return &textNode{parts: parts, blocks: blocks}
}

// block compiles one {{ … }} body found at byte offset off of the scalar.
func (c *tcompiler) block(n *yaml.Node, body string, off int) *block {
	code := StripLeadingDots(body)
	posAt := func(runeOff int) dsl.Pos {
		return c.src.OffsetPos(n, off+byteOffset(code, runeOff))
	}
	if strings.TrimSpace(code) == "" {
		c.errorf(c.src.OffsetPos(n, off), "empty {{ }} block")
		return nil
	}
	prog, refs, lit, errPos, err := compileExpr(code, c.cfg, c.opts.ItemVar, posAt)
	if err != nil {
		c.errorf(errPos, "%s", err)
		return nil
	}
	c.refs = append(c.refs, refs...)
	return &block{prog: prog, src: strings.TrimSpace(body), pos: posAt(leadingSpace(code)), posAt: posAt, literal: lit}
}

func leadingSpace(s string) int {
	return utf8.RuneCountInString(s) - utf8.RuneCountInString(strings.TrimLeft(s, " \t\n"))
}

// byteOffset converts a rune offset in s to a byte offset.
func byteOffset(s string, runes int) int {
	i := 0
	for b := range s {
		if i == runes {
			return b
		}
		i++
	}
	return len(s)
}

// StripLeadingDots accepts the ToolHive-proposal form {{.params.x}}: a dot
// that starts an operand (at the beginning or after an operator, bracket or
// space) and is followed by params, steps or workflow is replaced by a
// space, keeping every offset the same. Other leading dots (expr's
// predicate shorthand, as in map(list, .status)) and quoted text are left
// alone.
func StripLeadingDots(s string) string {
	b := []byte(s)
	var quote byte
	prev := byte(0) // last non-space byte outside quotes
	for i := 0; i < len(b); i++ {
		ch := b[i]
		if quote != 0 {
			if ch == '\\' {
				i++
				continue
			}
			if ch == quote {
				quote = 0
				prev = ch
			}
			continue
		}
		switch ch {
		case '"', '\'', '`':
			quote = ch
			prev = ch
			continue
		case ' ', '\t', '\n':
			continue
		case '.':
			if (prev == 0 || strings.IndexByte("([{,!=<>&|+-*/%?:", prev) >= 0) && rootVarAt(s[i+1:]) {
				b[i] = ' '
				continue
			}
		}
		prev = ch
	}
	return string(b)
}

// rootVarAt reports whether s starts with params, steps or workflow as a
// whole identifier.
func rootVarAt(s string) bool {
	for _, v := range []string{"params", "steps", "workflow"} {
		if strings.HasPrefix(s, v) && (len(s) == len(v) || !isIdentChar(s[len(v)])) {
			return true
		}
	}
	return false
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

func isIdentStart(c byte) bool {
	return c == '_' || c == '$' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// exprEnv declares the variables' types for the checker.
func exprEnv(opts TemplateOptions) map[string]any {
	env := map[string]any{
		"params":   map[string]any{},
		"steps":    map[string]any{},
		"workflow": map[string]any{},
	}
	if opts.ItemVar != "" {
		var item any
		env[opts.ItemVar] = item
		env["index"] = 0
	}
	return env
}

const (
	fnGet = "__vmcp_get" // strict member access: a missing key is an error
	fnOpt = "__vmcp_opt" // lenient member access: missing or null gives null
)

func strictGet(params ...any) (any, error) {
	obj, key, path := params[0], params[1], params[2].(string)
	switch m := obj.(type) {
	case map[string]any:
		k, _ := key.(string)
		if v, ok := m[k]; ok {
			return v, nil
		}
		return nil, fmt.Errorf("%s has no key %q (it has %s)", path, k, keyList(m))
	case nil:
		return nil, fmt.Errorf("cannot read %q of %s: it is null", key, path)
	default:
		return nil, fmt.Errorf("cannot read %q of %s: it is %s %s, not an object", key, path, TypeName(obj), short(obj))
	}
}

func lenientGet(params ...any) (any, error) {
	if m, ok := params[0].(map[string]any); ok {
		k, _ := params[1].(string)
		return m[k], nil
	}
	return nil, nil
}

func keyList(m map[string]any) string {
	if len(m) == 0 {
		return "no keys"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > 10 {
		keys = append(keys[:10], "…")
	}
	return "keys " + strings.Join(keys, ", ")
}

func short(v any) string {
	b, err := EncodeJSON(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 60 {
		return string(b[:57]) + "..."
	}
	return string(b)
}

// compileExpr parses, analyses and compiles one expression. It rewrites
// property reads into strict or lenient accessor calls and collects step
// references, and reports whether the expression is built from literals
// only. itemVar is the for_each item variable ("" outside for_each), for
// messages. On error it returns the error's position.
func compileExpr(code string, cfg *conf.Config, itemVar string, posAt func(int) dsl.Pos) (*vm.Program, []Ref, bool, dsl.Pos, error) {
	fail := func(err error) (*vm.Program, []Ref, bool, dsl.Pos, error) {
		return nil, nil, false, errPos(err, posAt), errors.New(compileErrMsg(err, code, itemVar))
	}
	tree, err := parser.ParseWithConfig(code, cfg)
	if err != nil {
		return fail(err)
	}
	lit := isLiteral(tree.Node)
	refs, aerr := analyze(&tree.Node, posAt)
	if aerr != nil {
		return nil, nil, false, aerr.pos, errors.New(aerr.msg)
	}
	if _, err := checker.Check(tree, cfg); err != nil {
		return fail(err)
	}
	if err := optimizer.Optimize(&tree.Node, cfg); err != nil {
		return fail(err)
	}
	prog, err := compiler.Compile(tree, cfg)
	if err != nil {
		return fail(err)
	}
	return prog, refs, lit, dsl.Pos{}, nil
}

// isLiteral reports whether an expression consists of literals only
// (scalars, lists and maps of them), so evaluating it is trivial.
func isLiteral(n ast.Node) bool {
	switch x := n.(type) {
	case *ast.NilNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.StringNode, *ast.ConstantNode:
		return true
	case *ast.UnaryNode:
		return isLiteral(x.Node)
	case *ast.ArrayNode:
		for _, e := range x.Nodes {
			if !isLiteral(e) {
				return false
			}
		}
		return true
	case *ast.MapNode:
		for _, p := range x.Pairs {
			if !isLiteral(p) {
				return false
			}
		}
		return true
	case *ast.PairNode:
		return isLiteral(x.Key) && isLiteral(x.Value)
	}
	return false
}

func errPos(err error, posAt func(int) dsl.Pos) dsl.Pos {
	var fe *file.Error
	if errors.As(err, &fe) {
		return posAt(fe.From)
	}
	return posAt(0)
}

var (
	unknownNameRE = regexp.MustCompile(`^unknown name (\S+)`)
	badTokenRE    = regexp.MustCompile(`unexpected token (\w+)\((".*")\)`)
	pipeToNameRE  = regexp.MustCompile(`\|\s*([A-Za-z_][A-Za-z0-9_]*)\s*$`)
)

// compileErrMsg words a load-time expr error for the author of code.
func compileErrMsg(err error, code, itemVar string) string {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return err.Error()
	}
	msg := strings.ReplaceAll(fe.Message, fnGet, "field access")
	msg = strings.ReplaceAll(msg, fnOpt, "field access")
	if m := unknownNameRE.FindStringSubmatch(msg); m != nil {
		return unknownNameMsg(m[1], code, fe.From, itemVar)
	}
	if strings.HasPrefix(msg, "literal not terminated") {
		return "a string is not closed"
	}
	if strings.HasPrefix(msg, "unexpected token EOF") {
		msg = "the expression is incomplete"
		if m := pipeToNameRE.FindStringSubmatch(code); m != nil {
			msg += fmt.Sprintf(" (a pipe calls a function: write | %s() or %s(…))", m[1], m[1])
		}
		return msg
	}
	return badTokenRE.ReplaceAllStringFunc(msg, func(s string) string {
		m := badTokenRE.FindStringSubmatch(s)
		if m[1] == "String" {
			return "unexpected string " + m[2]
		}
		return "unexpected " + m[2]
	})
}

// unknownNameMsg explains an unknown identifier at rune offset from of code:
// an unknown function when a call follows, otherwise an unknown variable.
func unknownNameMsg(name, code string, from int, itemVar string) string {
	rest := []rune(code)
	if from >= 0 && from+utf8.RuneCountInString(name) <= len(rest) {
		rest = rest[from+utf8.RuneCountInString(name):]
	}
	if strings.HasPrefix(strings.TrimLeft(string(rest), " \t\n"), "(") {
		fns := append([]string{}, builtin.Names...)
		sug := dsl.Suggest(name, fns)
		if sug == "" {
			for _, f := range fns {
				if len(f) >= 3 && (strings.HasPrefix(name, f) || strings.HasPrefix(f, name)) {
					sug = "; did you mean \"" + f + "\"?"
					break
				}
			}
		}
		return fmt.Sprintf("unknown function %q%s", name, sug)
	}
	vars := []string{"params", "steps", "workflow"}
	if itemVar != "" {
		vars = append(vars, itemVar, "index")
	}
	msg := fmt.Sprintf("unknown name %q (variables: %s)", name, strings.Join(vars, ", "))
	switch {
	case itemVar == "" && (name == "item" || name == "index"):
		msg += "; " + name + " exists only in a for_each step"
	case itemVar != "" && name == defaultItem:
		msg += fmt.Sprintf("; this step names its item %q (as: %s)", itemVar, itemVar)
	default:
		msg += dsl.Suggest(name, vars)
	}
	return msg
}

// defaultItem is the for_each item variable's name when `as` is not given.
const defaultItem = "item"

// cleanExprMsg rewrites expr's messages where they leak our accessor names.
func cleanExprMsg(msg string) string {
	msg = strings.ReplaceAll(msg, fnGet, "field access")
	msg = strings.ReplaceAll(msg, fnOpt, "field access")
	if strings.HasPrefix(msg, "unknown name ") {
		msg += " (variables: params, steps, workflow)"
	}
	return msg
}

type analyzeErr struct {
	pos dsl.Pos
	msg string
}

// analyze marks guarded subtrees, rewrites member reads and collects refs.
func analyze(root *ast.Node, posAt func(int) dsl.Pos) ([]Ref, *analyzeErr) {
	guarded := map[ast.Node]bool{}
	markGuarded := func(n ast.Node) {
		ast.Walk(&n, visitor(func(m *ast.Node) { guarded[*m] = true }))
	}
	ast.Walk(root, visitor(func(n *ast.Node) {
		switch x := (*n).(type) {
		case *ast.BinaryNode:
			if x.Operator == "??" {
				markGuarded(x.Left)
			}
		case *ast.ChainNode:
			markGuarded(x.Node)
		}
	}))

	var refs []Ref
	var firstErr *analyzeErr
	fail := func(n ast.Node, format string, args ...any) {
		if firstErr == nil {
			firstErr = &analyzeErr{pos: posAt(n.Location().From), msg: fmt.Sprintf(format, args...)}
		}
	}
	// Collect refs before rewriting: a chain steps.<id>.<field>.<more>.
	// ast.Walk is post-order, so the longest chain is seen last; record
	// each chain once, from the member node that names the field.
	stepsUses := 0
	stepsIdents := 0
	ast.Walk(root, visitor(func(n *ast.Node) {
		switch x := (*n).(type) {
		case *ast.IdentifierNode:
			if x.Value == "steps" {
				stepsIdents++
			}
		case *ast.MemberNode:
			path, ok := chain(x)
			if !ok || len(path) < 2 || path[0] != "steps" {
				if id, isID := x.Node.(*ast.IdentifierNode); isID && id.Value == "steps" {
					stepsUses++
					fail(leftmost(x.Property), "a step must be named literally (steps.<id>)")
				}
				return
			}
			if len(path) == 2 {
				stepsUses++
			}
		}
	}))
	if stepsIdents != stepsUses && firstErr == nil {
		ast.Walk(root, visitor(func(n *ast.Node) {
			if id, ok := (*n).(*ast.IdentifierNode); ok && id.Value == "steps" {
				fail(id, "steps must be followed by a step id (steps.<id>)")
			}
		}))
	}
	// ast.Walk is post-order (an inner chain is visited before the chain
	// that contains it), so the inner member nodes of every steps chain are
	// marked in a first pass and only outermost chains are recorded: a
	// read of steps.x.output.y is one ref with Field "output", not also a
	// whole-step ref (which would make the engine decode every content
	// list).
	inner := map[ast.Node]bool{}
	ast.Walk(root, visitor(func(n *ast.Node) {
		x, ok := (*n).(*ast.MemberNode)
		if !ok {
			return
		}
		if path, ok := chain(x); !ok || len(path) < 2 || path[0] != "steps" {
			return
		}
		for in := x.Node; ; {
			m, ok := in.(*ast.MemberNode)
			if !ok {
				break
			}
			inner[m] = true
			in = m.Node
		}
	}))
	ast.Walk(root, visitor(func(n *ast.Node) {
		x, ok := (*n).(*ast.MemberNode)
		if !ok || inner[x] {
			return
		}
		path, ok := chain(x)
		if !ok || len(path) < 2 || path[0] != "steps" {
			return
		}
		r := Ref{Step: path[1], Guarded: guarded[x], Path: strings.Join(path, "."), Pos: posAt(stepNode(x).Location().From)}
		if len(path) >= 3 {
			r.Field = path[2]
			if !contains(StepFields, r.Field) {
				fail(fieldNode(x), "steps.%s has no field %q (fields: %s)%s", path[1], path[2], strings.Join(StepFields, ", "), dsl.Suggest(path[2], StepFields))
			}
			r.Deep = len(path) >= 4 && (r.Field == "output" || r.Field == "content")
		}
		refs = append(refs, r)
	}))
	if firstErr != nil {
		return nil, firstErr
	}

	// Rewrite property reads (not method calls, not index by number).
	ast.Walk(root, visitor(func(n *ast.Node) {
		x, ok := (*n).(*ast.MemberNode)
		if !ok || x.Method {
			return
		}
		prop, ok := x.Property.(*ast.StringNode)
		if !ok {
			return
		}
		fn := fnGet
		if guarded[x] || x.Optional {
			fn = fnOpt
		}
		call := &ast.CallNode{
			Callee:    &ast.IdentifierNode{Value: fn},
			Arguments: []ast.Node{x.Node, &ast.StringNode{Value: prop.Value}, &ast.StringNode{Value: describe(x.Node)}},
		}
		call.SetLocation(x.Location())
		call.Callee.SetLocation(x.Location())
		*n = call
	}))
	sort.SliceStable(refs, func(i, j int) bool { return refs[i].Pos.Before(refs[j].Pos) })
	return refs, nil
}

// chain returns the identifier path of a pure member chain (a.b.c or
// a["b"].c), or false when any part is computed.
func chain(n ast.Node) ([]string, bool) {
	switch x := n.(type) {
	case *ast.IdentifierNode:
		return []string{x.Value}, true
	case *ast.MemberNode:
		if x.Method {
			return nil, false
		}
		p, ok := x.Property.(*ast.StringNode)
		if !ok {
			return nil, false
		}
		base, ok := chain(x.Node)
		if !ok {
			return nil, false
		}
		return append(base, p.Value), true
	case *ast.CallNode:
		// Already rewritten accessor (walks are post-order).
		if id, ok := x.Callee.(*ast.IdentifierNode); ok && (id.Value == fnGet || id.Value == fnOpt) && len(x.Arguments) == 3 {
			base, ok := chain(x.Arguments[0])
			if !ok {
				return nil, false
			}
			return append(base, x.Arguments[1].(*ast.StringNode).Value), true
		}
	}
	return nil, false
}

// leftmost returns the node where the text of n starts (expr locates a
// member read at its property, a binary operation at its operator).
func leftmost(n ast.Node) ast.Node {
	for {
		switch x := n.(type) {
		case *ast.MemberNode:
			n = x.Node
		case *ast.ChainNode:
			n = x.Node
		case *ast.BinaryNode:
			n = x.Left
		default:
			return n
		}
	}
}

// stepNode returns the member node for steps.<id> inside a chain.
func stepNode(x *ast.MemberNode) ast.Node {
	var n ast.Node = x
	for {
		m, ok := n.(*ast.MemberNode)
		if !ok {
			return n
		}
		if id, ok := m.Node.(*ast.IdentifierNode); ok && id.Value == "steps" {
			return m.Property
		}
		n = m.Node
	}
}

// fieldNode returns the property node naming the field in steps.<id>.<field>.
func fieldNode(x *ast.MemberNode) ast.Node {
	var n ast.Node = x
	for {
		m, ok := n.(*ast.MemberNode)
		if !ok {
			return n
		}
		if inner, ok := m.Node.(*ast.MemberNode); ok {
			if id, ok := inner.Node.(*ast.IdentifierNode); ok && id.Value == "steps" {
				return m.Property
			}
		}
		n = m.Node
	}
}

// describe renders the object part of a member read for messages.
func describe(n ast.Node) string {
	if p, ok := chain(n); ok {
		return strings.Join(p, ".")
	}
	return "the value"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type visitor func(*ast.Node)

func (v visitor) Visit(n *ast.Node) { v(n) }
