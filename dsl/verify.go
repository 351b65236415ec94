package dsl

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// This file validates a document against its JSON Schema and turns each
// schema error into one diagnostic in plain English, at the YAML node it is
// about: unknown keys at the key, bad values at the value, missing keys at
// the mapping. Alternatives (anyOf/oneOf) are collapsed into one message.

// An entity is a part of a document with a name users recognise (a step, a
// backend); messages name the entity and a path relative to it.
type entity struct {
	pattern []string // path template; "#" matches an index
	noun    string   // "step"
	key     string   // the key holding its name ("id"), or "" for the root
}

func workflowEntities() []entity {
	return []entity{
		{nil, "workflow", ""},
		{[]string{"steps", "#"}, "step", "id"},
	}
}

func configEntities() []entity {
	return []entity{
		{nil, "config", ""},
		{[]string{"backends", "#"}, "backend", "name"},
		{[]string{"composite_tools", "#"}, "composite tool", "name"},
		{[]string{"composite_tools", "#", "steps", "#"}, "step", "id"},
	}
}

type verifier struct {
	l        *Loader
	src      *Source
	root     *yaml.Node
	entities []entity
	ds       *Diagnostics
	value    any             // the document in the JSON data model
	bad      map[string]bool // JSON pointers of values that could not be converted
}

func newVerifier(l *Loader, src *Source, root *yaml.Node, entities []entity, ds *Diagnostics) *verifier {
	return &verifier{l: l, src: src, root: root, entities: entities, ds: ds, bad: map[string]bool{}}
}

// validate converts the document and checks it against sch, reporting
// every problem.
func (v *verifier) validate(sch *jsonschema.Schema) {
	c := converter{v: v, active: map[*yaml.Node]bool{}}
	v.value = c.value(v.root, nil, 0)
	err := sch.Validate(v.value)
	if err == nil {
		return
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		v.ds.Add(v.src, v.src.NodePos(v.root), "internal error: %v", err)
		return
	}
	for _, lf := range v.leaves(ve) {
		if v.suppressed(lf.err.InstanceLocation) {
			continue
		}
		v.report(lf)
	}
}

// converter builds the JSON value of a document like NodeValue does, but
// reports every value it cannot convert (and carries on with null) instead
// of stopping at the first.
type converter struct {
	v      *verifier
	active map[*yaml.Node]bool
}

func (c *converter) value(n *yaml.Node, path []string, depth int) any {
	if n == nil || depth > maxNodeDepth {
		return nil // reported by checkNodes
	}
	switch n.Kind {
	case yaml.AliasNode:
		if n.Alias == nil || c.active[n.Alias] {
			return nil // reported by checkNodes
		}
		return c.value(n.Alias, path, depth+1)
	case yaml.MappingNode:
		c.active[n] = true
		defer delete(c.active, n)
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := resolve(n.Content[i])
			if k == nil || k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
				continue // reported by checkNodes
			}
			m[k.Value] = c.value(n.Content[i+1], append(slices.Clip(path), k.Value), depth+1)
		}
		return m
	case yaml.SequenceNode:
		c.active[n] = true
		defer delete(c.active, n)
		s := make([]any, 0, len(n.Content))
		for i, e := range n.Content {
			s = append(s, c.value(e, append(slices.Clip(path), strconv.Itoa(i)), depth+1))
		}
		return s
	case yaml.ScalarNode:
		x, err := scalarValue(n)
		if err != nil {
			msg := err.Error()
			if _, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(msg, "line ") {
				msg = rest
			}
			c.v.ds.Add(c.v.src, c.v.src.NodePos(n), "%s", msg)
			c.v.bad[pointer(path)] = true
			return nil
		}
		return x
	}
	return nil
}

func pointer(path []string) string {
	var b strings.Builder
	for _, t := range path {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1"))
	}
	return b.String()
}

// suppressed reports whether path is at or under a value that could not be
// converted (its schema errors would only repeat that).
func (v *verifier) suppressed(path []string) bool {
	if len(v.bad) == 0 {
		return false
	}
	for i := len(path); i >= 0; i-- {
		if v.bad[pointer(path[:i])] {
			return true
		}
	}
	return false
}

