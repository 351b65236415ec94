package steps

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustCompile(t testing.TB, raw string) *Schema {
	t.Helper()
	s, err := CompileSchema(json.RawMessage(raw))
	if err != nil {
		t.Fatalf("CompileSchema(%s): %v", raw, err)
	}
	return s
}

func mustDecode(t testing.TB, text string) any {
	t.Helper()
	v, err := DecodeJSON([]byte(text))
	if err != nil {
		t.Fatalf("DecodeJSON(%s): %v", text, err)
	}
	return v
}

func TestCompileSchema(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		wantErr string // "" means success; otherwise the exact message
	}{
		{name: "empty object", raw: `{}`},
		{name: "true", raw: `true`},
		{name: "false", raw: `false`},
		{name: "tool schema without $schema", raw: `{"type": "object", "properties": {"q": {"type": "string"}}}`},
		{name: "draft-07", raw: `{"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/definitions/n"}}}`},
		{name: "2020-12 explicit", raw: `{"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}`},
		{name: "local $id ref", raw: `{"$id": "https://example.com/s.json", "$defs": {"n": {"$id": "n.json", "type": "integer"}}, "properties": {"a": {"$ref": "n.json"}}}`},
		{name: "invalid JSON", raw: `{"type": }`, wantErr: "invalid JSON: invalid character '}' looking for beginning of value"},
		{name: "trailing data", raw: `{"type": "object"} {}`, wantErr: "invalid JSON: unexpected data after the value at offset 19"},
		{name: "array root", raw: `[{"type": "object"}]`, wantErr: "invalid schema: must be a JSON object or a boolean, not array"},
		{name: "unknown type", raw: `{"type": "obj"}`, wantErr: `invalid schema: at /type: must be one of "array", "boolean", "integer", "null", "number", "object", "string", got "obj"`},
		{name: "nested bad keyword", raw: `{"properties": {"a": {"minimum": "x"}}}`, wantErr: "invalid schema: at /properties/a/minimum: expected number, got string"},
		{name: "required not a list", raw: `{"required": "a"}`, wantErr: "invalid schema: at /required: expected array, got string"},
		{name: "bad regex", raw: `{"pattern": "("}`, wantErr: "invalid schema: at /pattern: '(' is not valid regex: error parsing regexp: missing closing ): `(`"},
		{name: "remote ref", raw: `{"$ref": "https://example.com/x.json"}`, wantErr: `invalid schema: cannot load "https://example.com/x.json": references outside the schema are not supported`},
		{name: "relative ref", raw: `{"properties": {"a": {"$ref": "other.json#/x"}}}`, wantErr: `invalid schema: cannot load "other.json": references outside the schema are not supported`},
		{name: "file ref is not read", raw: `{"$ref": "file:///etc/hostname"}`, wantErr: `invalid schema: cannot load "file:///etc/hostname": references outside the schema are not supported`},
		{name: "unknown meta-schema", raw: `{"$schema": "https://example.com/meta"}`, wantErr: `invalid schema: cannot load "https://example.com/meta": references outside the schema are not supported`},
		{name: "dangling local ref", raw: `{"$ref": "#/$defs/missing"}`, wantErr: `invalid schema: reference "#/$defs/missing" does not resolve to anything in the schema`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := CompileSchema(json.RawMessage(tt.raw))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CompileSchema: %v", err)
				}
				if string(s.Raw()) != tt.raw {
					t.Errorf("Raw() = %s, want %s", s.Raw(), tt.raw)
				}
				return
			}
			if err == nil {
				t.Fatalf("CompileSchema(%s) succeeded, want error %q", tt.raw, tt.wantErr)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("CompileSchema(%s) error:\n got: %s\nwant: %s", tt.raw, err, tt.wantErr)
			}
		})
	}
}

func TestSchemaRawExact(t *testing.T) {
	raw := "{ \"type\" :\n  \"object\" }"
	if got := string(mustCompile(t, raw).Raw()); got != raw {
		t.Errorf("Raw() = %q, want %q", got, raw)
	}
}

