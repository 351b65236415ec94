// Package authz compiles and evaluates the config's authorization
// policies (`authz`): CEL rules over the principal, the request, the tool,
// prompt or resource and the arguments. Rules are evaluated in order and
// the first that matches decides (allow or deny); when any rule is
// configured, a request no rule matches is denied. Without rules every
// request is allowed.
//
// Policies share the CEL environment options, cost limits and error
// wording of workflow conditions (package engine) and are compiled and
// type-checked to bool when the config is loaded; a policy that does not
// compile is a diagnostic at its file:line:col in the config.
package authz

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
	"go.yaml.in/yaml/v3"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/engine"
)

// Methods a request can have (request.method).
const (
	MethodToolsCall     = "tools/call"
	MethodToolsList     = "tools/list"
	MethodPromptsGet    = "prompts/get"
	MethodPromptsList   = "prompts/list"
	MethodResourcesRead = "resources/read"
	MethodResourcesList = "resources/list"
)

// Variables are the names a policy sees.
var Variables = []string{"principal", "request", "tool", "prompt", "resource", "arguments"}

// Principal is the caller as policies see it: principal.name,
// principal.groups and principal.claims (the verified JWT's claims for
// OIDC; empty for static tokens and anonymous callers).
type Principal struct {
	Name   string
	Groups []string
	Claims map[string]any

	once sync.Once
	val  map[string]any
}

// value is the principal as a CEL map, built once.
func (p *Principal) value() map[string]any {
	p.once.Do(func() {
		groups := p.Groups
		if groups == nil {
			groups = []string{}
		}
		claims := p.Claims
		if claims == nil {
			claims = map[string]any{}
		}
		p.val = map[string]any{"name": p.Name, "groups": groups, "claims": claims}
	})
	return p.val
}

// Request is what a principal asks for. Unused fields are empty strings
// (never missing keys): request.method, request.tool, request.backend,
// request.backend_tool, request.prompt, request.resource,
// request.workflow (the composite whose step makes a call, with
// check_steps) and request.listing (a bool).
type Request struct {
	Method string
	// Tool is the tool's name as clients see it ("" for a hidden tool a
	// workflow step calls).
	Tool string
	// Backend and BackendTool name the backend tool behind Tool (empty for
	// composite tools).
	Backend     string
	BackendTool string
	Prompt      string
	// Resource is a resource URI.
	Resource string
	// Workflow names the composite whose step makes the call (check_steps).
	Workflow string
	// Listing is true when a list is being filtered: each item is decided
	// as the call that would reach it, without arguments.
	Listing bool
	// Arguments are the call's arguments (a JSON object), decoded only
	// when a policy reads `arguments`.
	Arguments json.RawMessage
}

// Decision is the outcome of Decide.
type Decision struct {
	Allowed bool
	// Rule is the index in authz.policies of the rule that decided, or -1
	// when none matched (default deny) or no policy is configured.
	Rule int
	// Pos is where that rule is.
	Pos dsl.Pos
	// Err is an evaluation error of a rule (see Decide).
	Err error
}

// Reason says why a request was refused, for the client: the rule's index
// (not its text), or that no rule allows it.
func (d Decision) Reason() string {
	switch {
	case d.Allowed:
		return "allowed"
	case d.Rule < 0:
		return "no authz policy allows it"
	case d.Err != nil:
		return fmt.Sprintf("authz.policies[%d] could not be evaluated, which denies", d.Rule)
	}
	return fmt.Sprintf("authz.policies[%d] denies it", d.Rule)
}

type rule struct {
	// capped: evaluated under the run-time cost limit; timed: also under
	// maxEvalTime (it has a comprehension).
	capped   bool
	timed    bool
	allow    bool
	prog     cel.Program
	src      string
	pos      dsl.Pos
	usesArgs bool
}

// Policies are the compiled `authz` block. A nil *Policies allows
// everything.
type Policies struct {
	// CheckSteps also checks each backend call a composite's steps make.
	CheckSteps bool
	rules      []rule
	usesArgs   bool
}

// Active reports whether any policy is configured (nil: none).
func (p *Policies) Active() bool { return p != nil && len(p.rules) > 0 }

// Len is the number of rules.
func (p *Policies) Len() int {
	if p == nil {
		return 0
	}
	return len(p.rules)
}

// newEnv is the policies' CEL environment: the workflow conditions'
// options (numbers compare across int and double, optional types) with
// the policy variables.
func newEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("principal", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("tool", cel.StringType),
		cel.Variable("prompt", cel.StringType),
		cel.Variable("resource", cel.StringType),
		cel.Variable("arguments", cel.MapType(cel.StringType, cel.DynType)),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
	)
}