// leaf is one schema error to report. expect is set for a synthetic leaf
// standing for alternatives that all failed on the value's type; msg for an
// x-message replacing the alternatives' errors.
type leaf struct {
	err    *jsonschema.ValidationError
	expect string
	msg    string
}

func (v *verifier) leaves(e *jsonschema.ValidationError) []leaf {
	switch k := e.ErrorKind.(type) {
	case *kind.Schema, *kind.Group, *kind.Reference, *kind.AllOf:
		var out []leaf
		for _, c := range e.Causes {
			out = append(out, v.leaves(c)...)
		}
		return out
	case *kind.AnyOf:
		return v.alternatives(e)
	case *kind.OneOf:
		if k.Subschemas == nil {
			return v.alternatives(e)
		}
		return []leaf{{err: e, msg: v.xMessage(e.SchemaURL)}}
	default:
		return []leaf{{err: e}}
	}
}

// alternatives reports a failed anyOf/oneOf as one sensible message: the
// schema's x-message if it has one; otherwise the errors of the branch that
// got furthest, ignoring branches that failed only because the value has
// another type; or, when every branch failed on the type, "must be <the
// alternatives>".
func (v *verifier) alternatives(e *jsonschema.ValidationError) []leaf {
	if msg := v.xMessage(e.SchemaURL); msg != "" {
		return []leaf{{err: e, msg: msg}}
	}
	var best []leaf
	bestDepth := -1
	for _, c := range e.Causes {
		ls := v.leaves(c)
		if len(ls) == 0 || typeMismatchAt(ls, e.InstanceLocation) {
			continue
		}
		depth := 0
		for _, l := range ls {
			depth = max(depth, len(l.err.InstanceLocation))
		}
		if depth > bestDepth || (depth == bestDepth && len(ls) < len(best)) {
			best, bestDepth = ls, depth
		}
	}
	if best == nil {
		return []leaf{{err: e, expect: v.describe(e.SchemaURL, 0)}}
	}
	return best
}

// typeMismatchAt reports whether every leaf is a type error about the value
// at loc itself.
func typeMismatchAt(ls []leaf, loc []string) bool {
	for _, l := range ls {
		_, isType := l.err.ErrorKind.(*kind.Type)
		if !isType && l.expect == "" {
			return false
		}
		if !slices.Equal(l.err.InstanceLocation, loc) {
			return false
		}
	}
	return true
}

