package engine

import (
	"context"
	"fmt"
	"regexp"
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
		// Worded as the loader words it, so that one mistake is one
		// diagnostic when both report it.
		c.errorf(c.src.NodePos(n), "\"condition\" must not be empty")
		return nil, nil
	}
	parsed, iss := c.cel.Parse(code)
	if iss != nil && iss.Err() != nil {
		// The first syntax error is the one to fix; the parser's later
		// ones follow from it.
		e := iss.Errors()[0]
		c.errorf(posAt(lineColOffset(code, e.Location.Line(), e.Location.Column())), "condition: %s", celSyntaxMsg(e.Message, raw, code))
		return nil, nil
	}
	checked, iss := c.cel.Check(parsed)
	if iss != nil && iss.Err() != nil {
		for _, e := range iss.Errors() {
			msg, off := celCheckMsg(e.Message, code, lineColOffset(code, e.Location.Line(), e.Location.Column()))
			c.errorf(posAt(off), "condition: %s", msg)
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
	refs, fieldPos := celRefs(checked, code, posAt)
	for i, r := range refs {
		if r.Field != "" && !steps.IsStepField(r.Field) {
			c.errorf(fieldPos[i], "steps.%s has no field %q (fields: %s)%s", r.Step, r.Field, strings.Join(steps.StepFields, ", "), dsl.Suggest(r.Field, steps.StepFields))
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

// celRefs collects steps.<id>[.<field>[.more]] selections, each positioned
// at the step id, and the position of each one's field name.
func celRefs(a *cel.Ast, code string, posAt func(int) dsl.Pos) ([]steps.Ref, []dsl.Pos) {
	native := a.NativeRep()
	info := native.SourceInfo()
	runes := []rune(code)
	// nameAt is the rune offset of the name a select node selects: CEL
	// locates a select at its dot.
	nameAt := func(id int64) int {
		loc := info.GetStartLocation(id)
		off := loc.Column() + lineStartRunes(info, loc.Line())
		if off < len(runes) && runes[off] == '.' {
			off++
		}
		for off < len(runes) && (runes[off] == ' ' || runes[off] == '\t' || runes[off] == '\n') {
			off++
		}
		return off
	}
	var refs []steps.Ref
	var fieldPos []dsl.Pos
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
		r := steps.Ref{Step: path[1], Path: strings.Join(path, ".")}
		// Position of the step id: the select node for steps.<id>.
		r.Pos = posAt(nameAt(ids[len(ids)-2]))
		fp := r.Pos
		if len(path) >= 3 {
			r.Field = path[2]
			r.Deep = len(path) >= 4 && (r.Field == "output" || r.Field == "content")
			fp = posAt(nameAt(ids[len(ids)-3]))
		}
		refs = append(refs, r)
		fieldPos = append(fieldPos, fp)
	}))
	return refs, fieldPos
}

var (
	celTokenErrRE   = regexp.MustCompile(`^token recognition error at: '(.*)'$`)
	celExtraneousRE = regexp.MustCompile(`^extraneous input '(.*)' expecting .*$`)
	celMismatchRE   = regexp.MustCompile(`^mismatched input '(.*)' expecting (.*)$`)
	celMissingRE    = regexp.MustCompile(`^missing '(.*)' at '(.*)'$`)
	celNoViableRE   = regexp.MustCompile(`^no viable alternative at input '(.*)'$`)
	celUndeclaredRE = regexp.MustCompile(`^undeclared reference to '([^']*)' \(in container '[^']*'\)$`)
	celOverloadRE   = regexp.MustCompile(`^found no matching overload for '([^']*)' applied to '(.*)'$`)
	celReceiverRE   = regexp.MustCompile(`^[\w.]+\.\((.*)\)$`)
)

// celVariables are the variables a condition sees.
var celVariables = []string{"params", "steps", "workflow"}

// celSyntaxMsg rewords a CEL parser error without the grammar's token
// lists. raw is the condition as written, code the CEL text.
func celSyntaxMsg(msg, raw, code string) string {
	msg = strings.TrimPrefix(msg, "Syntax error: ")
	tok := quoteToken
	switch {
	case strings.Count(raw, "{{") > 1:
		return "a condition is one CEL expression (e.g. steps.logs.output.error_count > 100), not a Go template"
	case strings.Contains(code, "??"):
		return "?? exists only in {{ }} templates; in a condition guard a read with has(…) && …, or use a ternary ( … ? … : …)"
	}
	out := celSyntaxDetail(msg, tok)
	if strings.Contains(raw, "{{") {
		out += " (a condition is a CEL expression such as steps.x.status == 'completed', not a Go template)"
	}
	return out
}

func quoteToken(t string) string {
	if strings.Contains(t, "\"") {
		return "'" + t + "'"
	}
	return "\"" + t + "\""
}

// celSyntaxDetail rewords one ANTLR message (without its "Syntax error: "
// prefix); tok quotes a token.
func celSyntaxDetail(msg string, tok func(string) string) string {
	const incomplete = "syntax error: the condition is incomplete"
	if m := celTokenErrRE.FindStringSubmatch(msg); m != nil {
		switch {
		case strings.HasPrefix(m[1], "="):
			return "syntax error: \"=\" is not an operator; compare with =="
		case strings.HasPrefix(m[1], "\"") || strings.HasPrefix(m[1], "'"):
			return "syntax error: a string is not closed"
		}
		return "syntax error: unexpected character " + tok(strings.TrimSpace(m[1]))
	}
	if m := celExtraneousRE.FindStringSubmatch(msg); m != nil {
		if m[1] == "<EOF>" {
			return incomplete
		}
		return "syntax error: unexpected " + tok(m[1])
	}
	if m := celMismatchRE.FindStringSubmatch(msg); m != nil {
		out := "syntax error: unexpected " + tok(m[1])
		if m[1] == "<EOF>" {
			out = incomplete
		}
		if strings.HasPrefix(m[2], "'") && strings.Count(m[2], "'") == 2 {
			out += ", expected " + strings.ReplaceAll(m[2], "'", "\"")
		}
		return out
	}
	if m := celMissingRE.FindStringSubmatch(msg); m != nil {
		if m[2] == "<EOF>" {
			return incomplete + ": missing \"" + m[1] + "\" at the end"
		}
		return "syntax error: missing \"" + m[1] + "\" before " + tok(m[2])
	}
	if m := celNoViableRE.FindStringSubmatch(msg); m != nil {
		return "syntax error: cannot read " + tok(m[1])
	}
	return "syntax error: " + msg
}

// celCheckMsg rewords a CEL type-check error found at rune offset off of
// code, and returns the offset to point at.
func celCheckMsg(msg, code string, off int) (string, int) {
	return celCheckMsgVars(msg, code, off, celVariables)
}

// celCheckMsgVars is celCheckMsg for an environment with the variables
// vars.
func celCheckMsgVars(msg, code string, off int, celVariables []string) (string, int) {
	if m := celUndeclaredRE.FindStringSubmatch(msg); m != nil {
		runes := []rune(code)
		name := []rune(m[1])
		// CEL locates an undeclared function at its "(".
		if off >= len(name) && off < len(runes) && runes[off] == '(' {
			if start := off - len(name); string(runes[start:off]) == m[1] {
				return fmt.Sprintf("unknown function %q", m[1]), start
			}
		}
		return fmt.Sprintf("unknown name %q (variables: %s)%s", m[1], strings.Join(celVariables, ", "), dsl.Suggest(m[1], celVariables)), off
	}
	if m := celOverloadRE.FindStringSubmatch(msg); m != nil {
		op, args := m[1], m[2]
		if r := celReceiverRE.FindStringSubmatch(args); r != nil {
			args = r[1] // "dyn.(int)": a method call's arguments
		} else {
			args = strings.TrimSuffix(strings.TrimPrefix(args, "("), ")")
		}
		if strings.Contains(op, "_") && op != "_" {
			name := strings.ReplaceAll(strings.ReplaceAll(op, "_", " "), "  ", " ")
			return fmt.Sprintf("operator %s cannot be applied to %s", strings.TrimSpace(name), args), off
		}
		return fmt.Sprintf("%s() cannot be called with %s", op, args), off
	}
	return msg, off
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

// Shared with authorization policies (package authz), which use the same
// limits and the same wording of CEL errors as conditions.
const (
	MaxCELCost     = maxCELCost
	MaxCELEstimate = maxCELEstimate
	CELSizeHint    = celSizeHint
)

// CELCostEstimator bounds every unknown size by CELSizeHint.
func CELCostEstimator() checker.CostEstimator { return celCostEstimator{} }

// CELSyntaxMessage rewords a CEL parser error without the grammar's token
// lists.
func CELSyntaxMessage(msg string) string {
	return celSyntaxDetail(strings.TrimPrefix(msg, "Syntax error: "), quoteToken)
}

// CELCheckMessage rewords a CEL type-check error found at rune offset off
// of code, for an environment with the variables vars, and returns the
// offset to point at.
func CELCheckMessage(msg, code string, off int, vars []string) (string, int) {
	return celCheckMsgVars(msg, code, off, vars)
}

// CELLineColOffset converts a CEL 1-based line / 0-based column to a rune
// offset in code.
func CELLineColOffset(code string, line, col int) int { return lineColOffset(code, line, col) }

// CELByteOffset converts a rune offset in s to a byte offset.
func CELByteOffset(s string, runes int) int { return byteOffsetRunes(s, runes) }
