package dsl

import (
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/vmcp-dev/vmcp/schemas"
)

// TestSchemasMatchGoTypes keeps the AST and the JSON Schemas in step: for
// every struct reachable from Workflow and Config, the yaml tags equal the
// schema's property names (both ways), unknown keys are rejected, and each
// field's wrapper type matches the property's JSON type.
func TestSchemasMatchGoTypes(t *testing.T) {
	s := &syncChecker{t: t, v: &verifier{l: newTestLoader(t)}, seen: map[string]bool{}}
	s.structType(reflect.TypeFor[Workflow](), schemas.WorkflowID+"#", "Workflow")
	s.structType(reflect.TypeFor[Config](), schemas.ConfigID+"#", "Config")
	if s.structs < 15 {
		t.Errorf("checked only %d structs; the walk is broken", s.structs)
	}
}

type syncChecker struct {
	t       *testing.T
	v       *verifier
	seen    map[string]bool
	structs int
}

// resolve follows $ref at loc and returns the schema object and its
// location.
func (s *syncChecker) resolve(loc string) (map[string]any, string) {
	sch := s.v.schemaAt(loc)
	sch, loc = s.v.deref(sch, loc)
	m, _ := sch.(map[string]any)
	return m, loc
}

// objectBranch finds the object schema at loc: itself, or the branch of an
// anyOf/oneOf that has properties (for OnError, Action, AuthStrategy).
func (s *syncChecker) objectBranch(loc string) (map[string]any, string, bool) {
	m, loc := s.resolve(loc)
	if m == nil {
		return nil, loc, false
	}
	if _, ok := m["properties"]; ok {
		return m, loc, false
	}
	for _, alt := range []string{"anyOf", "oneOf"} {
		list, _ := m[alt].([]any)
		for i := range list {
			bm, bloc := s.resolve(loc + "/" + alt + "/" + strconv.Itoa(i))
			if _, ok := bm["properties"]; ok {
				return bm, bloc, true
			}
		}
	}
	return m, loc, false
}

func (s *syncChecker) structType(typ reflect.Type, loc, path string) {
	t := s.t
	obj, oloc, viaAlternative := s.objectBranch(loc)
	key := typ.String() + "@" + oloc
	if s.seen[key] {
		return
	}
	s.seen[key] = true
	s.structs++
	if obj == nil {
		t.Errorf("%s: no schema at %s", path, loc)
		return
	}
	if ap, ok := obj["additionalProperties"].(bool); !ok || ap {
		t.Errorf("%s (%s): additionalProperties must be false so unknown keys are errors", path, oloc)
	}
	if viaAlternative {
		if !s.hasStringBranch(loc) {
			t.Errorf("%s: %s has an UnmarshalYAML for the bare form but the schema has no string alternative", path, typ)
		}
	}
	props, _ := obj["properties"].(map[string]any)
	var schemaKeys, goKeys []string
	for k := range props {
		schemaKeys = append(schemaKeys, k)
	}
	fields := map[string]reflect.StructField{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := yamlName(f)
		if !f.IsExported() || name == "-" {
			continue
		}
		goKeys = append(goKeys, name)
		fields[name] = f
	}
	sort.Strings(schemaKeys)
	sort.Strings(goKeys)
	for _, k := range goKeys {
		if !slices.Contains(schemaKeys, k) {
			t.Errorf("%s.%s: yaml key %q is not a property of the schema at %s", path, fields[k].Name, k, oloc)
		}
	}
	for _, k := range schemaKeys {
		if !slices.Contains(goKeys, k) {
			t.Errorf("%s: schema property %q (%s) has no field in %s", path, k, oloc, typ)
		}
	}
	for _, k := range goKeys {
		if slices.Contains(schemaKeys, k) {
			s.field(fields[k].Type, oloc+"/properties/"+k, path+"."+k)
		}
	}
}

func (s *syncChecker) hasStringBranch(loc string) bool {
	m, loc := s.resolve(loc)
	for _, alt := range []string{"anyOf", "oneOf"} {
		list, _ := m[alt].([]any)
		for i := range list {
			if bm, _ := s.resolve(loc + "/" + alt + "/" + strconv.Itoa(i)); bm["type"] == "string" {
				return true
			}
		}
	}
	return false
}

// jsonTypes returns the JSON types a schema allows (from type, enum or
// const).
func jsonTypes(m map[string]any) []string {
	switch t := m["type"].(type) {
	case string:
		return []string{t}
	case []any:
		var out []string
		for _, x := range t {
			out = append(out, x.(string))
		}
		return out
	}
	var vals []any
	if e, ok := m["enum"].([]any); ok {
		vals = e
	}
	if c, ok := m["const"]; ok {
		vals = append(vals, c)
	}
	var out []string
	for _, x := range vals {
		switch x.(type) {
		case string:
			out = append(out, "string")
		case float64:
			out = append(out, "number")
		case bool:
			out = append(out, "boolean")
		}
	}
	return out
}

func (s *syncChecker) field(ft reflect.Type, loc, path string) {
	t := s.t
	m, rloc := s.resolve(loc)
	if m == nil {
		t.Errorf("%s: no schema at %s", path, loc)
		return
	}
	want := func(typ string) {
		t.Helper()
		if !slices.Contains(jsonTypes(m), typ) {
			t.Errorf("%s (%s): Go type %s needs JSON type %s, schema allows %v", path, rloc, ft, typ, jsonTypes(m))
		}
	}
	switch ft {
	case reflect.TypeFor[String]():
		want("string")
		return
	case reflect.TypeFor[Int]():
		want("integer")
		return
	case reflect.TypeFor[Float]():
		want("number")
		return
	case reflect.TypeFor[Bool]():
		want("boolean")
		return
	case reflect.TypeFor[Duration]():
		if !strings.HasSuffix(rloc, "/$defs/duration") {
			t.Errorf("%s: a Duration must use the duration definition, schema is %s", path, rloc)
		}
		return
	case reflect.TypeFor[Value]():
		return // any JSON value
	}
	switch ft.Kind() {
	case reflect.Pointer:
		s.field(ft.Elem(), loc, path)
	case reflect.Slice:
		want("array")
		s.field(ft.Elem(), rloc+"/items", path+"[]")
	case reflect.Map:
		want("object")
		s.field(ft.Elem(), rloc+"/additionalProperties", path+"{}")
	case reflect.Struct:
		s.structType(ft, loc, path)
	default:
		t.Errorf("%s: unexpected Go type %s in the AST", path, ft)
	}
}
