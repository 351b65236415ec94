package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/steps"
	"go.yaml.in/yaml/v3"
)

// CEL limits. At load time a condition's worst-case cost, estimated with
// every JSON list or map holding up to celSizeHint entries (the for_each
// item limit), must stay under maxCELEstimate; at run time its actual cost
// must stay under maxCELCost.
const (
	maxCELCost     = 1_000_000
	maxCELEstimate = 10_000_000
	celSizeHint    = 1000
)

// condition is a compiled CEL `condition:`.
type condition struct {
	prog cel.Program
	src  string
	pos  dsl.Pos
}

// newCELEnv builds the one CEL environment for conditions (and, later,
// authorization policies): params, steps and workflow as dynamic maps, with
// numbers comparing across int and double.
func newCELEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("params", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("steps", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("workflow", cel.MapType(cel.StringType, cel.DynType)),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
	)
}

// compileCondition compiles and type-checks a condition to bool. n is the
// scalar holding it; the ToolHive form "{{ .steps.x == 'y' }}" is accepted.
func (c *compiler) compileCondition(n *yaml.Node) (*condition, []steps.Ref) {
	raw := n.Value
	code, off := unwrapCondition(raw)
	posAt := func(runeOff int) dsl.Pos {
		return c.src.OffsetPos(n, off+byteOffsetRunes(code, runeOff))
	}
	if strings.TrimSpace(code) == "" {
		c.errorf(c.src.NodePos(n), "condition is empty")
		return nil, nil
	}
	checked, iss := c.cel.Compile(code)
	if iss != nil && iss.Err() != nil {
		for _, e := range iss.Errors() {
			c.errorf(posAt(lineColOffset(code, e.Location.Line(), e.Location.Column())), "condition: %s", e.Message)
		}
		return nil, nil
	}
	if !checked.OutputType().IsExactType(types.BoolType) && checked.OutputType() != types.DynType {
		c.errorf(posAt(leadingSpaces(code)), "condition must be a bool expression, but %q is %s", strings.TrimSpace(code), checked.OutputType())
		return nil, nil
	}
	est, err := c.cel.EstimateCost(checked, celCostEstimator{})
	if err == nil && est.Max > maxCELEstimate {
		c.errorf(posAt(leadingSpaces(code)), "condition is too expensive (estimated cost up to %d, limit %d)", est.Max, maxCELEstimate)
		return nil, nil
	}
	prog, err := c.cel.Program(checked,
		cel.CostLimit(maxCELCost),
		cel.InterruptCheckFrequency(100),
		cel.EvalOptions(cel.OptOptimize),
	)
	if err != nil {
		c.errorf(posAt(0), "condition: %v", err)
		return nil, nil
	}
	refs := celRefs(checked, posAt)
	for _, r := range refs {
		if r.Field != "" && !steps.IsStepField(r.Field) {
			c.errorf(r.Pos, "steps.%s has no field %q%s", r.Step, r.Field, dsl.Suggest(r.Field, steps.StepFields))
		}
	}
	return &condition{prog: prog, src: strings.TrimSpace(code), pos: posAt(leadingSpaces(code))}, refs
}

// eval runs the condition. A non-bool result or an evaluation error (a
// missing key, a type mismatch) is an error naming the condition.
func (cd *condition) eval(ctx context.Context, vars map[string]any) (bool, error) {
	out, _, err := cd.prog.ContextEval(ctx, vars)
	if err != nil {
		return false, fmt.Errorf("%s: condition %q: %v", cd.pos, cd.src, err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("%s: condition %q gave %v, not a bool", cd.pos, cd.src, out.Value())
	}
	return b, nil
}

// unwrapCondition strips the ToolHive-proposal wrapping "{{ … }}" and
// leading dots, returning the CEL text and its byte offset in the scalar.
func unwrapCondition(s string) (string, int) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "{{") && strings.HasSuffix(t, "}}") && strings.Count(t, "{{") == 1 {
		start := strings.Index(s, "{{") + 2
		end := strings.LastIndex(s, "}}")
		return steps.StripLeadingDots(s[start:end]), start
	}
	return s, 0
}

// celRefs collects steps.<id>[.<field>[.more]] selections.
func celRefs(a *cel.Ast, posAt func(int) dsl.Pos) []steps.Ref {
	native := a.NativeRep()
	info := native.SourceInfo()
	var refs []steps.Ref
	inner := map[int64]bool{}
	celast.PreOrderVisit(native.Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() != celast.SelectKind || inner[e.ID()] {
			return
		}
		path, ids, ok := selectPath(e)
		if !ok || len(path) < 2 || path[0] != "steps" {
			return
		}
		for _, id := range ids[1:] {
			inner[id] = true
		}
		r := steps.Ref{Step: path[1]}
		if len(path) >= 3 {
			r.Field = path[2]
			r.Deep = len(path) >= 4 && (r.Field == "output" || r.Field == "content")
		}
		// Position of the step id: the select node for steps.<id>.
		stepSel := ids[len(ids)-2]
		r.Pos = posAt(int(info.GetStartLocation(stepSel).Column()) + lineStartRunes(info, info.GetStartLocation(stepSel).Line()))
		refs = append(refs, r)
	}))
	return refs
}

// selectPath returns the names of a select chain (a.b.c) and the node ids
// from the outermost select inwards to the identifier.
func selectPath(e celast.Expr) ([]string, []int64, bool) {
	var names []string
	var ids []int64
	for {
		ids = append(ids, e.ID())
		switch e.Kind() {
		case celast.SelectKind:
			s := e.AsSelect()
			if s.IsTestOnly() {
				return nil, nil, false
			}
			names = append(names, s.FieldName())
			e = s.Operand()
		case celast.IdentKind:
			names = append(names, e.AsIdent())
			for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
				names[i], names[j] = names[j], names[i]
			}
			return names, ids, true
		default:
			return nil, nil, false
		}
	}
}

func lineStartRunes(info *celast.SourceInfo, line int) int {
	if line <= 1 {
		return 0
	}
	offs := info.LineOffsets()
	if line-2 < len(offs) {
		return int(offs[line-2])
	}
	return 0
}

// lineColOffset converts a CEL 1-based line / 0-based column to a rune
// offset in code.
func lineColOffset(code string, line, col int) int {
	if line < 1 {
		return 0
	}
	off := 0
	for i, r := range []rune(code) {
		if line == 1 {
			return off + col
		}
		if r == '\n' {
			line--
			off = i + 1
		}
	}
	return off + col
}

func leadingSpaces(s string) int {
	return len([]rune(s)) - len([]rune(strings.TrimLeft(s, " \t\n")))
}

// byteOffsetRunes converts a rune offset in s to a byte offset.
func byteOffsetRunes(s string, runes int) int {
	i := 0
	for b := range s {
		if i == runes {
			return b
		}
		i++
	}
	return len(s)
}

// celCostEstimator bounds every unknown size by celSizeHint.
type celCostEstimator struct{}

func (celCostEstimator) EstimateSize(checker.AstNode) *checker.SizeEstimate {
	return &checker.SizeEstimate{Min: 0, Max: celSizeHint}
}
func (celCostEstimator) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}