// Compile compiles cfg's policies. Every policy that does not compile is a
// diagnostic at its position in the config file. With no policies it
// returns nil (allow everything).
func Compile(cfg *dsl.Config) (*Policies, dsl.Diagnostics) {
	az := cfg.Authz
	if len(az.Policies) == 0 {
		return nil, nil
	}
	env, err := newEnv()
	if err != nil {
		var ds dsl.Diagnostics
		ds.Add(cfg.Src, cfg.Src.NodePos(az.Node), "authz: %v", err)
		return nil, ds
	}
	p := &Policies{CheckSteps: az.CheckSteps.Value}
	var ds dsl.Diagnostics
	for i, pol := range az.Policies {
		allow := pol.Allow.Set || pol.Allow.Node != nil
		s := pol.Allow
		if !allow {
			s = pol.Deny
		}
		r, d := compileRule(env, cfg.Src, i, allow, s.Value, s.Node)
		if d != nil {
			ds = append(ds, d...)
			continue
		}
		p.rules = append(p.rules, *r)
		p.usesArgs = p.usesArgs || r.usesArgs
	}
	if len(ds) > 0 {
		return nil, ds
	}
	return p, nil
}

func compileRule(env *cel.Env, src *dsl.Source, i int, allow bool, code string, n *yaml.Node) (*rule, dsl.Diagnostics) {
	kind := "deny"
	if allow {
		kind = "allow"
	}
	var ds dsl.Diagnostics
	posAt := func(runeOff int) dsl.Pos {
		if n == nil {
			return dsl.Pos{File: src.Name}
		}
		return src.OffsetPos(n, engine.CELByteOffset(code, runeOff))
	}
	fail := func(off int, format string, args ...any) (*rule, dsl.Diagnostics) {
		ds.Add(src, posAt(off), "authz.policies[%d].%s: "+format, append([]any{i, kind}, args...)...)
		return nil, ds
	}
	if strings.TrimSpace(code) == "" {
		return fail(0, "must not be empty")
	}
	parsed, iss := env.Parse(code)
	if iss != nil && iss.Err() != nil {
		e := iss.Errors()[0]
		return fail(engine.CELLineColOffset(code, e.Location.Line(), e.Location.Column()), "%s", engine.CELSyntaxMessage(e.Message))
	}
	checked, iss := env.Check(parsed)
	if iss != nil && iss.Err() != nil {
		for _, e := range iss.Errors() {
			msg, off := engine.CELCheckMessage(e.Message, code, engine.CELLineColOffset(code, e.Location.Line(), e.Location.Column()), Variables)
			ds.Add(src, posAt(off), "authz.policies[%d].%s: %s", i, kind, msg)
		}
		return nil, ds
	}
	lead := len([]rune(code)) - len([]rune(strings.TrimLeft(code, " \t\n")))
	if !checked.OutputType().IsExactType(types.BoolType) && checked.OutputType() != types.DynType {
		return fail(lead, "a policy must be a bool expression, but %q is %s", strings.TrimSpace(code), checked.OutputType())
	}
	est, err := env.EstimateCost(checked, engine.CELCostEstimator())
	if err == nil && est.Max > engine.MaxCELEstimate {
		return fail(lead, "policy is too expensive (estimated cost up to %d, limit %d)", est.Max, engine.MaxCELEstimate)
	}
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	// A policy whose cost does not depend on the size of its inputs (no
	// comprehension, no string or list operation whose cost grows with its
	// operands) and stays within the run-time limit cannot exceed it: it
	// runs without the cost tracker, which halves an evaluation's
	// allocations. Every other policy is capped at run time like a
	// condition.
	capped := err != nil || !constantCost(env, checked, est.Max)
	if capped {
		opts = append(opts, cel.CostLimit(engine.MaxCELCost), cel.InterruptCheckFrequency(100))
	}
	prog, err := env.Program(checked, opts...)
	if err != nil {
		return fail(lead, "%v", err)
	}
	return &rule{capped: capped, timed: capped && hasComprehension(checked), allow: allow, prog: prog, src: strings.TrimSpace(code), pos: posAt(lead), usesArgs: readsIdent(checked, "arguments")}, nil
}

// constant reports whether the rule runs without the cost tracker.
func (r *rule) constant() bool { return !r.capped }

