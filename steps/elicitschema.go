package steps

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/vmcp-dev/vmcp/dsl"
)

// SchemaProblem is one way an elicitation schema leaves the MCP subset.
// Path leads from the schema root to the offending key (object keys as
// written, sequence indexes in decimal: ["required", "1"]) so the caller can
// map it to a position in the workflow file.
type SchemaProblem struct {
	Path []string
	Msg  string
}

// CheckElicitationSchema checks a schema (in the data model, as the workflow
// file gives it) against the subset of JSON Schema that MCP clients render
// for elicitation/create (MCP 2025-11-25, ElicitRequestFormParams
// requestedSchema):
//
//   - the root is {type: object, properties: {...}, required: [...]}, plus
//     $schema, title and description;
//   - each property is flat: a string (title, description, minLength,
//     maxLength, format email|uri|date|date-time, default), a number or
//     integer (title, description, minimum, maximum, default), a boolean
//     (title, description, default), or an enum: a string with enum (and the
//     legacy enumNames) or oneOf [{const, title}], or the multi-select form
//     {type: array, items: {type: string, enum} | {anyOf: [{const, title}]},
//     minItems, maxItems, default};
//   - required names existing properties.
//
// Keywords outside the subset are problems, since clients ignore them and
// the form would not enforce them. Problems come out in a stable order.
func CheckElicitationSchema(v any) []SchemaProblem {
	c := &elicitChecker{}
	c.root(v)
	return c.problems
}

type elicitChecker struct {
	problems []SchemaProblem
}

func (c *elicitChecker) add(path []string, format string, args ...any) {
	c.problems = append(c.problems, SchemaProblem{Path: slices.Clone(path), Msg: fmt.Sprintf(format, args...)})
}

const flatHint = "elicitation schemas must be flat (string, number, integer, boolean or enum properties)"

func (c *elicitChecker) root(v any) {
	m, ok := v.(map[string]any)
	if !ok {
		c.add(nil, "an elicitation schema must be an object with type: object and properties, not %s", describeKind(v))
		return
	}
	for _, k := range sortedKeys(m) {
		switch k {
		case "$schema", "title", "description":
			if _, ok := m[k].(string); !ok {
				c.add([]string{k}, "%q must be a string", k)
			}
		case "type", "properties", "required":
		default:
			c.add([]string{k}, "%q is not supported at the root of an elicitation schema (allowed: type, properties, required, title, description)", k)
		}
	}
	if t, ok := m["type"]; !ok {
		c.add(nil, "an elicitation schema needs type: object")
	} else if t != "object" {
		c.add([]string{"type"}, "an elicitation schema must have type: object, not %s", jsonText(t))
	}
	props, hasProps := m["properties"]
	pm, isMap := props.(map[string]any)
	switch {
	case !hasProps:
		c.add(nil, "an elicitation schema needs properties (use properties: {} to ask for no fields)")
	case !isMap:
		c.add([]string{"properties"}, "properties must be a mapping of property names to schemas, not %s", describeKind(props))
	default:
		for _, name := range sortedKeys(pm) {
			c.property(name, pm[name])
		}
	}
	if req, ok := m["required"]; ok {
		list, ok := req.([]any)
		if !ok {
			c.add([]string{"required"}, "required must be a list of property names, not %s", describeKind(req))
			return
		}
		var seen []string
		for i, e := range list {
			path := []string{"required", strconv.Itoa(i)}
			name, ok := e.(string)
			switch {
			case !ok:
				c.add(path, "required entries must be property names (strings), not %s", describeKind(e))
			case slices.Contains(seen, name):
				c.add(path, "%q is listed twice in required", name)
			case isMap && !hasKey(pm, name):
				c.add(path, "required lists %q, which is not a property%s", name, dsl.Suggest(name, sortedKeys(pm)))
			}
			if ok {
				seen = append(seen, name)
			}
		}
	}
}

