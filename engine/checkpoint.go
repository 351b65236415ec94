package engine

import (
	"errors"
	"fmt"
	"time"
)

// CheckpointVersion is the format version of Checkpoint.
const CheckpointVersion = 1

// Checkpoint is everything needed to continue a run: the parameters, the
// state of every step that finished, and the pending question. It encodes
// to JSON; the store adds the run's metadata and its workflow definition.
type Checkpoint struct {
	Version  int                   `json:"version"`
	RunID    string                `json:"run_id"`
	Workflow string                `json:"workflow"`
	Params   map[string]any        `json:"params"`
	Steps    map[string]*StepState `json:"steps"`
	// Pending is the question the run waits on.
	Pending *Question `json:"pending,omitempty"`
	// Elapsed is execution time used so far (waiting does not count
	// against the workflow timeout).
	Elapsed time.Duration `json:"elapsed"`
	// SkipRemaining is set once a step chose skip_remaining.
	SkipRemaining bool `json:"skip_remaining,omitempty"`
	// InFlight are the steps executing when this checkpoint was taken
	// (durable runs): after a crash they are the ones that may have had
	// effects without a recorded result.
	InFlight []string `json:"in_flight,omitempty"`
	// TraceParent is the W3C traceparent of the execution segment that
	// wrote this checkpoint (set by the server; opaque to the engine): the
	// segment that resumes the run links to it.
	TraceParent string `json:"trace_parent,omitempty"`
}

// StepState is one step's result as expressions see it.
type StepState struct {
	Status   string `json:"status"`
	Output   any    `json:"output,omitempty"`
	Error    string `json:"error,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	// Content is a tool step's content list, or an elicitation's answer.
	Content any `json:"content,omitempty"`
	// Action is an elicitation's outcome: accept, decline or cancel.
	Action string `json:"action,omitempty"`
	// Items are a for_each step's per-item results, in item order.
	Items    []ItemState `json:"items,omitempty"`
	Started  time.Time   `json:"started,omitzero"`
	Finished time.Time   `json:"finished,omitzero"`
}

// ItemState is one for_each item's result.
type ItemState struct {
	Status   string `json:"status"`
	Output   any    `json:"output,omitempty"`
	Error    string `json:"error,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
}

// view is the map expressions read as steps.<id>.
func (s *StepState) view() map[string]any {
	m := map[string]any{
		"status":   s.Status,
		"output":   s.Output,
		"error":    s.Error,
		"attempts": int64(s.Attempts),
		"content":  s.Content,
		"action":   s.Action,
	}
	if s.Items != nil {
		items := make([]any, len(s.Items))
		for i, it := range s.Items {
			items[i] = map[string]any{"status": it.Status, "output": it.Output, "error": it.Error, "attempts": int64(it.Attempts)}
		}
		m["items"] = items
	} else {
		m["items"] = nil
	}
	return m
}

// Answer is a reply to a pending question.
type Answer struct {
	// Action is "accept", "decline" or "cancel".
	Action string `json:"action"`
	// Content is the accepted answer (validated against the step's schema).
	Content map[string]any `json:"content,omitempty"`
	// Timeout marks a cancel caused by the question's deadline.
	Timeout bool `json:"timeout,omitempty"`
}

// Answer actions.
const (
	ActionAccept  = "accept"
	ActionDecline = "decline"
	ActionCancel  = "cancel"
)

// ErrInvalidAnswer is returned (wrapped, with the reason) when an answer
// does not fit the question; the run keeps waiting.
var ErrInvalidAnswer = errors.New("invalid answer")

// ErrNotWaiting is returned when resuming a checkpoint with no question.
var ErrNotWaiting = errors.New("run is not waiting for an answer")

func invalidAnswer(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidAnswer, fmt.Sprintf(format, args...))
}