func TestValidate(t *testing.T) {
	const confirm = `{"type": "object", "properties": {"page": {"type": "boolean"}, "note": {"type": "string", "maxLength": 5}}, "required": ["page"]}`
	const many = `{"type": "object", "additionalProperties": false, "required": ["x", "y"],
		"properties": {"page": {"type": "boolean"}, "n": {"type": "integer", "minimum": 3}, "e": {"enum": ["a", "b"]}}}`
	tests := []struct {
		name   string
		schema string
		value  string // JSON
		goVal  any    // used instead of value when set
		want   string // "" means valid
	}{
		{name: "valid", schema: confirm, value: `{"page": true, "note": "hi"}`},
		{name: "wrong type", schema: confirm, value: `{"page": "yes"}`, want: "at /page: expected boolean, got string"},
		{name: "missing required", schema: confirm, value: `{"note": "x"}`, want: `missing property "page"`},
		{name: "root type", schema: confirm, value: `"page"`, want: "expected object, got string"},
		{name: "root null", schema: confirm, value: `null`, want: "expected object, got null"},
		{name: "max length", schema: confirm, value: `{"page": true, "note": "too long"}`, want: "at /note: must be at most 5 characters long, got 8"},
		{name: "int64 is an integer", schema: `{"type": "integer"}`, value: `42`},
		{name: "int64 is a number", schema: `{"type": "number"}`, value: `42`},
		{name: "integral float is an integer", schema: `{"type": "integer"}`, value: `3.0`},
		{name: "fraction is not an integer", schema: `{"properties": {"n": {"type": "integer"}}}`, value: `{"n": 4.5}`, want: "at /n: expected integer, got number"},
		{name: "integer reported as integer", schema: `{"type": "string"}`, value: `7`, want: "expected string, got integer"},
		{name: "type list", schema: `{"properties": {"x": {"type": ["string", "null"]}}}`, value: `{"x": 5}`, want: "at /x: expected string or null, got integer"},
		{name: "anyOf types folded", schema: `{"properties": {"x": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}`, value: `{"x": 5}`, want: "at /x: expected string or null, got integer"},
		{name: "anyOf reports the branch that got further", schema: `{"anyOf": [{"type": "string"}, {"type": "object", "required": ["id"]}]}`, value: `{}`, want: `missing property "id"`},
		{name: "three failures and more", schema: many, value: `{"page": "yes", "n": 1, "e": "c", "z": 1.5}`,
			want: `missing properties "x", "y"; property "z" is not allowed; at /e: must be one of "a", "b", got "c"; and 2 more`},
		{name: "enum", schema: many, value: `{"x": 1, "y": 2, "e": "c"}`, want: `properties "x", "y" are not allowed; at /e: must be one of "a", "b", got "c"`},
		{name: "enum alone", schema: `{"properties": {"e": {"enum": ["a", "b"]}}}`, value: `{"e": "c"}`, want: `at /e: must be one of "a", "b", got "c"`},
		{name: "additional property", schema: `{"properties": {"a": {}}, "additionalProperties": false}`, value: `{"a": 1, "z": 1}`, want: `property "z" is not allowed`},
		{name: "additional properties sorted", schema: `{"properties": {"a": {}}, "additionalProperties": false}`, value: `{"z": 1, "y": 1, "x": 1, "w": 1}`, want: `properties "w", "x", "y", "z" are not allowed`},
		{name: "array location", schema: `{"type": "array", "items": {"type": "integer"}}`, value: `[1, "2", 3]`, want: "at /1: expected integer, got string"},
		{name: "escaped pointer", schema: `{"properties": {"a/b": {"type": "integer"}}}`, value: `{"a/b": "x"}`, want: "at /a~1b: expected integer, got string"},
		{name: "ref", schema: `{"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}`, value: `{"a": true}`, want: "at /a: expected integer, got boolean"},
		{name: "const", schema: `{"const": "x"}`, value: `"y"`, want: `must be "x"`},
		{name: "false schema", schema: `false`, value: `1`, want: "no value is allowed here"},
		{name: "draft-07 format asserted", schema: `{"$schema": "http://json-schema.org/draft-07/schema#", "format": "email"}`, value: `"nope"`, want: "'nope' is not valid email: missing @"},
		{name: "Go values outside the model", schema: `{"type": "array", "items": {"type": "string"}}`, goVal: []string{"a", "b"}},
		{name: "Go int outside the model", schema: `{"type": "string"}`, goVal: 5, want: "expected string, got integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustCompile(t, tt.schema)
			v := tt.goVal
			if v == nil {
				v = mustDecode(t, tt.value)
			}
			err := s.Validate(v)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Validate(%s):\n got: %q\nwant: %q", tt.value, got, tt.want)
			}
		})
	}
}

