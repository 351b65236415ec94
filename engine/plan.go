package engine

import (
	"encoding/json"
	"time"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/steps"
)

// Plan is a compiled workflow: immutable after Compile and shared by every
// run of it. All per-run state lives on the run, never here.
type Plan struct {
	Name        string
	Description string
	// InputSchema is the tool's inputSchema (the workflow's parameters, or
	// the backend tool's schema for a one-node plan), raw.
	InputSchema json.RawMessage
	// OutputSchema is advertised as the tool's outputSchema (may be nil).
	OutputSchema json.RawMessage
	// Annotations are the derived (or explicitly more cautious) hints.
	Annotations ToolAnnotations
	// Timeout bounds execution time (0 = none); MaxParallel bounds how many
	// steps run at once.
	Timeout     time.Duration
	MaxParallel int
	// Steps in a deterministic topological order; Step.Index is the
	// position in this slice.
	Steps []*Step
	// Pos is where the workflow is defined; Source is the file it came
	// from (kept so a run can store the definition it started with).
	Pos    dsl.Pos
	Source *dsl.Source

	byID         map[string]*Step
	params       *paramSchema
	output       *steps.Template // nil: sink default
	outputSchema *steps.Schema
	sinks        []int
	oneNode      bool
}

// Step is one node of the plan.
type Step struct {
	ID    string
	Index int
	Pos   dsl.Pos
	// Kind is the closed set of step kinds: *steps.ToolCall,
	// *steps.Elicitation or *steps.ForEach.
	Kind steps.Kind
	// Deps are the steps this one waits for, in plan order.
	Deps []Dep
	// Dependents are the indexes of steps that wait for this one.
	Dependents []int

	condition     *condition // nil: always runs
	defaultOutput any        // JSON value or nil
	hasDefault    bool
	onError       string // dsl.ActionAbort | dsl.ActionContinue
	timeout       time.Duration
	retry         *retryPolicy
	// needContent: an expression reads steps.<id>.content (or the whole
	// step), so the tool result's content list is decoded.
	needContent bool
}

// Dep is one incoming edge. Inferred edges come from `steps.<id>`
// references; explicit ones from depends_on (an edge may be both).
type Dep struct {
	Step     int
	ID       string
	Explicit bool
	Inferred bool
}

// Step returns the step with the given id, or nil.
func (p *Plan) Step(id string) *Step { return p.byID[id] }
