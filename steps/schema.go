package steps

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// Schema is a compiled JSON Schema used to validate values and to coerce
// rendered arguments to a tool's input schema.
//
// Schemas without $schema are read as draft 2020-12 (MCP tool schemas often
// omit it); a $schema naming another draft the validator knows (draft-07 is
// common) is honoured. References must stay inside the document: a remote
// $ref is a compile error, never a fetch.
//
// A Schema is immutable after CompileSchema and safe for concurrent use. A
// nil *Schema means "no schema known": it accepts and keeps every value.
type Schema struct {
	raw json.RawMessage
	sch *jsonschema.Schema
	// top is sch with a property-less root $ref followed (for the
	// introspection methods).
	top *jsonschema.Schema
	// co is the precomputed coercion tree (nil: nothing can ever change).
	co *cnode
	// propCo holds the coercion node of each declared top-level property.
	propCo map[string]*cnode
}

// schemaURL is the made-up location the document is registered under. It
// shows up in nothing user-facing: messages are rewritten to JSON pointers.
const schemaURL = "vmcp:///schema.json"

// CompileSchema compiles raw JSON Schema text. The error says what is wrong
// with the schema: invalid JSON, a keyword with an invalid value, or a
// reference that leaves the document.
func CompileSchema(raw json.RawMessage) (*Schema, error) {
	doc, err := DecodeJSON(raw)
	if err != nil {
		return nil, err
	}
	switch doc.(type) {
	case map[string]any, bool:
	default:
		return nil, fmt.Errorf("invalid schema: must be a JSON object or a boolean, not %s", TypeName(doc))
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noRemote{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("invalid schema: %v", err)
	}
	sch, err := c.Compile(schemaURL)
	if err != nil {
		return nil, schemaCompileError(err, doc)
	}
	s := &Schema{raw: slices.Clone(raw), sch: sch, top: sch}
	for i := 0; i < coerceMaxHops && s.top.Ref != nil && s.top.Properties == nil && s.top.Types == nil; i++ {
		s.top = s.top.Ref
	}
	b := newCoerceBuilder(doc)
	s.co = b.node(sch)
	if s.top.Properties != nil {
		s.propCo = make(map[string]*cnode, len(s.top.Properties))
		for name, ps := range s.top.Properties {
			s.propCo[name] = b.node(ps)
		}
	}
	b.finish()
	if !s.co.isLive() {
		s.co = nil
	}
	return s, nil
}

// noRemote refuses every document the compiler would load: schemas are
// self-contained (the draft meta-schemas are embedded in the library).
type noRemote struct{}

func (noRemote) Load(url string) (any, error) {
	return nil, errors.New("remote references are not supported")
}

// schemaCompileError rewrites the library's compile errors into short messages.
func schemaCompileError(err error, doc any) error {
	var sve *jsonschema.SchemaValidationError
	if errors.As(err, &sve) {
		var ve *jsonschema.ValidationError
		if errors.As(sve.Err, &ve) {
			return fmt.Errorf("invalid schema: %s", validationMessage(ve, doc, false))
		}
	}
	var le *jsonschema.LoadURLError
	if errors.As(err, &le) {
		return fmt.Errorf("invalid schema: cannot load %q: references outside the schema are not supported", strings.TrimPrefix(le.URL, "vmcp:///"))
	}
	var nf *jsonschema.JSONPointerNotFoundError
	if errors.As(err, &nf) {
		return fmt.Errorf("invalid schema: reference %q does not resolve to anything in the schema", strings.TrimPrefix(nf.URL, schemaURL))
	}
	msg := strings.ReplaceAll(err.Error(), schemaURL, "")
	return fmt.Errorf("invalid schema: %s", msg)
}

// Raw returns the schema text exactly as given.
func (s *Schema) Raw() json.RawMessage {
	if s == nil {
		return nil
	}
	return s.raw
}

// Validate checks a data-model value (as produced by DecodeJSON) against the
// schema. The error is short: up to three failures, each with its JSON
// pointer, e.g. "at /page: expected boolean, got string". Values are not
// quoted in the message (they may be secrets); see CheckProperty.
func (s *Schema) Validate(v any) error {
	if s == nil {
		return nil
	}
	return validateWith(s.sch, v, false)
}

func validateWith(sch *jsonschema.Schema, v any, withValue bool) error {
	if !isDataModel(v, 0) {
		// Values outside the data model ([]string, int, structs): take the
		// JSON round trip so the validator sees what the wire would carry.
		b, err := EncodeJSON(v)
		if err != nil {
			return fmt.Errorf("value cannot be encoded as JSON: %v", err)
		}
		if v, err = DecodeJSON(b); err != nil {
			return err
		}
	}
	err := sch.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		return errors.New(validationMessage(ve, v, withValue))
	}
	return err
}