func TestCoerce(t *testing.T) {
	tests := []struct {
		name   string
		schema string
		in     any
		want   any
	}{
		// integer
		{name: "integer from string", schema: `{"type": "integer"}`, in: "42", want: int64(42)},
		{name: "integer from negative string", schema: `{"type": "integer"}`, in: "-7", want: int64(-7)},
		{name: "integer not from fraction string", schema: `{"type": "integer"}`, in: "4.5", want: "4.5"},
		{name: "integer not from word", schema: `{"type": "integer"}`, in: "abc", want: "abc"},
		{name: "integer not from empty", schema: `{"type": "integer"}`, in: "", want: ""},
		{name: "integer not from overflow", schema: `{"type": "integer"}`, in: "9223372036854775808", want: "9223372036854775808"},
		{name: "integer from integral float", schema: `{"type": "integer"}`, in: 3.0, want: int64(3)},
		{name: "integer not from fraction", schema: `{"type": "integer"}`, in: 3.5, want: 3.5},
		{name: "integer not from bool", schema: `{"type": "integer"}`, in: true, want: true},
		{name: "integer unchanged", schema: `{"type": "integer"}`, in: int64(5), want: int64(5)},
		// number
		{name: "number from fraction string", schema: `{"type": "number"}`, in: "4.5", want: 4.5},
		{name: "number from integer string", schema: `{"type": "number"}`, in: "42", want: int64(42)},
		{name: "number from exponent string", schema: `{"type": "number"}`, in: "1e3", want: 1000.0},
		{name: "number not from NaN", schema: `{"type": "number"}`, in: "NaN", want: "NaN"},
		{name: "number not from padded", schema: `{"type": "number"}`, in: " 1", want: " 1"},
		{name: "number keeps int64", schema: `{"type": "number"}`, in: int64(9007199254740993), want: int64(9007199254740993)},
		// boolean
		{name: "boolean from true", schema: `{"type": "boolean"}`, in: "true", want: true},
		{name: "boolean from FALSE", schema: `{"type": "boolean"}`, in: "FALSE", want: false},
		{name: "boolean not from yes", schema: `{"type": "boolean"}`, in: "yes", want: "yes"},
		{name: "boolean not from 1", schema: `{"type": "boolean"}`, in: int64(1), want: int64(1)},
		// string
		{name: "string from int64", schema: `{"type": "string"}`, in: int64(42), want: "42"},
		{name: "string from float", schema: `{"type": "string"}`, in: 4.5, want: "4.5"},
		{name: "string from integral float", schema: `{"type": "string"}`, in: 1e20, want: "100000000000000000000"},
		{name: "string from huge float", schema: `{"type": "string"}`, in: 1e21, want: "1e+21"},
		{name: "string from bool", schema: `{"type": "string"}`, in: false, want: "false"},
		{name: "string not from null", schema: `{"type": "string"}`, in: nil, want: nil},
		{name: "string not from object", schema: `{"type": "string"}`, in: map[string]any{}, want: map[string]any{}},
		// array / object from JSON text
		{name: "array from JSON", schema: `{"type": "array"}`, in: `["a", 1]`, want: []any{"a", int64(1)}},
		{name: "array from padded JSON", schema: `{"type": "array"}`, in: " [] ", want: []any{}},
		{name: "array not from CSV", schema: `{"type": "array"}`, in: "a,b", want: "a,b"},
		{name: "array not from object JSON", schema: `{"type": "array"}`, in: `{"a": 1}`, want: `{"a": 1}`},
		{name: "array not from broken JSON", schema: `{"type": "array"}`, in: `[1,`, want: `[1,`},
		{name: "object from JSON", schema: `{"type": "object"}`, in: `{"a": 1}`, want: map[string]any{"a": int64(1)}},
		{name: "object not from array JSON", schema: `{"type": "object"}`, in: `[1]`, want: `[1]`},
		{name: "array from JSON then items", schema: `{"type": "array", "items": {"type": "integer"}}`, in: `["1", 2]`, want: []any{int64(1), int64(2)}},
		// type lists
		{name: "nullable integer from string", schema: `{"type": ["integer", "null"]}`, in: "42", want: int64(42)},
		{name: "nullable integer keeps null", schema: `{"type": ["integer", "null"]}`, in: nil, want: nil},
		{name: "string or integer keeps string", schema: `{"type": ["string", "integer"]}`, in: "42", want: "42"},
		{name: "type list in written order: string first", schema: `{"type": ["string", "integer"]}`, in: 3.0, want: "3"},
		{name: "type list in written order: integer first", schema: `{"type": ["integer", "string"]}`, in: 3.0, want: int64(3)},
		{name: "type list order under odd key", schema: `{"properties": {"a b/ü~": {"type": ["boolean", "string"]}}}`, in: map[string]any{"a b/ü~": int64(1)}, want: map[string]any{"a b/ü~": "1"}},
		{name: "type list second type", schema: `{"type": ["integer", "boolean"]}`, in: "True", want: true},
		// structure
		{name: "properties", schema: `{"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}, "b": {"type": "boolean"}}}`,
			in: map[string]any{"n": "1", "s": int64(2), "b": "true", "x": "3"}, want: map[string]any{"n": int64(1), "s": "2", "b": true, "x": "3"}},
		{name: "nested properties", schema: `{"properties": {"a": {"properties": {"b": {"type": "integer"}}}}}`,
			in: map[string]any{"a": map[string]any{"b": "5"}}, want: map[string]any{"a": map[string]any{"b": int64(5)}}},
		{name: "additionalProperties schema", schema: `{"properties": {"s": {"type": "string"}}, "additionalProperties": {"type": "integer"}}`,
			in: map[string]any{"s": "7", "x": "8", "y": "z"}, want: map[string]any{"s": "7", "x": int64(8), "y": "z"}},
		{name: "patternProperties before additionalProperties", schema: `{"patternProperties": {"^f_": {"type": "boolean"}}, "additionalProperties": {"type": "integer"}}`,
			in: map[string]any{"f_on": "true", "n": "3", "f_x": "7"}, want: map[string]any{"f_on": true, "n": int64(3), "f_x": "7"}},
		{name: "items", schema: `{"items": {"type": "number"}}`, in: []any{"1.5", int64(2), "x"}, want: []any{1.5, int64(2), "x"}},
		{name: "prefixItems", schema: `{"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": {"type": "boolean"}}`,
			in: []any{int64(1), "2", "true", "false"}, want: []any{"1", int64(2), true, false}},
		{name: "draft-07 items array", schema: `{"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}], "additionalItems": {"type": "integer"}}`,
			in: []any{int64(1), "2"}, want: []any{"1", int64(2)}},
		{name: "draft-07 ref", schema: `{"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/definitions/n"}}}`,
			in: map[string]any{"a": "1"}, want: map[string]any{"a": int64(1)}},
		{name: "$ref and $defs", schema: `{"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}, "b": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}`,
			in: map[string]any{"a": "1", "b": []any{"2"}}, want: map[string]any{"a": int64(1), "b": []any{int64(2)}}},
		{name: "root is a $ref", schema: `{"$ref": "#/$defs/args", "$defs": {"args": {"type": "object", "properties": {"n": {"type": "integer"}}}}}`,
			in: map[string]any{"n": "4"}, want: map[string]any{"n": int64(4)}},
		{name: "recursive $ref", schema: `{"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}`,
			in:   map[string]any{"v": "1", "kids": []any{map[string]any{"v": "2", "kids": []any{map[string]any{"v": "3"}}}}},
			want: map[string]any{"v": int64(1), "kids": []any{map[string]any{"v": int64(2), "kids": []any{map[string]any{"v": int64(3)}}}}}},
		{name: "allOf", schema: `{"allOf": [{"properties": {"a": {"type": "integer"}}}, {"properties": {"b": {"type": "boolean"}}}]}`,
			in: map[string]any{"a": "1", "b": "false"}, want: map[string]any{"a": int64(1), "b": false}},
		{name: "anyOf nullable", schema: `{"anyOf": [{"type": "integer"}, {"type": "null"}]}`, in: "42", want: int64(42)},
		{name: "anyOf keeps null", schema: `{"anyOf": [{"type": "integer"}, {"type": "null"}]}`, in: nil, want: nil},
		{name: "anyOf prefers a branch the value already matches", schema: `{"anyOf": [{"type": "integer"}, {"type": "string"}]}`, in: "42", want: "42"},
		{name: "anyOf first convertible branch", schema: `{"anyOf": [{"type": "boolean"}, {"type": "integer"}, {"type": "number"}]}`, in: "4.5", want: 4.5},
		{name: "anyOf via $ref branches", schema: `{"$defs": {"i": {"type": "integer"}}, "anyOf": [{"$ref": "#/$defs/i"}, {"type": "null"}]}`, in: "5", want: int64(5)},
		{name: "oneOf object branch recursed", schema: `{"oneOf": [{"type": "string"}, {"type": "object", "properties": {"a": {"type": "integer"}}}]}`,
			in: map[string]any{"a": "1"}, want: map[string]any{"a": int64(1)}},
		{name: "oneOf object branch from JSON text", schema: `{"oneOf": [{"type": "integer"}, {"type": "object", "properties": {"a": {"type": "integer"}}}]}`,
			in: `{"a": "1"}`, want: map[string]any{"a": int64(1)}},
		{name: "anyOf nothing fits", schema: `{"anyOf": [{"type": "integer"}, {"type": "boolean"}]}`, in: "x", want: "x"},
		// no-ops
		{name: "empty schema", schema: `{}`, in: "42", want: "42"},
		{name: "true schema", schema: `true`, in: map[string]any{"a": "1"}, want: map[string]any{"a": "1"}},
		{name: "unknown property untouched", schema: `{"properties": {"a": {"type": "integer"}}}`, in: map[string]any{"b": "1"}, want: map[string]any{"b": "1"}},
		{name: "null schema type converts nothing", schema: `{"type": "null"}`, in: "null", want: "null"},
		{name: "self-referencing composition terminates", schema: `{"type": "integer", "allOf": [{"$ref": "#"}, {"$ref": "#"}], "anyOf": [{"$ref": "#"}]}`, in: "7", want: int64(7)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustCompile(t, tt.schema)
			before := deepCopy(tt.in)
			got := s.Coerce(tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Coerce(%#v) mismatch (-want +got):\n%s", tt.in, diff)
			}
			if diff := cmp.Diff(before, tt.in); diff != "" {
				t.Errorf("Coerce modified its input (-before +after):\n%s", diff)
			}
		})
	}
}