// constantCost reports whether an expression's estimated cost is the same
// whatever the size of its inputs, and within the run-time limit.
func constantCost(env *cel.Env, checked *cel.Ast, small uint64) bool {
	big, err := env.EstimateCost(checked, sizeEstimator{engine.CELSizeHint * 1_000_000})
	return err == nil && big.Max == small && small <= engine.MaxCELCost
}

// sizeEstimator bounds every unknown size by max.
type sizeEstimator struct{ max uint64 }

func (s sizeEstimator) EstimateSize(checker.AstNode) *checker.SizeEstimate {
	return &checker.SizeEstimate{Min: 0, Max: s.max}
}

func (sizeEstimator) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// hasComprehension reports whether the expression has a macro that loops
// (all, exists, exists_one, map, filter).
func hasComprehension(a *cel.Ast) bool {
	found := false
	celast.PreOrderVisit(a.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() == celast.ComprehensionKind {
			found = true
		}
	}))
	return found
}

// readsIdent reports whether the expression mentions the variable name.
func readsIdent(a *cel.Ast, name string) bool {
	found := false
	celast.PreOrderVisit(a.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() == celast.IdentKind && e.AsIdent() == name {
			found = true
		}
	}))
	return found
}

// Decide evaluates the rules in order; the first that matches decides.
// With rules configured and none matching, the request is denied; with
// none configured (p nil) it is allowed.
//
// An evaluation error (a missing map key, a type mismatch at run time, the
// cost limit) never grants access: an allow rule that fails to evaluate
// does not match (evaluation goes on with the next rule), and a deny rule
// that fails to evaluate matches (the request is denied). Guard optional
// data with has(…) or the optional syntax (principal.claims.?dept).
func (p *Policies) Decide(ctx context.Context, pr *Principal, req *Request) Decision {
	if !p.Active() {
		return Decision{Allowed: true, Rule: -1}
	}
	act := &activation{p: pr, r: req}
	var firstErr error
	for i := range p.rules {
		r := &p.rules[i]
		out, err := r.eval(ctx, act)
		if err == nil {
			b, ok := out.Value().(bool)
			if !ok {
				err = fmt.Errorf("gave %v, not a bool", out.Value())
			} else if b {
				return Decision{Allowed: r.allow, Rule: i, Pos: r.pos}
			} else {
				continue
			}
		}
		err = fmt.Errorf("%s: authz.policies[%d] %q: %v", r.pos, i, r.src, err)
		if !r.allow {
			return Decision{Allowed: false, Rule: i, Pos: r.pos, Err: err}
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return Decision{Allowed: false, Rule: -1, Err: firstErr}
}

// maxEvalTime bounds one evaluation of a policy with a comprehension. The
// cost limit alone is not enough: cel-go's (v0.31) cost tracker is
// quadratic in the length of a list a comprehension walks, so a call with
// a list of a few hundred thousand arguments would take minutes to reach
// the limit. Comprehensions check the deadline every 100 iterations.
const maxEvalTime = 100 * time.Millisecond

func (r *rule) eval(ctx context.Context, act *activation) (ref.Val, error) {
	if !r.timed {
		out, _, err := r.prog.Eval(act)
		return out, err
	}
	ctx, cancel := context.WithTimeout(ctx, maxEvalTime)
	defer cancel()
	out, _, err := r.prog.ContextEval(ctx, act)
	return out, err
}

// activation resolves the policy variables without building a map per
// evaluation; request and arguments are built on first use and shared by
// the rules of one Decide.
type activation struct {
	p       *Principal
	r       *Request
	req     map[string]any
	args    map[string]any
	argsErr bool
}

var emptyPrincipal = &Principal{Name: "anonymous"}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "principal":
		p := a.p
		if p == nil {
			p = emptyPrincipal
		}
		return p.value(), true
	case "request":
		if a.req == nil {
			r := a.r
			a.req = map[string]any{
				"method": r.Method, "tool": r.Tool, "backend": r.Backend, "backend_tool": r.BackendTool,
				"prompt": r.Prompt, "resource": r.Resource, "workflow": r.Workflow, "listing": r.Listing,
			}
		}
		return a.req, true
	case "tool":
		return a.r.Tool, true
	case "prompt":
		return a.r.Prompt, true
	case "resource":
		return a.r.Resource, true
	case "arguments":
		if a.args == nil {
			a.args = map[string]any{}
			if len(a.r.Arguments) > 0 && json.Unmarshal(a.r.Arguments, &a.args) != nil {
				a.args = map[string]any{}
			}
		}
		return a.args, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }
