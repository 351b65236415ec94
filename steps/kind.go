package steps

import (
	"context"
	"encoding/json"

	"github.com/vmcp-dev/vmcp/dsl"
)

// Kind is the closed set of step kinds: *ToolCall, *Elicitation, *ForEach.
type Kind interface {
	kind() string
	// Name is "tool", "elicitation" or "for_each".
	Name() string
}

// ToolCall calls one backend tool with rendered arguments.
type ToolCall struct {
	// Backend and Tool are the backend's name and its own tool name.
	Backend string
	Tool    string
	// Ref is the reference as written in the workflow.
	Ref string
	// Args renders the arguments; nil means no arguments ({}).
	Args *Template
	// Input coerces rendered arguments to the tool's input schema (nil: no
	// schema known, pass through).
	Input *Schema
	// ReadOnly / Idempotent come from the tool's annotations: they decide
	// whether an interrupted call may be re-executed.
	ReadOnly   bool
	Idempotent bool
}

// Elicitation asks the user a question.
type Elicitation struct {
	Message *Template
	// Schema is the requested schema (the MCP flat subset), raw for the
	// client and compiled for validating answers.
	SchemaJSON json.RawMessage
	Schema     *Schema
	// OnDecline and OnCancel are dsl.ActionAbort, ActionContinue or
	// ActionSkipRemaining; a timeout counts as cancel.
	OnDecline string
	OnCancel  string
}

// ForEach calls one tool once per item of a rendered list.
type ForEach struct {
	Call        *ToolCall
	Items       *Template
	As          string // item variable name
	MaxParallel int
}

func (*ToolCall) kind() string    { return "tool" }
func (*Elicitation) kind() string { return "elicitation" }
func (*ForEach) kind() string     { return "for_each" }

func (*ToolCall) Name() string    { return "tool" }
func (*Elicitation) Name() string { return "elicitation" }
func (*ForEach) Name() string     { return "for_each" }

// Caller calls backend tools. package server hands in the implementation
// (routing to backends); tests use fakes.
type Caller interface {
	CallTool(ctx context.Context, call *Call) (*Result, error)
}

// Call is one backend tool call.
type Call struct {
	Backend string
	Tool    string
	// Arguments is the JSON object sent as the call's arguments.
	Arguments json.RawMessage
	// Meta is passed through as the request's _meta (may be nil).
	Meta map[string]any
	// Step and Attempt name the workflow step and its attempt (1, 2, …)
	// the call belongs to, for telemetry; empty and 0 for plain tools.
	Step    string
	Attempt int
}

// Result is a backend's tools/call result. Content and StructuredContent
// stay raw so they pass through unchanged.
type Result struct {
	Content           json.RawMessage `json:"content,omitempty"`
	StructuredContent json.RawMessage `json:"structuredContent,omitempty"`
	IsError           bool            `json:"isError,omitempty"`
	Meta              json.RawMessage `json:"_meta,omitempty"`
}

// Pos is where a step is defined; kept here so step errors can name it.
type Pos = dsl.Pos
