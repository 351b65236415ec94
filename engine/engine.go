package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/steps"
)

// Checkpointer persists a run's state. The engine hands it one checkpoint
// when a run pauses, before the question is delivered (package state
// implements it; tests use fakes).
type Checkpointer interface {
	SaveCheckpoint(ctx context.Context, cp *Checkpoint) error
}

// Clock tells time for timestamps and deadlines. Waiting uses the runtime's
// timers, which testing/synctest fakes.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Options tune New; nil is valid and every zero value means off or default.
type Options struct {
	// Store receives a checkpoint when a run pauses (nil: pauses are
	// returned but not persisted).
	Store Checkpointer
	// Clock defaults to the system clock.
	Clock Clock
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
	// MaxCalls bounds backend calls in flight across all runs (0 = 256).
	MaxCalls int
	// ReuseWorkers keeps finished step workers for a while to run the
	// next steps on (see workers). A long-running process sets it;
	// tests under testing/synctest leave it off: an engine shared by
	// several bubbles would hand one bubble's job to another's worker.
	ReuseWorkers bool
}

// Engine runs plans. One per process; safe for concurrent use.
type Engine struct {
	caller steps.Caller
	store  Checkpointer
	clock  Clock
	log    *slog.Logger
	slots  chan struct{}
	work   *workers
}

// New returns an engine that calls backend tools through caller.
func New(caller steps.Caller, opts *Options) *Engine {
	if opts == nil {
		opts = &Options{}
	}
	e := &Engine{caller: caller, store: opts.Store, clock: opts.Clock, log: opts.Logger, work: newWorkers(opts.ReuseWorkers)}
	if e.clock == nil {
		e.clock = systemClock{}
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	n := opts.MaxCalls
	if n <= 0 {
		n = 256
	}
	e.slots = make(chan struct{}, n)
	return e
}

// RunStatus is the state of a run as the engine reports it.
type RunStatus string

// Run statuses (SPEC §5). The engine returns completed, failed, cancelled
// or waiting; running and interrupted belong to the store.
const (
	StatusRunning     RunStatus = "running"
	StatusWaiting     RunStatus = "waiting"
	StatusInterrupted RunStatus = "interrupted"
	StatusCompleted   RunStatus = "completed"
	StatusFailed      RunStatus = "failed"
	StatusCancelled   RunStatus = "cancelled"
)

// Step statuses, as `steps.<id>.status` shows them.
const (
	StepPending   = "pending"
	StepCompleted = "completed"
	StepFailed    = "failed"
	StepSkipped   = "skipped"
	StepCancelled = "cancelled"
)

// RunOptions are per-call settings; nil is valid.
type RunOptions struct {
	// RunID names the run (in `workflow.run_id` and events).
	RunID string
	// Observer receives events in order, from one goroutine at a time.
	Observer func(Event)
	// Meta is sent as _meta with every backend call (trace context,
	// progress token of the front request, …).
	Meta map[string]any
	// Durable makes the engine hand the Store a checkpoint after every
	// step transition (not only at pauses), with the steps in flight.
	Durable bool
	// Unrecorded says a durable run is not in the store yet: the engine
	// saves a checkpoint before the first step starts (or at the pause,
	// when the first thing the run does is ask), and the store creates the
	// run with it: one commit instead of a create and a checkpoint.
	Unrecorded bool
}

// Outcome is the typed result of Run or Resume.
type Outcome struct {
	RunID string
	// Workflow is the plan's name.
	Workflow string
	Status   RunStatus
	// Output is the composite's structured value (completed runs).
	Output any
	// Partial marks an output rendered after skip_remaining, where reads
	// of skipped steps gave null.
	Partial bool
	// Raw is the backend's result, unchanged, for one-node plans.
	Raw *steps.Result
	// Err explains a failed or cancelled run.
	Err *RunError
	// Question is set when Status is StatusWaiting.
	Question *Question
	// Checkpoint is the run's state when it paused (what was saved).
	Checkpoint *Checkpoint
}

// Question is a pending elicitation.
type Question struct {
	Step    string          `json:"step"`
	Message string          `json:"message"`
	Schema  json.RawMessage `json:"schema"`
	// Deadline is when an unanswered question counts as cancel (zero =
	// none).
	Deadline time.Time `json:"deadline,omitzero"`
	// Seq is the store's pause number for this question, set by the
	// engine's Store when it commits the pause (0 = not known); never
	// part of the checkpoint.
	Seq uint64 `json:"-"`
}

// RunError is a run's failure: which workflow and step, which attempt,
// where the step is written, and why.
type RunError struct {
	Workflow string  `json:"workflow"`
	Step     string  `json:"step,omitempty"`
	Attempt  int     `json:"attempt,omitempty"`
	Attempts int     `json:"attempts,omitempty"`
	Pos      dsl.Pos `json:"pos,omitzero"`
	Cause    string  `json:"cause"`
}

func (e *RunError) Error() string {
	if e.Step == "" {
		return fmt.Sprintf("workflow %q: %s", e.Workflow, e.Cause)
	}
	at := ""
	if e.Pos.IsValid() {
		at = ", " + e.Pos.String()
	}
	att := ""
	if e.Attempt > 0 {
		att = fmt.Sprintf("attempt %d", e.Attempt)
		if e.Attempts > 1 {
			att = fmt.Sprintf("attempt %d of %d", e.Attempt, e.Attempts)
		}
		att = " (" + att + at + ")"
	} else if at != "" {
		att = " (" + at[2:] + ")"
	}
	return fmt.Sprintf("workflow %q: step %q%s: %s", e.Workflow, e.Step, att, e.Cause)
}

// EventType names what happened to a step.
type EventType string

// Event types.
const (
	EventStarted  EventType = "started"
	EventFinished EventType = "finished"
	EventSkipped  EventType = "skipped"
	EventRetried  EventType = "retried"
	EventPaused   EventType = "paused"
)

// Event is one step transition, for progress notifications and history.
type Event struct {
	Type    EventType
	RunID   string
	Step    string
	Status  string // finished: the step's status
	Action  string // finished elicitation: accept, decline or cancel
	Attempt int
	Err     string
	Time    time.Time
	// Done and Total count finished steps, for progress.
	Done, Total int
}