// property checks one property schema.
func (c *elicitChecker) property(name string, v any) {
	base := []string{"properties", name}
	m, ok := v.(map[string]any)
	if !ok {
		c.add(base, "property %q must be a schema object (with a type), not %s", name, describeKind(v))
		return
	}
	t, hasType := m["type"]
	ts, _ := t.(string)
	tpath := append(slices.Clone(base), "type")
	switch {
	case !hasType:
		if _, ok := m["$ref"]; ok {
			c.add(append(slices.Clone(base), "$ref"), "property %q uses $ref; %s, written out in place", name, flatHint)
			return
		}
		if _, ok := m["enum"]; ok {
			c.add(base, "property %q needs type: string (enum values must be strings)", name)
			return
		}
		c.add(base, "property %q needs a type; %s", name, flatHint)
		return
	case ts == "object":
		c.add(tpath, "property %q is an object; %s", name, flatHint)
		return
	case ts == "array":
		c.multiSelect(name, base, m)
		return
	case ts == "string":
		c.stringProp(name, base, m)
		return
	case ts == "number" || ts == "integer":
		c.numberProp(name, base, m, ts == "integer")
		return
	case ts == "boolean":
		c.allowed(name, base, m, "boolean", "type", "title", "description", "default")
		c.text(base, m, "title", "description")
		if d, ok := m["default"]; ok {
			if _, ok := d.(bool); !ok {
				c.add(append(slices.Clone(base), "default"), "default of boolean property %q must be true or false, not %s", name, describeKind(d))
			}
		}
		return
	case ts == "null":
		c.add(tpath, "property %q has type null; %s", name, flatHint)
		return
	case ts != "":
		c.add(tpath, "property %q has unknown type %q; %s", name, ts, flatHint)
		return
	}
	if _, ok := t.([]any); ok {
		c.add(tpath, "property %q has a list of types; elicitation properties have exactly one type (string, number, integer or boolean)", name)
		return
	}
	c.add(tpath, "the type of property %q must be a string such as \"string\", not %s", name, describeKind(t))
}

// allowed reports keywords outside the given set.
func (c *elicitChecker) allowed(name string, base []string, m map[string]any, what string, keys ...string) {
	for _, k := range sortedKeys(m) {
		if !slices.Contains(keys, k) {
			c.add(append(slices.Clone(base), k), "%q is not supported for %s property %q in elicitation schemas (allowed: %s)", k, what, name, strings.Join(keys[1:], ", "))
		}
	}
}

// text checks that the given keys, when present, hold strings.
func (c *elicitChecker) text(base []string, m map[string]any, keys ...string) {
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if _, ok := v.(string); !ok {
				c.add(append(slices.Clone(base), k), "%q must be a string, not %s", k, describeKind(v))
			}
		}
	}
}

// count checks a non-negative integer keyword and returns it (-1 if absent
// or invalid).
func (c *elicitChecker) count(base []string, m map[string]any, key string) int64 {
	v, ok := m[key]
	if !ok {
		return -1
	}
	n, isInt := v.(int64)
	if f, ok := v.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		n, isInt = int64(f), true
	}
	if !isInt || n < 0 {
		c.add(append(slices.Clone(base), key), "%q must be a non-negative integer, not %s", key, jsonText(v))
		return -1
	}
	return n
}

func (c *elicitChecker) stringProp(name string, base []string, m map[string]any) {
	_, hasEnum := m["enum"]
	_, hasOneOf := m["oneOf"]
	switch {
	case hasEnum && hasOneOf:
		c.add(append(slices.Clone(base), "oneOf"), "property %q has both enum and oneOf; use one of them", name)
		return
	case hasEnum:
		c.allowed(name, base, m, "enum", "type", "title", "description", "enum", "enumNames", "default")
		c.text(base, m, "title", "description")
		values := c.enumValues(name, append(slices.Clone(base), "enum"), m["enum"])
		if en, ok := m["enumNames"]; ok {
			p := append(slices.Clone(base), "enumNames")
			names, ok := en.([]any)
			if !ok || slices.ContainsFunc(names, func(e any) bool { _, s := e.(string); return !s }) {
				c.add(p, "enumNames of property %q must be a list of strings", name)
			} else if values != nil && len(names) != len(values) {
				c.add(p, "enumNames of property %q has %d names for %d enum values", name, len(names), len(values))
			}
		}
		c.stringDefault(name, base, m, values)
	case hasOneOf:
		c.allowed(name, base, m, "enum", "type", "title", "description", "oneOf", "default")
		c.text(base, m, "title", "description")
		values := c.options(name, append(slices.Clone(base), "oneOf"), m["oneOf"])
		c.stringDefault(name, base, m, values)
	default:
		c.allowed(name, base, m, "string", "type", "title", "description", "minLength", "maxLength", "format", "default")
		c.text(base, m, "title", "description")
		lo, hi := c.count(base, m, "minLength"), c.count(base, m, "maxLength")
		if lo >= 0 && hi >= 0 && lo > hi {
			c.add(append(slices.Clone(base), "minLength"), "minLength %d of property %q is greater than its maxLength %d", lo, name, hi)
		}
		if f, ok := m["format"]; ok {
			if fs, _ := f.(string); !slices.Contains([]string{"email", "uri", "date", "date-time"}, fs) {
				c.add(append(slices.Clone(base), "format"), "format of property %q must be one of email, uri, date, date-time, not %s", name, jsonText(f))
			}
		}
		c.stringDefault(name, base, m, nil)
	}
}