func TestCoerceSharesWhenUnchanged(t *testing.T) {
	s := mustCompile(t, `{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "object", "properties": {"c": {"type": "string"}}}, "d": {"type": "object", "properties": {"e": {"type": "string"}}}}}`)
	in := map[string]any{"a": int64(1), "b": map[string]any{"c": "x"}, "d": map[string]any{"e": "y"}}
	if got := s.Coerce(in).(map[string]any); reflect.ValueOf(got).UnsafePointer() != reflect.ValueOf(in).UnsafePointer() {
		t.Errorf("Coerce copied a value that needed no change")
	}
	in["a"] = "2"
	got := s.Coerce(in).(map[string]any)
	if reflect.ValueOf(got).UnsafePointer() == reflect.ValueOf(in).UnsafePointer() {
		t.Fatalf("Coerce changed the input map in place")
	}
	if reflect.ValueOf(got["b"]).UnsafePointer() != reflect.ValueOf(in["b"]).UnsafePointer() {
		t.Errorf("unchanged subtree was copied")
	}
	if in["a"] != "2" || got["a"] != int64(2) {
		t.Errorf("in[a] = %#v, got[a] = %#v", in["a"], got["a"])
	}
}

func TestCoerceNoAllocWhenUnchanged(t *testing.T) {
	s := mustCompile(t, benchSchema)
	in := map[string]any{"id": int64(7), "name": "x", "tags": []any{"a", "b"}}
	if n := testing.AllocsPerRun(100, func() { s.Coerce(in) }); n != 0 {
		t.Errorf("Coerce of a value needing no change allocated %v times per run", n)
	}
}

