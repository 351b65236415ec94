package steps

import "encoding/json"

// Schema is a compiled JSON Schema (draft 2020-12) used to validate values
// and to coerce rendered arguments to a tool's input schema.
// IMPLEMENTATION PENDING (helper): see the method comments for the contract.
type Schema struct {
	raw json.RawMessage
}

// CompileSchema compiles raw JSON Schema text. The error says what is wrong
// with the schema.
func CompileSchema(raw json.RawMessage) (*Schema, error) { return &Schema{raw: raw}, nil }

// Raw returns the schema text exactly as given.
func (s *Schema) Raw() json.RawMessage { return s.raw }

// Validate checks a JSON value (as produced by DecodeJSON) against the
// schema; the error names the failing location and reason.
func (s *Schema) Validate(v any) error { return nil }

// Coerce converts v toward the schema's types where the conversion is
// lossless ("42" → 42 for integer, "true" → true for boolean, 3 → "3" for
// string, …). It never fails: values it cannot convert are returned as is,
// for Validate (or the backend) to reject.
func (s *Schema) Coerce(v any) any { return v }