// report adds the diagnostic for one leaf. A diagnostic about a value
// spans the value (a key that should not be there: the key and its value),
// so that later stages can tell their findings inside it apart; one about
// a missing key is only at the mapping.
func (v *verifier) report(lf leaf) {
	e := lf.err
	path := e.InstanceLocation
	keyNode, valNode := v.locate(path)
	at := v.posOf(valNode)
	label := v.label(path)
	got := gotValue(v.valueAt(path))
	sch := v.schemaAt(e.SchemaURL)
	// bad reports the value at path.
	bad := func(format string, args ...any) { v.reject(nil, valNode, format, args...) }

	if lf.msg != "" {
		bad("%s: %s", v.context(path), lf.msg)
		return
	}
	if lf.expect != "" {
		bad("%s must be %s, got %s", label, lf.expect, got)
		return
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Type, *kind.Pattern, *kind.Format:
		if list, ok := v.valueAt(path).([]any); ok && boolKey(sch, "x-list-as-expression") {
			bad("%s must be a {{ }} expression that gives a list, e.g. %s", label, listExpression(list))
			return
		}
		if pem := stringKey(sch, "patternErrorMessage"); pem != "" {
			bad("%s: %s %s", label, got, pem)
			return
		}
		if p, ok := k.(*kind.Pattern); ok {
			bad("%s must match the pattern %s, got %s", label, p.Want, got)
			return
		}
		if f, ok := k.(*kind.Format); ok {
			bad("%s: %s is not a valid %s", label, got, f.Want)
			return
		}
		bad("%s must be %s, got %s", label, v.describe(e.SchemaURL, 0), got)
	case *kind.Enum, *kind.Const:
		hint := ""
		if s, ok := v.valueAt(path).(string); ok {
			hint = Suggest(s, enumStrings(sch))
		}
		bad("%s must be %s, got %s%s", label, v.describe(e.SchemaURL, 0), got, hint)
	case *kind.Minimum, *kind.Maximum, *kind.ExclusiveMinimum, *kind.ExclusiveMaximum, *kind.MultipleOf:
		bad("%s must be %s, got %s", label, v.describe(e.SchemaURL, 0), got)
	case *kind.MinLength:
		if k.Want == 1 {
			bad("%s must not be empty", label)
		} else {
			bad("%s must be at least %d characters long, got %d", label, k.Want, k.Got)
		}
	case *kind.MaxLength:
		bad("%s must be at most %d characters long, got %d", label, k.Want, k.Got)
	case *kind.MinItems:
		if k.Want == 1 {
			bad("%s must not be empty", label)
		} else {
			bad("%s must have at least %d items, got %d", label, k.Want, k.Got)
		}
	case *kind.MaxItems:
		// About the count, not the items: no span.
		if len(path) > 0 && path[len(path)-1] == "steps" {
			v.ds.Add(v.src, at, "too many steps: %d; a workflow may have at most %d steps (a vmcp limit: split it into several workflows)", k.Got, k.Want)
		} else {
			v.ds.Add(v.src, at, "%s has %d items; at most %d are allowed", label, k.Got, k.Want)
		}
	case *kind.UniqueItems:
		item := append(slices.Clip(path), strconv.Itoa(k.Duplicates[1]))
		_, dup := v.locate(item)
		if dup == nil {
			dup = valNode
		}
		v.reject(nil, dup, "%s lists %s twice", label, gotValue(v.valueAt(item)))
	case *kind.Required:
		for _, m := range k.Missing {
			v.ds.Add(v.src, at, "%s: missing required key %q", v.context(path), m)
		}
	case *kind.AdditionalProperties:
		allowed := v.allowedKeys(e.SchemaURL, v.valueAt(path))
		for _, p := range k.Properties {
			kn, vn := v.locate(append(slices.Clip(path), p))
			hint := Suggest(p, allowed)
			if hint == "" && len(allowed) > 0 {
				hint = " (allowed: " + strings.Join(allowed, ", ") + ")"
			}
			v.reject(kn, vn, "unknown key %q in %s%s", p, v.context(path), hint)
		}
	case *kind.DependentRequired:
		kn, vn := v.locate(append(slices.Clip(path), k.Prop))
		v.reject(kn, vn, "%s: %q can only be used together with %s", v.context(path), k.Prop, quoteList(k.Missing))
	case *kind.FalseSchema:
		if len(path) == 0 {
			bad("%s is not allowed", label)
			return
		}
		key := path[len(path)-1]
		tail := "is not allowed here"
		if owner, ok := strings.CutSuffix(e.SchemaURL, "/properties/"+url.PathEscape(escapeToken(key))); ok {
			if m := v.xMessage(owner); m != "" {
				tail = m
			}
		}
		v.reject(keyNode, valNode, "%s %s", label, tail)
	case *kind.OneOf:
		bad("%s matches more than one of its alternatives", label)
	default:
		p := message.NewPrinter(language.English)
		bad("%s: %s", label, e.ErrorKind.LocalizedString(p))
	}
}

// reject adds a diagnostic about the value val, or about the pair key:
// val when key is not nil; it spans them (see Diagnostic.End).
func (v *verifier) reject(key, val *yaml.Node, format string, args ...any) {
	from := key
	if from == nil {
		from = val
	}
	if from == nil {
		v.ds.Add(v.src, v.posOf(), format, args...)
		return
	}
	if val == nil {
		val = key
	}
	v.ds.addNode(v.src, from, val, format, args...)
}