func TestNilSchema(t *testing.T) {
	var s *Schema
	if got := s.Coerce("42"); got != "42" {
		t.Errorf("Coerce = %#v", got)
	}
	if err := s.Validate(map[string]any{"a": 1.5}); err != nil {
		t.Errorf("Validate = %v", err)
	}
	if err := s.CheckProperty("a", "x"); err != nil {
		t.Errorf("CheckProperty = %v", err)
	}
	if s.Closed() || s.Properties() != nil || s.Required() != nil || s.Raw() != nil {
		t.Errorf("nil Schema introspection not empty")
	}
}

func TestIntrospection(t *testing.T) {
	tests := []struct {
		name     string
		schema   string
		props    []string
		required []string
		closed   bool
	}{
		{name: "plain tool", schema: `{"type": "object", "properties": {"limit": {"type": "integer"}, "b": {}, "a": {}}, "required": ["limit", "a"]}`,
			props: []string{"a", "b", "limit"}, required: []string{"limit", "a"}, closed: true},
		{name: "additionalProperties false", schema: `{"type": "object", "properties": {"a": {}}, "additionalProperties": false}`, props: []string{"a"}, required: []string{}, closed: true},
		{name: "no arguments", schema: `{"type": "object", "properties": {}}`, props: []string{}, required: []string{}, closed: true},
		{name: "no properties keyword", schema: `{"type": "object"}`, props: []string{}, required: []string{}},
		{name: "additionalProperties true", schema: `{"properties": {"a": {}}, "additionalProperties": true}`, props: []string{"a"}, required: []string{}},
		{name: "additionalProperties schema", schema: `{"properties": {"a": {}}, "additionalProperties": {"type": "string"}}`, props: []string{"a"}, required: []string{}},
		{name: "patternProperties", schema: `{"properties": {"a": {}}, "patternProperties": {"^x-": {}}}`, props: []string{"a"}, required: []string{}},
		{name: "composition", schema: `{"properties": {"a": {}}, "allOf": [{"properties": {"b": {}}}]}`, props: []string{"a"}, required: []string{}},
		{name: "anyOf", schema: `{"properties": {"a": {}}, "anyOf": [{"required": ["a"]}]}`, props: []string{"a"}, required: []string{}},
		{name: "unevaluatedProperties schema", schema: `{"properties": {"a": {}}, "unevaluatedProperties": {"type": "string"}}`, props: []string{"a"}, required: []string{}},
		{name: "unevaluatedProperties true", schema: `{"properties": {"a": {}}, "unevaluatedProperties": true}`, props: []string{"a"}, required: []string{}},
		{name: "unevaluatedProperties false", schema: `{"properties": {"a": {}}, "unevaluatedProperties": false}`, props: []string{"a"}, required: []string{}, closed: true},
		{name: "not an object", schema: `{"type": "string", "properties": {"a": {}}}`, props: []string{"a"}, required: []string{}},
		{name: "root $ref followed", schema: `{"$ref": "#/$defs/A", "$defs": {"A": {"type": "object", "properties": {"q": {}}, "required": ["q"]}}}`,
			props: []string{"q"}, required: []string{"q"}, closed: true},
		{name: "draft-07", schema: `{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {"a": {}}, "required": ["a"]}`,
			props: []string{"a"}, required: []string{"a"}, closed: true},
		{name: "true schema", schema: `true`, props: []string{}, required: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustCompile(t, tt.schema)
			if diff := cmp.Diff(tt.props, s.Properties()); diff != "" {
				t.Errorf("Properties() (-want +got):\n%s", diff)
			}
			req := s.Required()
			if req == nil {
				req = []string{}
			}
			if diff := cmp.Diff(tt.required, req); diff != "" {
				t.Errorf("Required() (-want +got):\n%s", diff)
			}
			if got := s.Closed(); got != tt.closed {
				t.Errorf("Closed() = %v, want %v", got, tt.closed)
			}
		})
	}
}