// enumValues checks a list of string enum values and returns it (nil if
// invalid).
func (c *elicitChecker) enumValues(name string, path []string, v any) []string {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		c.add(path, "enum of property %q must be a non-empty list of strings", name)
		return nil
	}
	var values []string
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			c.add(append(slices.Clone(path), strconv.Itoa(i)), "enum values of property %q must be strings, not %s", name, describeKind(e))
			return nil
		}
		if slices.Contains(values, s) {
			c.add(append(slices.Clone(path), strconv.Itoa(i)), "enum value %q of property %q is listed twice", s, name)
		}
		values = append(values, s)
	}
	return values
}

// options checks a oneOf/anyOf list of {const, title} options and returns
// the values (nil if invalid).
func (c *elicitChecker) options(name string, path []string, v any) []string {
	kw := path[len(path)-1]
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		c.add(path, "%s of property %q must be a non-empty list of {const, title} options", kw, name)
		return nil
	}
	var values []string
	bad := false
	for i, e := range list {
		p := append(slices.Clone(path), strconv.Itoa(i))
		o, ok := e.(map[string]any)
		if !ok {
			c.add(p, "each %s option of property %q must be {const: <string>, title: <string>}, not %s", kw, name, describeKind(e))
			bad = true
			continue
		}
		for _, k := range sortedKeys(o) {
			if k != "const" && k != "title" {
				c.add(append(slices.Clone(p), k), "%q is not supported in %s options of property %q (allowed: const, title)", k, kw, name)
			}
		}
		s, ok := o["const"].(string)
		if !ok {
			c.add(p, "each %s option of property %q needs const: <string>", kw, name)
			bad = true
		} else if slices.Contains(values, s) {
			c.add(append(slices.Clone(p), "const"), "option %q of property %q is listed twice", s, name)
		}
		if _, ok := o["title"].(string); !ok {
			c.add(p, "each %s option of property %q needs title: <string>", kw, name)
		}
		values = append(values, s)
	}
	if bad {
		return nil
	}
	return values
}

func (c *elicitChecker) stringDefault(name string, base []string, m map[string]any, values []string) {
	d, ok := m["default"]
	if !ok {
		return
	}
	p := append(slices.Clone(base), "default")
	s, ok := d.(string)
	switch {
	case !ok:
		c.add(p, "default of string property %q must be a string, not %s", name, describeKind(d))
	case values != nil && !slices.Contains(values, s):
		c.add(p, "default %q of property %q is not one of its values (%s)", s, name, quotedList(values))
	}
}