// listExpression writes a YAML list of plain values as the {{ }}
// expression that gives it, for "for_each: [a, b]"; a generic example when
// the list does not make a short one.
func listExpression(list []any) string {
	const generic = `"{{ steps.fetch.output.items }}"`
	if len(list) == 0 {
		return generic
	}
	parts := make([]string, 0, len(list))
	for _, x := range list {
		switch t := x.(type) {
		case string:
			if strings.ContainsAny(t, "'\\\"\n{}") {
				return generic
			}
			parts = append(parts, "'"+t+"'")
		case bool, int64, float64:
			parts = append(parts, gotValue(t))
		default:
			return generic
		}
	}
	ex := `"{{ [` + strings.Join(parts, ", ") + `] }}"`
	if utf8.RuneCountInString(ex) > 72 {
		return generic
	}
	return ex
}

// posOf returns the position of the first non-nil node, or of the root.
func (v *verifier) posOf(nodes ...*yaml.Node) Pos {
	for _, n := range nodes {
		if n != nil {
			return v.src.NodePos(n)
		}
	}
	return v.src.NodePos(v.root)
}

func escapeToken(t string) string {
	return strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1")
}

// locate finds the key node (nil for list items and the root) and the value
// node at a JSON-pointer path. The value node is not alias-resolved, so it
// points where the alias is used.
func (v *verifier) locate(path []string) (key, val *yaml.Node) { return locatePath(v.root, path) }

func locatePath(root *yaml.Node, path []string) (key, val *yaml.Node) {
	val = root
	for _, tok := range path {
		n := resolve(val)
		if n == nil {
			return nil, nil
		}
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if k := resolve(n.Content[i]); k != nil && k.Kind == yaml.ScalarNode && k.Value == tok {
					key, val, found = n.Content[i], n.Content[i+1], true // the last duplicate wins
				}
			}
			if !found {
				return nil, nil
			}
		case yaml.SequenceNode:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n.Content) {
				return nil, nil
			}
			key, val = nil, n.Content[i]
		default:
			return nil, nil
		}
	}
	return key, val
}