func TestCheckProperty(t *testing.T) {
	const schema = `{"type": "object", "$defs": {"level": {"enum": ["low", "high"]}},
		"properties": {
			"limit": {"type": "integer", "minimum": 1},
			"verbose": {"type": "boolean"},
			"name": {"type": "string"},
			"tags": {"type": "array", "items": {"type": "string"}},
			"level": {"$ref": "#/$defs/level"},
			"opt": {"type": ["integer", "null"]},
			"free": {}
		}}`
	s := mustCompile(t, schema)
	tests := []struct {
		prop  string
		value any
		want  string
	}{
		{"limit", int64(5), ""},
		{"limit", "42", ""},
		{"limit", 3.0, ""},
		{"limit", "abc", `expected integer, got string "abc"`},
		{"limit", 4.5, "expected integer, got number 4.5"},
		{"limit", "0", "must be >= 1, got 0"},
		{"limit", true, "expected integer, got boolean true"},
		{"verbose", "TRUE", ""},
		{"verbose", "yes", `expected boolean, got string "yes"`},
		{"name", int64(12), ""},
		{"name", []any{"a"}, "expected string, got array"},
		{"tags", []any{"a", int64(2)}, ""},
		{"tags", []any{"a", map[string]any{}}, "at /1: expected string, got object"},
		{"tags", "a", `expected array, got string "a"`},
		{"level", "mid", `must be one of "low", "high", got "mid"`},
		{"level", "low", ""},
		{"opt", nil, ""},
		{"opt", "x", `expected integer or null, got string "x"`},
		{"free", map[string]any{"anything": true}, ""},
		{"unknown", "whatever", ""},
		{"name", strings.Repeat("long ", 5), ""},
		{"limit", strings.Repeat("x", 50), "expected integer, got string"},
	}
	for _, tt := range tests {
		err := s.CheckProperty(tt.prop, tt.value)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("CheckProperty(%q, %#v) = %q, want %q", tt.prop, tt.value, got, tt.want)
		}
	}
}

