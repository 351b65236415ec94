package engine

import "github.com/vmcp-dev/vmcp/dsl"

type paramSchema struct{}
type condition struct{}
type retryPolicy struct{}

// CompileOptions tune Compile; nil is valid.
type CompileOptions struct {
	// Catalog resolves tool references; nil skips tool resolution,
	// argument checks and annotation derivation (offline without a
	// catalogue).
	Catalog Catalog
}

// Compile checks a loaded workflow and builds its immutable Plan. All
// problems are reported together as Diagnostics.
// IMPLEMENTATION IN PROGRESS (lead).
func Compile(wf *dsl.Workflow, opts *CompileOptions) (*Plan, dsl.Diagnostics) {
	return nil, nil
}