func (c *elicitChecker) numberProp(name string, base []string, m map[string]any, integer bool) {
	what := "number"
	if integer {
		what = "integer"
	}
	c.allowed(name, base, m, what, "type", "title", "description", "minimum", "maximum", "default")
	c.text(base, m, "title", "description")
	num := func(key string) (float64, bool) {
		v, ok := m[key]
		if !ok {
			return 0, false
		}
		switch n := v.(type) {
		case int64:
			return float64(n), true
		case float64:
			if integer && key == "default" && n != math.Trunc(n) {
				break
			}
			return n, true
		}
		want := "a number"
		if integer && key == "default" {
			want = "an integer"
		}
		c.add(append(slices.Clone(base), key), "%s of property %q must be %s, not %s", key, name, want, jsonText(v))
		return 0, false
	}
	lo, hasLo := num("minimum")
	hi, hasHi := num("maximum")
	if hasLo && hasHi && lo > hi {
		c.add(append(slices.Clone(base), "minimum"), "minimum %s of property %q is greater than its maximum %s", jsonText(m["minimum"]), name, jsonText(m["maximum"]))
	}
	if d, ok := num("default"); ok {
		if (hasLo && d < lo) || (hasHi && d > hi) {
			c.add(append(slices.Clone(base), "default"), "default %s of property %q is outside its range", jsonText(m["default"]), name)
		}
	}
}

// multiSelect checks {type: array, items: {type: string, enum} | {anyOf}}.
func (c *elicitChecker) multiSelect(name string, base []string, m map[string]any) {
	items, ok := m["items"].(map[string]any)
	if !ok {
		c.add(append(slices.Clone(base), "type"), "property %q is an array; %s (the one array allowed is a multi-select: items: {type: string, enum: [...]})", name, flatHint)
		return
	}
	c.allowed(name, base, m, "multi-select", "type", "title", "description", "items", "minItems", "maxItems", "default")
	c.text(base, m, "title", "description")
	ip := append(slices.Clone(base), "items")
	var values []string
	if _, hasAnyOf := items["anyOf"]; hasAnyOf {
		for _, k := range sortedKeys(items) {
			if k != "anyOf" && k != "type" {
				c.add(append(slices.Clone(ip), k), "%q is not supported in the items of multi-select property %q (allowed: anyOf, or type and enum)", k, name)
			}
		}
		if t, ok := items["type"]; ok && t != "string" {
			c.add(append(slices.Clone(ip), "type"), "items of multi-select property %q must have type: string, not %s", name, jsonText(t))
		}
		values = c.options(name, append(slices.Clone(ip), "anyOf"), items["anyOf"])
	} else {
		t, ok := items["type"]
		switch {
		case !ok:
			c.add(ip, "items of property %q need type: string and enum; %s", name, flatHint)
			return
		case t == "object" || t == "array":
			c.add(append(slices.Clone(ip), "type"), "property %q is an array of %ss; %s (the one array allowed is a multi-select: items: {type: string, enum: [...]})", name, t, flatHint)
			return
		case t != "string":
			c.add(append(slices.Clone(ip), "type"), "items of multi-select property %q must have type: string, not %s", name, jsonText(t))
			return
		}
		if _, ok := items["enum"]; !ok {
			c.add(ip, "property %q is an array of free strings; only multi-select enums are allowed (add enum: [...] to items)", name)
			return
		}
		for _, k := range sortedKeys(items) {
			if k != "type" && k != "enum" {
				c.add(append(slices.Clone(ip), k), "%q is not supported in the items of multi-select property %q (allowed: type, enum)", k, name)
			}
		}
		values = c.enumValues(name, append(slices.Clone(ip), "enum"), items["enum"])
	}
	lo, hi := c.count(base, m, "minItems"), c.count(base, m, "maxItems")
	if lo >= 0 && hi >= 0 && lo > hi {
		c.add(append(slices.Clone(base), "minItems"), "minItems %d of property %q is greater than its maxItems %d", lo, name, hi)
	}
	if d, ok := m["default"]; ok {
		p := append(slices.Clone(base), "default")
		list, ok := d.([]any)
		if !ok {
			c.add(p, "default of multi-select property %q must be a list of strings, not %s", name, describeKind(d))
			return
		}
		for i, e := range list {
			s, ok := e.(string)
			if !ok || (values != nil && !slices.Contains(values, s)) {
				c.add(append(slices.Clone(p), strconv.Itoa(i)), "default %s of property %q is not one of its values (%s)", jsonText(e), name, quotedList(values))
			}
		}
	}
}

// describeKind names a value's JSON type with an article, for messages.
func describeKind(v any) string {
	switch t := TypeName(v); t {
	case "null":
		return "null"
	case "integer", "array", "object":
		return "an " + t
	default:
		return "a " + t
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func hasKey(m map[string]any, k string) bool {
	_, ok := m[k]
	return ok
}