func TestSchemaConcurrentUse(t *testing.T) {
	s := mustCompile(t, benchSchema)
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 200 {
				v := s.Coerce(map[string]any{"id": "7", "name": int64(1), "tags": `["a"]`})
				if err := s.Validate(v); err != nil {
					t.Errorf("Validate: %v", err)
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

const benchSchema = `{"type": "object", "properties": {
	"id": {"type": "integer"},
	"name": {"type": "string"},
	"tags": {"type": "array", "items": {"type": "string"}}
}, "required": ["id"]}`

func BenchmarkCoerce(b *testing.B) {
	s := mustCompile(b, benchSchema)
	b.Run("nochange", func(b *testing.B) {
		in := map[string]any{"id": int64(7), "name": "x", "tags": []any{"a", "b"}}
		b.ReportAllocs()
		for b.Loop() {
			s.Coerce(in)
		}
	})
	b.Run("one_string_to_int", func(b *testing.B) {
		in := map[string]any{"id": "42", "name": "x", "tags": []any{"a", "b"}}
		b.ReportAllocs()
		for b.Loop() {
			s.Coerce(in)
		}
	})
}

func BenchmarkValidate(b *testing.B) {
	s := mustCompile(b, benchSchema)
	in := map[string]any{"id": int64(7), "name": "x", "tags": []any{"a", "b"}}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Validate(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompileSchema(b *testing.B) {
	raw := json.RawMessage(benchSchema)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CompileSchema(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// deepCopy copies a data-model value so a test can check its input was not
// modified.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}