// valueAt returns the JSON value at path (nil when absent).
func (v *verifier) valueAt(path []string) any {
	x := v.value
	for _, tok := range path {
		switch c := x.(type) {
		case map[string]any:
			x = c[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			x = c[i]
		default:
			return nil
		}
	}
	return x
}

// entityAt returns the longest prefix of path that is an entity.
func (v *verifier) entityAt(path []string) (entity, int) {
	best, bestLen := v.entities[0], 0
	for _, en := range v.entities {
		if len(en.pattern) > len(path) || len(en.pattern) < bestLen {
			continue
		}
		ok := true
		for i, p := range en.pattern {
			if p == "#" {
				if _, err := strconv.Atoi(path[i]); err != nil {
					ok = false
				}
			} else if p != path[i] {
				ok = false
			}
		}
		if ok {
			best, bestLen = en, len(en.pattern)
		}
	}
	return best, bestLen
}

// entityName names the entity at path: `step "fetch"`, or `step #2` when it
// has no usable name.
func (v *verifier) entityName(en entity, path []string) string {
	if en.key == "" {
		return en.noun
	}
	if m, ok := v.valueAt(path).(map[string]any); ok {
		if s, ok := m[en.key].(string); ok && s != "" {
			return fmt.Sprintf("%s %s", en.noun, quoteValue(s))
		}
	}
	i, _ := strconv.Atoi(path[len(path)-1])
	return fmt.Sprintf("%s #%d", en.noun, i+1)
}

// relPath renders path[from:] as YAML users write it: a.b[2].c.
func (v *verifier) relPath(path []string, from int) string {
	var b strings.Builder
	_, node := v.locate(path[:from])
	for _, tok := range path[from:] {
		n := resolve(node)
		if n != nil && n.Kind == yaml.SequenceNode {
			b.WriteString("[" + tok + "]")
		} else {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(tok)
		}
		_, node = locatePath(n, []string{tok})
	}
	return b.String()
}

// label names the value at path for "… must be …" messages, the way
// context names a mapping: the entity itself (`step "fetch"`), or the quoted
// path relative to it and the entity (`"retry.delay" of step "fetch"`; at
// the top of a file just `"timeout"`).
func (v *verifier) label(path []string) string { return v.context(path) }

// context names the mapping at path for "unknown key … in X" and "X:
// missing required key …": `step "fetch"`, `"retry" of step "fetch"`,
// `"aggregation"`.
func (v *verifier) context(path []string) string {
	en, n := v.entityAt(path)
	name := v.entityName(en, path[:n])
	if n == len(path) {
		return name
	}
	if en.key != "" && n == len(path)-1 && path[n] == en.key {
		// The value that names the entity is the one in question:
		// `"id" of step #2`, not `"id" of step "bad id"`.
		i, _ := strconv.Atoi(path[n-1])
		name = fmt.Sprintf("%s #%d", en.noun, i+1)
	}
	rel := strconv.Quote(v.relPath(path, n))
	if en.key == "" {
		return rel
	}
	return rel + " of " + name
}

// schemaAt returns the raw schema at an absolute schema URL.
func (v *verifier) schemaAt(loc string) any {
	base, frag, _ := strings.Cut(loc, "#")
	x, ok := v.l.raw[base]
	if !ok {
		return nil
	}
	if frag == "" {
		return x
	}
	for _, tok := range strings.Split(strings.TrimPrefix(frag, "/"), "/") {
		if t, err := url.PathUnescape(tok); err == nil {
			tok = t
		}
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := x.(type) {
		case map[string]any:
			x = c[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			x = c[i]
		default:
			return nil
		}
	}
	return x
}

// deref follows a schema's $ref (relative to the schema documents).
func (v *verifier) deref(s any, from string) (any, string) {
	for range 8 {
		m, ok := s.(map[string]any)
		if !ok {
			return s, from
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return s, from
		}
		base, _, _ := strings.Cut(from, "#")
		u, err := url.Parse(base)
		if err != nil {
			return s, from
		}
		r, err := u.Parse(ref)
		if err != nil {
			return s, from
		}
		from = r.String()
		if !strings.Contains(from, "#") {
			from += "#"
		}
		s = v.schemaAt(from)
	}
	return s, from
}

func (v *verifier) xMessage(loc string) string { return stringKey(v.schemaAt(loc), "x-message") }

func stringKey(s any, key string) string {
	if m, ok := s.(map[string]any); ok {
		if x, ok := m[key].(string); ok {
			return x
		}
	}
	return ""
}

// allowedKeys lists the keys the mapping schema at loc allows for the
// value inst, in the schema's order: its properties, less those that a
// conditional branch applying to inst forbids (a tool step's list leaves
// out the elicitation keys).
func (v *verifier) allowedKeys(loc string, inst any) []string {
	keys := v.l.order[loc]
	if keys == nil {
		m, _ := v.schemaAt(loc).(map[string]any)
		props, _ := m["properties"].(map[string]any)
		for k := range props {
			keys = append(keys, k)
		}
		sort.Strings(keys)
	}
	forbidden := map[string]bool{}
	var visit func(s *jsonschema.Schema, depth int)
	visit = func(s *jsonschema.Schema, depth int) {
		if s == nil || depth > 8 {
			return
		}
		for _, sub := range s.AllOf {
			visit(sub, depth+1)
		}
		if s.If == nil {
			return
		}
		branch := s.Else
		if s.If.Validate(inst) == nil {
			branch = s.Then
		}
		if branch == nil {
			return
		}
		for k, p := range branch.Properties {
			if p != nil && p.Bool != nil && !*p.Bool {
				forbidden[k] = true
			}
		}
		visit(branch, depth+1)
	}
	visit(v.l.compiled[loc], 0)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if !forbidden[k] {
			out = append(out, k)
		}
	}
	return out
}

func boolKey(s any, key string) bool {
	m, _ := s.(map[string]any)
	b, _ := m[key].(bool)
	return b
}

func enumStrings(s any) []string {
	m, _ := s.(map[string]any)
	var out []string
	if list, ok := m["enum"].([]any); ok {
		for _, x := range list {
			if str, ok := x.(string); ok {
				out = append(out, str)
			}
		}
	}
	if c, ok := m["const"].(string); ok {
		out = append(out, c)
	}
	return out
}

// describe words what the schema at loc accepts: "an integer ≥ 1", "one of
// tool, elicitation", "a string or a mapping".
func (v *verifier) describe(loc string, depth int) string {
	s := v.schemaAt(loc)
	if depth > 8 {
		return "a valid value"
	}
	m, ok := s.(map[string]any)
	if !ok {
		if b, ok := s.(bool); ok && !b {
			return "absent"
		}
		return "a valid value"
	}
	if x := stringKey(m, "x-expect"); x != "" {
		return x
	}
	if enum, ok := m["enum"].([]any); ok {
		if len(enum) == 1 {
			return display(enum[0])
		}
		parts := make([]string, len(enum))
		for i, e := range enum {
			parts[i] = display(e)
		}
		return "one of " + strings.Join(parts, ", ")
	}
	if c, ok := m["const"]; ok {
		return display(c)
	}
	if _, ok := m["$ref"].(string); ok && m["type"] == nil {
		if _, to := v.deref(m, loc); to != loc {
			return v.describe(to, depth+1)
		}
	}
	for _, alt := range []string{"anyOf", "oneOf"} {
		if list, ok := m[alt].([]any); ok && m["type"] == nil {
			var parts []string
			for i := range list {
				d := v.describe(loc+"/"+alt+"/"+strconv.Itoa(i), depth+1)
				if !slices.Contains(parts, d) {
					parts = append(parts, d)
				}
			}
			return joinOr(parts)
		}
	}
	var types []string
	switch t := m["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			if s, ok := x.(string); ok {
				types = append(types, s)
			}
		}
	}
	var parts []string
	for _, t := range types {
		switch t {
		case "integer", "number":
			noun := "an integer"
			if t == "number" {
				noun = "a number"
			}
			parts = append(parts, noun+numRange(m))
		case "string":
			if n, ok := m["minLength"].(float64); ok && n >= 1 {
				parts = append(parts, "a non-empty string")
			} else {
				parts = append(parts, "a string")
			}
		case "boolean":
			parts = append(parts, "true or false")
		case "array":
			if items, ok := m["items"].(map[string]any); ok && items["type"] == "string" {
				parts = append(parts, "a list of strings")
			} else {
				parts = append(parts, "a list")
			}
		case "object":
			parts = append(parts, "a mapping")
		case "null":
			parts = append(parts, "empty")
		}
	}
	if len(parts) == 0 {
		return "a valid value"
	}
	return joinOr(parts)
}

func numRange(m map[string]any) string {
	lo, hasLo := m["minimum"].(float64)
	hi, hasHi := m["maximum"].(float64)
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	switch {
	case hasLo && hasHi:
		return " from " + f(lo) + " to " + f(hi)
	case hasLo:
		return " ≥ " + f(lo)
	case hasHi:
		return " ≤ " + f(hi)
	}
	if x, ok := m["exclusiveMinimum"].(float64); ok {
		return " > " + f(x)
	}
	return ""
}

func joinOr(parts []string) string {
	switch len(parts) {
	case 0:
		return ""
	case 1:
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " or " + parts[len(parts)-1]
}

// display renders an enum/const value in a message: strings bare.
func display(x any) string {
	if s, ok := x.(string); ok {
		return s
	}
	return gotValue(x)
}

// gotValue renders the value found, for "…, got X".
func gotValue(x any) string {
	switch t := x.(type) {
	case nil:
		return "an empty value"
	case string:
		return quoteValue(t)
	case bool:
		return strconv.FormatBool(t)
	case int64:
		return strconv.FormatInt(t, 10)
	case float64:
		return strconv.FormatFloat(t, 'g', -1, 64)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprint(x)
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return joinOr(q)
}
