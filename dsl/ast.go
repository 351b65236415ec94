package dsl

import (
	"time"

	"go.yaml.in/yaml/v3"
)

// The AST mirrors schemas/workflow.schema.json field for field (a test keeps
// them in step). Scalars are wrapped so each keeps the YAML node it came
// from: its position, and for templates and expressions the offset mapping
// into the scalar. The loader validates the document against the schema
// first; the wrappers are lenient (a value of the wrong kind decodes to the
// zero value with Set false) because the schema already reported it.

// Workflow is one composite tool definition.
type Workflow struct {
	// Src is the file the workflow came from (nil for a synthetic plan).
	Src *Source `yaml:"-"`
	// Node is the workflow's mapping node.
	Node *yaml.Node `yaml:"-"`

	Name         String       `yaml:"name"`
	Description  String       `yaml:"description"`
	Parameters   Value        `yaml:"parameters"`
	Timeout      Duration     `yaml:"timeout"`
	MaxParallel  Int          `yaml:"max_parallel"`
	Steps        []*Step      `yaml:"steps"`
	Output       Value        `yaml:"output"`
	OutputSchema Value        `yaml:"output_schema"`
	Annotations  *Annotations `yaml:"annotations"`
}

// Pos is the workflow's position (its first key).
func (w *Workflow) Pos() Pos { return w.Src.NodePos(w.Node) }

// Step kinds as written in `type:`.
const (
	StepTool        = "tool"
	StepElicitation = "elicitation"
)

// Step is one entry of `steps`. Which fields apply depends on Type; the
// compiler turns a Step into one of the closed set of step kinds.
type Step struct {
	Node *yaml.Node `yaml:"-"`

	ID        String   `yaml:"id"`
	Type      String   `yaml:"type"` // "" means tool
	DependsOn []String `yaml:"depends_on"`
	Condition String   `yaml:"condition"`
	Timeout   Duration `yaml:"timeout"`
	OnError   OnError  `yaml:"on_error"`
	// DefaultOutput is the output when the step is skipped or fails with
	// on_error: continue.
	DefaultOutput Value `yaml:"default_output"`

	// Tool steps.
	Tool        String `yaml:"tool"`
	Arguments   Value  `yaml:"arguments"`
	Retry       *Retry `yaml:"retry"`
	ForEach     String `yaml:"for_each"`
	As          String `yaml:"as"`
	MaxParallel Int    `yaml:"max_parallel"`

	// Elicitation steps.
	Message   String `yaml:"message"`
	Schema    Value  `yaml:"schema"`
	OnDecline Action `yaml:"on_decline"`
	OnCancel  Action `yaml:"on_cancel"`
}

// Kind returns the step's type with the default applied.
func (s *Step) Kind() string {
	if s.Type.Value == "" {
		return StepTool
	}
	return s.Type.Value
}

// Retry is a step's retry policy.
type Retry struct {
	Node        *yaml.Node `yaml:"-"`
	MaxAttempts Int        `yaml:"max_attempts"`
	Delay       Duration   `yaml:"delay"`
	Backoff     Float      `yaml:"backoff"`
	MaxDelay    Duration   `yaml:"max_delay"`
	Jitter      Bool       `yaml:"jitter"`
	// On narrows the error classes retried: transport, timeout, tool_error.
	On []String `yaml:"on"`
}

// Error classes a retry can be narrowed to.
const (
	ErrClassTransport = "transport"
	ErrClassTimeout   = "timeout"
	ErrClassToolError = "tool_error"
)

// OnError is `on_error`: a bare action (abort | continue) or, in the
// ToolHive-proposal form, {action: abort|continue|retry, retry_count,
// retry_delay}.
type OnError struct {
	Node       *yaml.Node `yaml:"-"`
	Action     String     `yaml:"action"`
	RetryCount Int        `yaml:"retry_count"`
	RetryDelay Duration   `yaml:"retry_delay"`
}

// Actions of on_error, on_decline and on_cancel.
const (
	ActionAbort         = "abort"
	ActionContinue      = "continue"
	ActionRetry         = "retry"
	ActionSkipRemaining = "skip_remaining"
)

// Action is `on_decline` / `on_cancel`: a bare action or {action: …}.
type Action struct {
	Node   *yaml.Node `yaml:"-"`
	Action String     `yaml:"action"`
}

// Annotations are MCP tool annotations a workflow may state explicitly.
// They may be more cautious than the derived ones, never less.
type Annotations struct {
	Node            *yaml.Node `yaml:"-"`
	Title           String     `yaml:"title"`
	ReadOnlyHint    Bool       `yaml:"readOnlyHint"`
	DestructiveHint Bool       `yaml:"destructiveHint"`
	IdempotentHint  Bool       `yaml:"idempotentHint"`
	OpenWorldHint   Bool       `yaml:"openWorldHint"`
}

// String is a scalar string with its node.
type String struct {
	Value string
	Node  *yaml.Node
	Set   bool
}

// Int is a scalar integer with its node.
type Int struct {
	Value int
	Node  *yaml.Node
	Set   bool
}

// Float is a scalar number with its node.
type Float struct {
	Value float64
	Node  *yaml.Node
	Set   bool
}

// Bool is a scalar boolean with its node.
type Bool struct {
	Value bool
	Node  *yaml.Node
	Set   bool
}

// Duration is a Go duration string ("500ms", "4h") with its node.
type Duration struct {
	Value time.Duration
	Node  *yaml.Node
	Set   bool
}

// Value is a free-form YAML value (arguments, output, schemas, defaults),
// kept as its node so templates inside can be compiled with positions.
type Value struct {
	Node *yaml.Node
}

// IsSet reports whether the key was present.
func (v Value) IsSet() bool { return v.Node != nil }
