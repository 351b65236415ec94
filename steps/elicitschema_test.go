package steps

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestCheckElicitationSchema(t *testing.T) {
	p := func(msg string, path ...string) SchemaProblem { return SchemaProblem{Path: path, Msg: msg} }
	tests := []struct {
		name   string
		schema string // JSON (the YAML loader produces the same data model)
		want   []SchemaProblem
	}{
		// Valid forms.
		{name: "spec example", schema: `{"type": "object", "properties": {"page": {"type": "boolean", "default": true}, "note": {"type": "string"}}, "required": ["page"]}`},
		{name: "no fields", schema: `{"type": "object", "properties": {}}`},
		{name: "root extras", schema: `{"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "T", "description": "D", "type": "object", "properties": {}}`},
		{name: "every primitive", schema: `{"type": "object", "properties": {
			"email": {"type": "string", "title": "E", "description": "d", "format": "email", "minLength": 3, "maxLength": 80, "default": "a@b.c"},
			"when": {"type": "string", "format": "date-time"},
			"count": {"type": "integer", "title": "N", "minimum": 1, "maximum": 10, "default": 3},
			"ratio": {"type": "number", "minimum": 0, "maximum": 1.5, "default": 0.5},
			"ok": {"type": "boolean", "description": "d", "default": false}}}`},
		{name: "every enum form", schema: `{"type": "object", "properties": {
			"plain": {"type": "string", "enum": ["a", "b"], "default": "a"},
			"legacy": {"type": "string", "enum": ["a", "b"], "enumNames": ["A", "B"]},
			"titled": {"type": "string", "title": "T", "oneOf": [{"const": "a", "title": "A"}, {"const": "b", "title": "B"}], "default": "b"},
			"multi": {"type": "array", "title": "M", "minItems": 1, "maxItems": 2, "items": {"type": "string", "enum": ["x", "y"]}, "default": ["x"]},
			"multiTitled": {"type": "array", "items": {"anyOf": [{"const": "x", "title": "X"}, {"const": "y", "title": "Y"}]}}}}`},

		// Root problems.
		{name: "root not a mapping", schema: `["a"]`,
			want: []SchemaProblem{p("an elicitation schema must be an object with type: object and properties, not an array")}},
		{name: "root type", schema: `{"type": "array", "properties": {}}`,
			want: []SchemaProblem{p(`an elicitation schema must have type: object, not "array"`, "type")}},
		{name: "root without type and properties", schema: `{}`,
			want: []SchemaProblem{p("an elicitation schema needs type: object"), p("an elicitation schema needs properties (use properties: {} to ask for no fields)")}},
		{name: "properties not a mapping", schema: `{"type": "object", "properties": ["a"]}`,
			want: []SchemaProblem{p("properties must be a mapping of property names to schemas, not an array", "properties")}},
		{name: "root keyword outside the subset", schema: `{"type": "object", "properties": {}, "additionalProperties": false}`,
			want: []SchemaProblem{p(`"additionalProperties" is not supported at the root of an elicitation schema (allowed: type, properties, required, title, description)`, "additionalProperties")}},
		{name: "root title not a string", schema: `{"type": "object", "properties": {}, "title": 3}`,
			want: []SchemaProblem{p(`"title" must be a string`, "title")}},

		// required.
		{name: "required unknown with suggestion", schema: `{"type": "object", "properties": {"page": {"type": "boolean"}}, "required": ["page", "pgae"]}`,
			want: []SchemaProblem{p(`required lists "pgae", which is not a property; did you mean "page"?`, "required", "1")}},
		{name: "required unknown", schema: `{"type": "object", "properties": {"page": {"type": "boolean"}}, "required": ["owner"]}`,
			want: []SchemaProblem{p(`required lists "owner", which is not a property`, "required", "0")}},
		{name: "required twice", schema: `{"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a", "a"]}`,
			want: []SchemaProblem{p(`"a" is listed twice in required`, "required", "1")}},
		{name: "required not a list", schema: `{"type": "object", "properties": {"a": {"type": "boolean"}}, "required": "a"}`,
			want: []SchemaProblem{p("required must be a list of property names, not a string", "required")}},
		{name: "required entry not a string", schema: `{"type": "object", "properties": {}, "required": [1]}`,
			want: []SchemaProblem{p("required entries must be property names (strings), not an integer", "required", "0")}},

		// Nesting.
		{name: "nested object", schema: `{"type": "object", "properties": {"owner": {"type": "object", "properties": {"name": {"type": "string"}}}}}`,
			want: []SchemaProblem{p(`property "owner" is an object; elicitation schemas must be flat (string, number, integer, boolean or enum properties)`, "properties", "owner", "type")}},
		{name: "array of objects", schema: `{"type": "object", "properties": {"people": {"type": "array", "items": {"type": "object"}}}}`,
			want: []SchemaProblem{p(`property "people" is an array of objects; elicitation schemas must be flat (string, number, integer, boolean or enum properties) (the one array allowed is a multi-select: items: {type: string, enum: [...]})`, "properties", "people", "items", "type")}},
		{name: "array without items", schema: `{"type": "object", "properties": {"tags": {"type": "array"}}}`,
			want: []SchemaProblem{p(`property "tags" is an array; elicitation schemas must be flat (string, number, integer, boolean or enum properties) (the one array allowed is a multi-select: items: {type: string, enum: [...]})`, "properties", "tags", "type")}},
		{name: "array of free strings", schema: `{"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}`,
			want: []SchemaProblem{p(`property "tags" is an array of free strings; only multi-select enums are allowed (add enum: [...] to items)`, "properties", "tags", "items")}},
		{name: "array of integers", schema: `{"type": "object", "properties": {"ns": {"type": "array", "items": {"type": "integer", "enum": [1]}}}}`,
			want: []SchemaProblem{p(`items of multi-select property "ns" must have type: string, not "integer"`, "properties", "ns", "items", "type")}},
		{name: "ref", schema: `{"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}}`,
			want: []SchemaProblem{p(`property "a" uses $ref; elicitation schemas must be flat (string, number, integer, boolean or enum properties), written out in place`, "properties", "a", "$ref")}},

		// Property types.
		{name: "no type", schema: `{"type": "object", "properties": {"a": {"title": "A"}}}`,
			want: []SchemaProblem{p(`property "a" needs a type; elicitation schemas must be flat (string, number, integer, boolean or enum properties)`, "properties", "a")}},
		{name: "enum without type", schema: `{"type": "object", "properties": {"a": {"enum": ["x"]}}}`,
			want: []SchemaProblem{p(`property "a" needs type: string (enum values must be strings)`, "properties", "a")}},
		{name: "type list", schema: `{"type": "object", "properties": {"a": {"type": ["string", "null"]}}}`,
			want: []SchemaProblem{p(`property "a" has a list of types; elicitation properties have exactly one type (string, number, integer or boolean)`, "properties", "a", "type")}},
		{name: "null type", schema: `{"type": "object", "properties": {"a": {"type": "null"}}}`,
			want: []SchemaProblem{p(`property "a" has type null; elicitation schemas must be flat (string, number, integer, boolean or enum properties)`, "properties", "a", "type")}},
		{name: "unknown type", schema: `{"type": "object", "properties": {"a": {"type": "str"}}}`,
			want: []SchemaProblem{p(`property "a" has unknown type "str"; elicitation schemas must be flat (string, number, integer, boolean or enum properties)`, "properties", "a", "type")}},
		{name: "property not a mapping", schema: `{"type": "object", "properties": {"a": "string"}}`,
			want: []SchemaProblem{p(`property "a" must be a schema object (with a type), not a string`, "properties", "a")}},

		// Keywords.
		{name: "pattern", schema: `{"type": "object", "properties": {"note": {"type": "string", "pattern": "^x"}}}`,
			want: []SchemaProblem{p(`"pattern" is not supported for string property "note" in elicitation schemas (allowed: title, description, minLength, maxLength, format, default)`, "properties", "note", "pattern")}},
		{name: "format", schema: `{"type": "object", "properties": {"p": {"type": "string", "format": "phone"}}}`,
			want: []SchemaProblem{p(`format of property "p" must be one of email, uri, date, date-time, not "phone"`, "properties", "p", "format")}},
		{name: "lengths", schema: `{"type": "object", "properties": {"s": {"type": "string", "minLength": 5, "maxLength": 2}, "t": {"type": "string", "minLength": -1}}}`,
			want: []SchemaProblem{
				p(`minLength 5 of property "s" is greater than its maxLength 2`, "properties", "s", "minLength"),
				p(`"minLength" must be a non-negative integer, not -1`, "properties", "t", "minLength"),
			}},
		{name: "string default type", schema: `{"type": "object", "properties": {"s": {"type": "string", "default": 5}}}`,
			want: []SchemaProblem{p(`default of string property "s" must be a string, not an integer`, "properties", "s", "default")}},
		{name: "boolean default type", schema: `{"type": "object", "properties": {"b": {"type": "boolean", "default": "yes"}}}`,
			want: []SchemaProblem{p(`default of boolean property "b" must be true or false, not a string`, "properties", "b", "default")}},
		{name: "boolean keyword", schema: `{"type": "object", "properties": {"b": {"type": "boolean", "const": true}}}`,
			want: []SchemaProblem{p(`"const" is not supported for boolean property "b" in elicitation schemas (allowed: title, description, default)`, "properties", "b", "const")}},
		{name: "integer default fraction", schema: `{"type": "object", "properties": {"n": {"type": "integer", "default": 1.5}}}`,
			want: []SchemaProblem{p(`default of property "n" must be an integer, not 1.5`, "properties", "n", "default")}},
		{name: "number range", schema: `{"type": "object", "properties": {"n": {"type": "number", "minimum": 5, "maximum": 1, "default": 7}}}`,
			want: []SchemaProblem{
				p(`minimum 5 of property "n" is greater than its maximum 1`, "properties", "n", "minimum"),
				p(`default 7 of property "n" is outside its range`, "properties", "n", "default"),
			}},
		{name: "number bound type", schema: `{"type": "object", "properties": {"n": {"type": "number", "maximum": "10", "exclusiveMinimum": 0}}}`,
			want: []SchemaProblem{
				p(`"exclusiveMinimum" is not supported for number property "n" in elicitation schemas (allowed: title, description, minimum, maximum, default)`, "properties", "n", "exclusiveMinimum"),
				p(`maximum of property "n" must be a number, not "10"`, "properties", "n", "maximum"),
			}},

		// Enums.
		{name: "enum of numbers", schema: `{"type": "object", "properties": {"e": {"type": "string", "enum": [1, 2]}}}`,
			want: []SchemaProblem{p(`enum values of property "e" must be strings, not an integer`, "properties", "e", "enum", "0")}},
		{name: "empty enum", schema: `{"type": "object", "properties": {"e": {"type": "string", "enum": []}}}`,
			want: []SchemaProblem{p(`enum of property "e" must be a non-empty list of strings`, "properties", "e", "enum")}},
		{name: "enum default not a value", schema: `{"type": "object", "properties": {"e": {"type": "string", "enum": ["a", "b"], "default": "c"}}}`,
			want: []SchemaProblem{p(`default "c" of property "e" is not one of its values ("a", "b")`, "properties", "e", "default")}},
		{name: "enum with format", schema: `{"type": "object", "properties": {"e": {"type": "string", "enum": ["a"], "format": "email"}}}`,
			want: []SchemaProblem{p(`"format" is not supported for enum property "e" in elicitation schemas (allowed: title, description, enum, enumNames, default)`, "properties", "e", "format")}},
		{name: "enumNames length", schema: `{"type": "object", "properties": {"e": {"type": "string", "enum": ["a", "b"], "enumNames": ["A"]}}}`,
			want: []SchemaProblem{p(`enumNames of property "e" has 1 names for 2 enum values`, "properties", "e", "enumNames")}},
		{name: "enum value twice", schema: `{"type": "object", "properties": {"e": {"type": "string", "enum": ["a", "a"]}}}`,
			want: []SchemaProblem{p(`enum value "a" of property "e" is listed twice`, "properties", "e", "enum", "1")}},
		{name: "enum and oneOf", schema: `{"type": "object", "properties": {"e": {"type": "string", "enum": ["a"], "oneOf": [{"const": "a", "title": "A"}]}}}`,
			want: []SchemaProblem{p(`property "e" has both enum and oneOf; use one of them`, "properties", "e", "oneOf")}},
		{name: "oneOf option without title", schema: `{"type": "object", "properties": {"e": {"type": "string", "oneOf": [{"const": "a"}, {"const": "b", "title": "B", "description": "x"}]}}}`,
			want: []SchemaProblem{
				p(`each oneOf option of property "e" needs title: <string>`, "properties", "e", "oneOf", "0"),
				p(`"description" is not supported in oneOf options of property "e" (allowed: const, title)`, "properties", "e", "oneOf", "1", "description"),
			}},
		{name: "oneOf option not a mapping", schema: `{"type": "object", "properties": {"e": {"type": "string", "oneOf": ["a"], "default": "a"}}}`,
			want: []SchemaProblem{p(`each oneOf option of property "e" must be {const: <string>, title: <string>}, not a string`, "properties", "e", "oneOf", "0")}},
		{name: "multi-select default", schema: `{"type": "object", "properties": {"m": {"type": "array", "items": {"type": "string", "enum": ["x"]}, "default": ["x", "z"]}}}`,
			want: []SchemaProblem{p(`default "z" of property "m" is not one of its values ("x")`, "properties", "m", "default", "1")}},
		{name: "multi-select counts", schema: `{"type": "object", "properties": {"m": {"type": "array", "items": {"anyOf": [{"const": "x", "title": "X"}]}, "minItems": 3, "maxItems": 1, "uniqueItems": true}}}`,
			want: []SchemaProblem{
				p(`"uniqueItems" is not supported for multi-select property "m" in elicitation schemas (allowed: title, description, items, minItems, maxItems, default)`, "properties", "m", "uniqueItems"),
				p(`minItems 3 of property "m" is greater than its maxItems 1`, "properties", "m", "minItems"),
			}},
		{name: "multi-select items keyword", schema: `{"type": "object", "properties": {"m": {"type": "array", "items": {"type": "string", "enum": ["x"], "minLength": 1}}}}`,
			want: []SchemaProblem{p(`"minLength" is not supported in the items of multi-select property "m" (allowed: type, enum)`, "properties", "m", "items", "minLength")}},

		// Several problems come out in a stable order.
		{name: "several", schema: `{"type": "object", "properties": {"z": {"type": "object"}, "a": {"type": "string", "pattern": "x"}}, "required": ["quux"]}`,
			want: []SchemaProblem{
				p(`"pattern" is not supported for string property "a" in elicitation schemas (allowed: title, description, minLength, maxLength, format, default)`, "properties", "a", "pattern"),
				p(`property "z" is an object; elicitation schemas must be flat (string, number, integer, boolean or enum properties)`, "properties", "z", "type"),
				p(`required lists "quux", which is not a property`, "required", "0"),
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CheckElicitationSchema(mustDecode(t, tt.schema))
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("CheckElicitationSchema(%s) mismatch (-want +got):\n%s", tt.schema, diff)
			}
		})
	}
}

// An elicitation schema that passes the subset check also compiles as a JSON
// Schema, so answers can be validated against it.
func TestElicitationSchemaCompiles(t *testing.T) {
	raw := `{"type": "object", "properties": {
		"page": {"type": "boolean", "default": true},
		"level": {"type": "string", "enum": ["low", "high"], "enumNames": ["Low", "High"]},
		"teams": {"type": "array", "items": {"anyOf": [{"const": "a", "title": "A"}]}}},
		"required": ["page"]}`
	if probs := CheckElicitationSchema(mustDecode(t, raw)); len(probs) > 0 {
		t.Fatalf("unexpected problems: %v", probs)
	}
	s := mustCompile(t, raw)
	if err := s.Validate(mustDecode(t, `{"page": false, "level": "low", "teams": ["a"]}`)); err != nil {
		t.Errorf("valid answer rejected: %v", err)
	}
	if err := s.Validate(mustDecode(t, `{"page": "no", "level": "mid"}`)); err == nil {
		t.Errorf("invalid answer accepted")
	}
}
