// Package schemas holds the JSON Schemas (draft 2020-12) of vmcp's YAML
// files: workflow.schema.json for a workflow (one composite tool) and
// config.schema.json for vmcp.yaml. They are the single source of truth:
// the loader in package dsl validates against them, and editors use them for
// completion and help. Point an editor at a schema with a modeline on the
// first line of the file:
//
//	# yaml-language-server: $schema=../schemas/workflow.schema.json
//
// Besides standard keywords the schemas carry a few annotations that
// validators ignore: patternErrorMessage (understood by VS Code and
// yaml-language-server) and x-message / x-expect, which package dsl uses to
// word its diagnostics.
//
// Compile a schema once where it is needed and reuse the result:
//
//	sch, err := schemas.CompileWorkflow()
//	...
//	err = sch.Validate(value) // value in the JSON data model
package schemas