// isDataModel reports whether v uses only the data-model types the validator
// understands.
func isDataModel(v any, depth int) bool {
	if depth > 10000 {
		return false
	}
	switch v := v.(type) {
	case nil, string, bool, int64, float64:
		return true
	case map[string]any:
		for _, e := range v {
			if !isDataModel(e, depth+1) {
				return false
			}
		}
		return true
	case []any:
		for _, e := range v {
			if !isDataModel(e, depth+1) {
				return false
			}
		}
		return true
	}
	return false
}

// maxValidationReports is how many failures one validation message lists.
const maxValidationReports = 3

// validationMessage renders the leaf causes of a validation error. Branches
// of a failed anyOf/oneOf that fail only because of their type are folded
// into one "expected A or B, got C"; if some branch got further, only the
// branches that got further are reported.
func validationMessage(ve *jsonschema.ValidationError, v any, withValue bool) string {
	type failure struct{ loc, msg string }
	var fails []failure
	add := func(loc []string, m string) {
		f := failure{loc: jsonPointer(loc), msg: m}
		if f.loc != "" {
			f.msg = "at " + f.loc + ": " + m
		}
		if !slices.Contains(fails, f) {
			fails = append(fails, f)
		}
	}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		switch e.ErrorKind.(type) {
		case *kind.AnyOf, *kind.OneOf:
			if len(e.Causes) == 0 {
				break
			}
			var want []string
			var rest []*jsonschema.ValidationError
			for _, c := range e.Causes {
				if w, ok := typeOnly(c, e.InstanceLocation); ok {
					for _, t := range w {
						if !slices.Contains(want, t) {
							want = append(want, t)
						}
					}
				} else {
					rest = append(rest, c)
				}
			}
			if len(rest) == 0 {
				add(e.InstanceLocation, typeMessage(want, "", v, e.InstanceLocation, withValue))
				return
			}
			for _, c := range rest {
				walk(c)
			}
			return
		}
		if len(e.Causes) == 0 {
			add(e.InstanceLocation, validationLeafMessage(e, v, withValue))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	// The validator visits properties in map order: sort for stable text.
	slices.SortFunc(fails, func(a, b failure) int {
		return cmp.Or(strings.Compare(a.loc, b.loc), strings.Compare(a.msg, b.msg))
	})
	msgs := make([]string, len(fails))
	for i, f := range fails {
		msgs[i] = f.msg
	}
	if len(msgs) > maxValidationReports {
		n := len(msgs) - maxValidationReports
		msgs = append(msgs[:maxValidationReports], fmt.Sprintf("and %d more", n))
	}
	return strings.Join(msgs, "; ")
}

// typeOnly reports whether the branch error e consists only of type
// mismatches at loc, and the types they wanted.
func typeOnly(e *jsonschema.ValidationError, loc []string) ([]string, bool) {
	if len(e.Causes) == 0 {
		k, ok := e.ErrorKind.(*kind.Type)
		if !ok || !slices.Equal(e.InstanceLocation, loc) {
			return nil, false
		}
		return k.Want, true
	}
	var want []string
	for _, c := range e.Causes {
		w, ok := typeOnly(c, loc)
		if !ok {
			return nil, false
		}
		want = append(want, w...)
	}
	return want, true
}

func typeMessage(want []string, got string, v any, loc []string, withValue bool) string {
	if val, ok := lookupPath(v, loc); ok {
		got = TypeName(val)
		if withValue {
			got += literalSuffix(val)
		}
	}
	// null reads best last: "expected integer or null".
	if i := slices.Index(want, "null"); i >= 0 && i < len(want)-1 {
		want = append(slices.Delete(slices.Clone(want), i, i+1), "null")
	}
	return fmt.Sprintf("expected %s, got %s", strings.Join(want, " or "), got)
}

func validationLeafMessage(e *jsonschema.ValidationError, v any, withValue bool) string {
	switch k := e.ErrorKind.(type) {
	case *kind.Type:
		return typeMessage(k.Want, k.Got, v, e.InstanceLocation, withValue)
	case *kind.Required:
		if len(k.Missing) == 1 {
			return fmt.Sprintf("missing property %q", k.Missing[0])
		}
		return "missing properties " + quotedList(slices.Sorted(slices.Values(k.Missing)))
	case *kind.AdditionalProperties:
		if len(k.Properties) == 1 {
			return fmt.Sprintf("property %q is not allowed", k.Properties[0])
		}
		return "properties " + quotedList(slices.Sorted(slices.Values(k.Properties))) + " are not allowed"
	case *kind.Enum:
		if len(k.Want) == 1 {
			return "must be " + jsonText(k.Want[0])
		}
		var want []string
		for i, w := range k.Want {
			if i == 10 {
				want = append(want, fmt.Sprintf("… (%d more)", len(k.Want)-i))
				break
			}
			want = append(want, jsonText(w))
		}
		return "must be one of " + strings.Join(want, ", ") + ", got " + jsonText(k.Got)
	case *kind.Const:
		return "must be " + jsonText(k.Want)
	case *kind.Minimum:
		return fmt.Sprintf("must be >= %s, got %s", ratText(k.Want), ratText(k.Got))
	case *kind.Maximum:
		return fmt.Sprintf("must be <= %s, got %s", ratText(k.Want), ratText(k.Got))
	case *kind.ExclusiveMinimum:
		return fmt.Sprintf("must be > %s, got %s", ratText(k.Want), ratText(k.Got))
	case *kind.ExclusiveMaximum:
		return fmt.Sprintf("must be < %s, got %s", ratText(k.Want), ratText(k.Got))
	case *kind.MinLength:
		return fmt.Sprintf("must be at least %d characters long, got %d", k.Want, k.Got)
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %d characters long, got %d", k.Want, k.Got)
	case *kind.MinItems:
		return fmt.Sprintf("must have at least %d items, got %d", k.Want, k.Got)
	case *kind.MaxItems:
		return fmt.Sprintf("must have at most %d items, got %d", k.Want, k.Got)
	case *kind.Pattern:
		return fmt.Sprintf("does not match pattern %q", k.Want)
	case *kind.FalseSchema:
		return "no value is allowed here"
	}
	// BasicOutput of a leaf carries the library's English message.
	if out := e.BasicOutput(); out != nil && out.Error != nil {
		return strings.ReplaceAll(out.Error.String(), schemaURL, "")
	}
	return "invalid value"
}

// jsonText renders a schema value (enum member, const) as JSON for messages.
func jsonText(v any) string {
	b, err := EncodeJSON(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// ratText renders a bound or a number from the validator.
func ratText(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// literalSuffix shows a short scalar (` "abc"`, ` 4.5`) for messages about
// literals; containers and long strings are left out.
func literalSuffix(v any) string {
	switch v := v.(type) {
	case string:
		if len(v) > 40 {
			return ""
		}
		return " " + strconv.Quote(v)
	case int64, float64, bool:
		b, err := EncodeJSON(v)
		if err != nil {
			return ""
		}
		return " " + string(b)
	}
	return ""
}

func quotedList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// jsonPointer renders a JSON pointer ("/a/0/b~1c").
func jsonPointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		b.WriteString(strings.ReplaceAll(t, "/", "~1"))
	}
	return b.String()
}

// lookupPath finds the value at an instance location.
func lookupPath(v any, loc []string) (any, bool) {
	for _, tok := range loc {
		switch c := v.(type) {
		case map[string]any:
			e, ok := c[tok]
			if !ok {
				return nil, false
			}
			v = e
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// Coerce converts v toward the schema's types where the conversion is
// lossless, following properties, patternProperties, additionalProperties,
// items/prefixItems, allOf, local $ref and anyOf/oneOf (the first branch
// whose type already matches, else the first the value converts to).
//
// Conversions by target type: integer ← "42", "-7", 3.0; number ← "4.5",
// "42"; boolean ← "true"/"false" (any case); string ← 42, 4.5 (as JSON
// writes them), true; array/object ← a string holding JSON of that kind.
// With a type list (["integer", "null"]) a value of any listed type is kept
// and otherwise the types are tried in order. An int64 already is a number
// and stays an int64.
//
// It never fails: values it cannot convert are returned as is, for Validate
// (or the backend) to reject. The input is never modified: when nothing
// changes, v itself is returned (no allocation); otherwise a copy in which
// unchanged subtrees are shared with v.
func (s *Schema) Coerce(v any) any {
	if s == nil || s.co == nil {
		return v
	}
	budget := coerceBudget
	out, _ := s.co.coerce(v, 0, &budget)
	return out
}

// Properties returns the declared top-level property names, sorted. A root
// that is only a $ref (as some generators emit) is followed.
func (s *Schema) Properties() []string {
	if s == nil {
		return nil
	}
	names := make([]string, 0, len(s.top.Properties))
	for n := range s.top.Properties {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Required returns the top-level required property names as declared.
func (s *Schema) Required() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.top.Required)
}

// Closed reports whether argument names outside Properties should be
// reported at load time: the schema declares `properties`, has no
// patternProperties, and additionalProperties is false or absent, with no
// composition (allOf, anyOf, oneOf, if, $ref siblings, dependentSchemas) that
// could declare more names.
//
// An absent additionalProperties counts as closed on purpose: JSON Schema
// allows unknown names then, but a tool almost never wants them, and
// treating them as unknown is what lets the loader say `unknown argument
// "limt"; did you mean "limit"?`. A tool that really takes free-form names
// says additionalProperties: true (or a schema), and is then open.
func (s *Schema) Closed() bool {
	if s == nil {
		return false
	}
	t := s.top
	if t.Properties == nil || len(t.PatternProperties) > 0 {
		return false
	}
	if t.Types != nil && !slices.Contains(t.Types.ToStrings(), "object") {
		return false
	}
	switch ap := t.AdditionalProperties.(type) {
	case nil:
	case bool:
		if ap {
			return false
		}
	default:
		return false
	}
	if u := t.UnevaluatedProperties; u != nil && (u.Bool == nil || *u.Bool) {
		return false
	}
	if len(t.AllOf) > 0 || len(t.AnyOf) > 0 || len(t.OneOf) > 0 || t.If != nil ||
		len(t.DependentSchemas) > 0 || len(t.Dependencies) > 0 ||
		t.Ref != nil || t.DynamicRef != nil || t.RecursiveRef != nil {
		return false
	}
	return true
}

// CheckProperty reports whether the literal v, after Coerce, satisfies the
// subschema of top-level property name. The error quotes short scalar
// values: `expected integer, got string "abc"`. It is nil when the property
// is not declared or its subschema accepts anything.
func (s *Schema) CheckProperty(name string, v any) error {
	if s == nil {
		return nil
	}
	ps, ok := s.top.Properties[name]
	if !ok || ps == nil {
		return nil
	}
	if n := s.propCo[name]; n.isLive() {
		budget := coerceBudget
		v, _ = n.coerce(v, 0, &budget)
	}
	return validateWith(ps, v, true)
}

// --- the coercion tree ---------------------------------------------------

// jtype is a JSON Schema type as a bit.
type jtype uint8

const (
	jtNull jtype = 1 << iota
	jtBoolean
	jtInteger
	jtNumber
	jtString
	jtArray
	jtObject
)

// jtypeOf maps a JSON Schema type name to its bit (0 if unknown).
func jtypeOf(name string) jtype {
	switch name {
	case "null":
		return jtNull
	case "boolean":
		return jtBoolean
	case "integer":
		return jtInteger
	case "number":
		return jtNumber
	case "string":
		return jtString
	case "array":
		return jtArray
	case "object":
		return jtObject
	}
	return 0
}

// jtypeOrder is used when a type list's written order is unknown.
const jtypeOrder = "integer number boolean string object array null"

const (
	// coerceMaxHops bounds chains of $ref/allOf/anyOf that do not descend into
	// the value, so self-referencing compositions cannot loop or explode.
	coerceMaxHops = 16
	// coerceBudget bounds the node visits of one Coerce call.
	coerceBudget = 1 << 20
)

// cnode is one schema's coercion behaviour, precomputed at compile time.
type cnode struct {
	types []jtype // declared types in written order (nil: any)
	tset  jtype   // union of types (0: any)

	all  []*cnode // $ref and allOf members, applied in order
	alts []*cnode // anyOf/oneOf branches

	props      map[string]*cnode // declared properties (value nil: no-op)
	liveProps  []propNode        // the props that can change something
	patterns   []patNode
	additional *cnode
	prefix     []*cnode // prefixItems (or draft-07 items array)
	items      *cnode   // items for the rest

	// eff/effOrder are the types the node accepts once its $ref/allOf are
	// taken into account; used to pick an anyOf/oneOf branch.
	eff      jtype
	effOrder []jtype
	effDone  bool
	effBusy  bool

	live bool // can change some value
}

type propNode struct {
	name string
	n    *cnode
}

type patNode struct {
	re jsonschema.Regexp
	n  *cnode
}

func (n *cnode) isLive() bool { return n != nil && n.live }

type coerceBuilder struct {
	doc   any
	memo  map[*jsonschema.Schema]*cnode
	nodes []*cnode
}

func newCoerceBuilder(doc any) *coerceBuilder {
	return &coerceBuilder{doc: doc, memo: map[*jsonschema.Schema]*cnode{}}
}

func (b *coerceBuilder) node(s *jsonschema.Schema) *cnode {
	if s == nil {
		return nil
	}
	if n, ok := b.memo[s]; ok {
		return n
	}
	n := &cnode{}
	b.memo[s] = n
	b.nodes = append(b.nodes, n)

	if s.Types != nil {
		n.types = b.typeOrder(s)
		for _, t := range n.types {
			n.tset |= t
		}
	}
	if s.Ref != nil {
		n.all = append(n.all, b.node(s.Ref))
	}
	for _, m := range s.AllOf {
		n.all = append(n.all, b.node(m))
	}
	for _, m := range s.AnyOf {
		n.alts = append(n.alts, b.node(m))
	}
	for _, m := range s.OneOf {
		n.alts = append(n.alts, b.node(m))
	}
	if s.Properties != nil {
		n.props = make(map[string]*cnode, len(s.Properties))
		for name, ps := range s.Properties {
			n.props[name] = b.node(ps)
		}
	}
	for re, ps := range s.PatternProperties {
		n.patterns = append(n.patterns, patNode{re: re, n: b.node(ps)})
	}
	sort.Slice(n.patterns, func(i, j int) bool { return n.patterns[i].re.String() < n.patterns[j].re.String() })
	if ap, ok := s.AdditionalProperties.(*jsonschema.Schema); ok {
		n.additional = b.node(ap)
	}
	for _, ps := range s.PrefixItems {
		n.prefix = append(n.prefix, b.node(ps))
	}
	if s.Items2020 != nil {
		n.items = b.node(s.Items2020)
	}
	switch it := s.Items.(type) {
	case *jsonschema.Schema:
		n.items = b.node(it)
	case []*jsonschema.Schema:
		for _, ps := range it {
			n.prefix = append(n.prefix, b.node(ps))
		}
		if ai, ok := s.AdditionalItems.(*jsonschema.Schema); ok {
			n.items = b.node(ai)
		}
	}
	return n
}

// typeOrder returns the schema's types in the order written, read from the
// document by the schema's location; canonical order if it cannot be found.
func (b *coerceBuilder) typeOrder(s *jsonschema.Schema) []jtype {
	names := s.Types.ToStrings()
	if len(names) > 1 {
		if sub, ok := b.at(s.Location); ok {
			if m, ok := sub.(map[string]any); ok {
				if list, ok := m["type"].([]any); ok {
					var order []jtype
					for _, e := range list {
						if name, ok := e.(string); ok {
							if t := jtypeOf(name); t != 0 && !slices.Contains(order, t) {
								order = append(order, t)
							}
						}
					}
					if len(order) == len(names) {
						return order
					}
				}
			}
		}
	}
	var set jtype
	for _, name := range names {
		set |= jtypeOf(name)
	}
	var order []jtype
	for name := range strings.FieldsSeq(jtypeOrder) {
		t := jtypeOf(name)
		if set&t != 0 {
			order = append(order, t)
		}
	}
	return order
}

// at resolves a compiled schema's location inside the document.
func (b *coerceBuilder) at(loc string) (any, bool) {
	base, frag, ok := strings.Cut(loc, "#")
	if !ok || base != schemaURL {
		return nil, false
	}
	v := b.doc
	if frag == "" {
		return v, true
	}
	if frag[0] != '/' {
		return nil, false
	}
	for _, tok := range strings.Split(frag[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		var ok bool
		if v, ok = lookupPath(v, []string{tok}); !ok {
			return nil, false
		}
	}
	return v, true
}

// finish computes liveness (a fixpoint, since references can be cyclic) and
// the effective types used to pick anyOf/oneOf branches.
func (b *coerceBuilder) finish() {
	for _, n := range b.nodes {
		// A declared type always has some conversion into it, except null.
		n.live = n.tset&^jtNull != 0
	}
	for changed := true; changed; {
		changed = false
		for _, n := range b.nodes {
			if n.live {
				continue
			}
			if anyLive(n.all) || anyLive(n.alts) || anyLive(n.prefix) ||
				n.items.isLive() || n.additional.isLive() {
				n.live, changed = true, true
				continue
			}
			for _, p := range n.patterns {
				if p.n.isLive() {
					n.live, changed = true, true
				}
			}
			for _, pn := range n.props {
				if pn.isLive() {
					n.live, changed = true, true
				}
			}
		}
	}
	for _, n := range b.nodes {
		n.effective()
		if !n.additional.isLive() {
			n.additional = nil
		}
		if !anyLive(n.prefix) {
			n.prefix = nil
		}
		if !n.items.isLive() {
			n.items = nil
		}
		if n.additional == nil && !slices.ContainsFunc(n.patterns, func(p patNode) bool { return p.n.isLive() }) {
			n.patterns = nil
		}
		for name, pn := range n.props {
			if pn.isLive() {
				n.liveProps = append(n.liveProps, propNode{name, pn})
			}
		}
		sort.Slice(n.liveProps, func(i, j int) bool { return n.liveProps[i].name < n.liveProps[j].name })
		if n.additional == nil && n.patterns == nil {
			// The declared names only matter to tell additional ones apart.
			n.props = nil
		}
	}
}

func anyLive(ns []*cnode) bool {
	return slices.ContainsFunc(ns, (*cnode).isLive)
}

// effective computes the types a node accepts including its $ref/allOf, or
// the union of its branches.
func (n *cnode) effective() (jtype, []jtype) {
	if n == nil {
		return 0, nil
	}
	if n.effDone || n.effBusy {
		return n.eff, n.effOrder
	}
	n.effBusy = true
	defer func() { n.effBusy, n.effDone = false, true }()
	n.eff, n.effOrder = n.tset, n.types
	for _, m := range n.all {
		set, order := m.effective()
		if set == 0 {
			continue
		}
		if n.eff == 0 {
			n.eff, n.effOrder = set, order
			continue
		}
		if n.eff&set != 0 {
			n.eff &= set
			n.effOrder = slices.DeleteFunc(slices.Clone(n.effOrder), func(t jtype) bool { return n.eff&t == 0 })
		}
	}
	if n.eff == 0 && len(n.alts) > 0 {
		var set jtype
		var order []jtype
		for _, a := range n.alts {
			s, o := a.effective()
			if s == 0 {
				set, order = 0, nil
				break
			}
			set |= s
			for _, t := range o {
				if !slices.Contains(order, t) {
					order = append(order, t)
				}
			}
		}
		n.eff, n.effOrder = set, order
	}
	return n.eff, n.effOrder
}

// coerce applies the node to v; changed reports whether out differs.
func (n *cnode) coerce(v any, hops int, budget *int) (out any, changed bool) {
	if n == nil || !n.live || hops > coerceMaxHops || *budget <= 0 {
		return v, false
	}
	*budget--
	if n.tset != 0 && !hasType(n.tset, v) {
		for _, t := range n.types {
			if c, ok := convertTo(t, v); ok {
				v, changed = c, true
				break
			}
		}
	}
	for _, m := range n.all {
		if c, ch := m.coerce(v, hops+1, budget); ch {
			v, changed = c, true
		}
	}
	if len(n.alts) > 0 {
		if br := n.pick(v); br != nil {
			if c, ch := br.coerce(v, hops+1, budget); ch {
				v, changed = c, true
			}
		}
	}
	switch x := v.(type) {
	case map[string]any:
		if n.liveProps != nil || n.patterns != nil || n.additional != nil {
			if c, ch := n.coerceObject(x, budget); ch {
				v, changed = c, true
			}
		}
	case []any:
		if n.prefix != nil || n.items != nil {
			if c, ch := n.coerceArray(x, budget); ch {
				v, changed = c, true
			}
		}
	}
	return v, changed
}

func (n *cnode) coerceObject(m map[string]any, budget *int) (map[string]any, bool) {
	var out map[string]any
	set := func(k string, nv any) {
		if out == nil {
			out = maps.Clone(m)
		}
		out[k] = nv
	}
	for _, p := range n.liveProps {
		if e, ok := m[p.name]; ok {
			if nv, ch := p.n.coerce(e, 0, budget); ch {
				set(p.name, nv)
			}
		}
	}
	if n.patterns != nil || n.additional != nil {
		for k, e := range m {
			if _, declared := n.props[k]; declared {
				continue
			}
			matched := false
			for _, p := range n.patterns {
				if p.re.MatchString(k) {
					matched = true
					if nv, ch := p.n.coerce(e, 0, budget); ch {
						set(k, nv)
						e = nv
					}
				}
			}
			if !matched && n.additional != nil {
				if nv, ch := n.additional.coerce(e, 0, budget); ch {
					set(k, nv)
				}
			}
		}
	}
	return out, out != nil
}

func (n *cnode) coerceArray(a []any, budget *int) ([]any, bool) {
	var out []any
	for i, e := range a {
		var en *cnode
		if i < len(n.prefix) {
			en = n.prefix[i]
		} else {
			en = n.items
		}
		if nv, ch := en.coerce(e, 0, budget); ch {
			if out == nil {
				out = slices.Clone(a)
			}
			out[i] = nv
		}
	}
	return out, out != nil
}

// pick chooses the anyOf/oneOf branch for v: the first whose type v already
// has, else the first whose type v converts to.
func (n *cnode) pick(v any) *cnode {
	for _, a := range n.alts {
		if a.eff == 0 || hasType(a.eff, v) {
			return a
		}
	}
	for _, a := range n.alts {
		for _, t := range a.effOrder {
			if _, ok := convertTo(t, v); ok {
				return a
			}
		}
	}
	return nil
}

// hasType reports whether v already has one of the types in set. An
// integral float64 does not match integer here: it is converted to int64.
func hasType(set jtype, v any) bool {
	var t jtype
	switch v.(type) {
	case nil:
		t = jtNull
	case bool:
		t = jtBoolean
	case int64:
		t = jtInteger | jtNumber
	case float64:
		t = jtNumber
	case string:
		t = jtString
	case []any:
		t = jtArray
	case map[string]any:
		t = jtObject
	default:
		return true // outside the data model: leave it alone
	}
	return set&t != 0
}

// convertTo converts v to type t if that is lossless.
func convertTo(t jtype, v any) (any, bool) {
	switch t {
	case jtInteger:
		switch x := v.(type) {
		case string:
			if i, err := strconv.ParseInt(x, 10, 64); err == nil {
				return i, true
			}
		case float64:
			if x == math.Trunc(x) && x >= -(1<<63) && x < 1<<63 {
				return int64(x), true
			}
		}
	case jtNumber:
		if x, ok := v.(string); ok && isJSONNumber(x) {
			if n, err := jsonNumberValue(x); err == nil {
				return n, true
			}
		}
	case jtBoolean:
		if x, ok := v.(string); ok {
			switch {
			case strings.EqualFold(x, "true"):
				return true, true
			case strings.EqualFold(x, "false"):
				return false, true
			}
		}
	case jtString:
		switch x := v.(type) {
		case int64:
			return strconv.FormatInt(x, 10), true
		case float64:
			if b, err := EncodeJSON(x); err == nil {
				return string(b), true
			}
		case bool:
			return strconv.FormatBool(x), true
		}
	case jtArray, jtObject:
		x, ok := v.(string)
		if !ok {
			break
		}
		x = strings.TrimSpace(x)
		if x == "" || (t == jtArray && x[0] != '[') || (t == jtObject && x[0] != '{') {
			break
		}
		if d, err := DecodeJSON([]byte(x)); err == nil {
			return d, true
		}
	}
	return nil, false
}
