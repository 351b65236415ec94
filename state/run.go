package state

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Run statuses (SPEC §5).
const (
	StatusRunning     = "running"     // executing in this process
	StatusWaiting     = "waiting"     // a question is pending
	StatusInterrupted = "interrupted" // was executing when vmcp stopped
	StatusCompleted   = "completed"
	StatusFailed      = "failed"
	StatusCancelled   = "cancelled"
)

// ValidStatus reports whether s is one of the six run statuses.
func ValidStatus(s string) bool {
	switch s {
	case StatusRunning, StatusWaiting, StatusInterrupted, StatusCompleted, StatusFailed, StatusCancelled:
		return true
	}
	return false
}

// Finished reports whether s is a final status (completed, failed or
// cancelled).
func Finished(s string) bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// History event kinds. The store appends created, paused, answered,
// deadline, resumed, cancelled, interrupted, completed and failed itself;
// callers add retried and rejected (and anything else) with AppendHistory.
const (
	EventCreated     = "created"
	EventPaused      = "paused"
	EventAnswered    = "answered"
	EventResumed     = "resumed"
	EventRetried     = "retried"
	EventCancelled   = "cancelled"
	EventInterrupted = "interrupted"
	EventCompleted   = "completed"
	EventFailed      = "failed"
	EventDeadline    = "deadline"
	EventRejected    = "rejected"
)

// Run is one composite call: what it started with, where it is, and what
// happened to it. Get and Claim return it whole; List returns RunSummary.
type Run struct {
	// ID is unguessable: "r_" and 22 base64url characters (128 random
	// bits). Create assigns one when it is empty.
	ID       string
	Workflow string
	// Owner is the principal that started the run ("anonymous" in
	// anonymous mode). The store records it; callers enforce it.
	Owner   string
	Status  string
	Created time.Time
	Updated time.Time
	// Finished is when the run reached a final status (zero before).
	Finished time.Time
	// FormatVersion is the store's document format the run was written in.
	FormatVersion int

	// Definition is the workflow source the run started with; a resume
	// runs this, even if the file changed since. Definitions are stored
	// once per DefinitionHash (sha256 hex of Definition) and shared by runs.
	Definition     []byte
	DefinitionName string
	DefinitionHash string

	Params json.RawMessage
	// Checkpoint is the engine's checkpoint, opaque to the store.
	Checkpoint json.RawMessage
	// Seq is the sequence number of the latest pause (0: never paused).
	Seq uint64
	// Pending is the question a waiting run waits on.
	Pending *Question
	// InFlight are the steps that were executing when the run was last
	// checkpointed: after a crash, these may or may not have happened.
	InFlight []string
	// Result is the final outcome (raw JSON) of a finished run.
	Result json.RawMessage
	Error  string
	// History is append-only: who did what, when.
	History []Event
}

// Question is a pending elicitation.
type Question struct {
	Step    string          `json:"step"`
	Message string          `json:"message"`
	Schema  json.RawMessage `json:"schema,omitempty"`
	// Deadline is when an unanswered question is due (zero = none).
	Deadline time.Time `json:"deadline,omitzero"`
	// Seq increments with every pause of the run, so an answer (or a
	// resume token) bound to (run, step, seq) applies at most once.
	Seq uint64 `json:"seq"`
}

// Event is one entry of a run's history.
type Event struct {
	At     time.Time       `json:"at"`
	Who    string          `json:"who,omitempty"`
	Kind   string          `json:"kind"`
	Step   string          `json:"step,omitempty"`
	Detail json.RawMessage `json:"detail,omitempty"`
}

// RunSummary is what List returns: enough to show a row, without the
// checkpoint, parameters, result or history.
type RunSummary struct {
	ID       string    `json:"id"`
	Workflow string    `json:"workflow"`
	Owner    string    `json:"owner"`
	Status   string    `json:"status"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	// PendingStep, PendingMessage and Deadline describe the question of a
	// waiting run.
	PendingStep    string    `json:"pending_step,omitempty"`
	PendingMessage string    `json:"pending_message,omitempty"`
	Deadline       time.Time `json:"deadline,omitzero"`
	Error          string    `json:"error,omitempty"`
}

// Filter selects runs for List. Empty fields match everything.
type Filter struct {
	Status   string
	Workflow string
	Owner    string
	// Limit is the page size (0 = 50; at most 1000).
	Limit int
	// Cursor continues a previous List (its next value).
	Cursor string
}

// DueQuestion is a waiting run whose question's deadline has passed.
type DueQuestion struct {
	RunID    string
	Step     string
	Seq      uint64
	Deadline time.Time
}

// NewRunID returns a fresh run id: "r_" and 128 random bits, base64url.
func NewRunID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand aborts the program instead)
	return "r_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// Errors. Transition errors are *TransitionError values that wrap one of
// these, so test with errors.Is.
var (
	ErrNotFound = errors.New("run not found")
	// ErrNotWaiting: an answer for a run that waits on nothing (answered
	// already, cancelled, finished, …).
	ErrNotWaiting = errors.New("run is not waiting for an answer")
	// ErrStaleAnswer: the run waits, but on another step or a later pause
	// than the answer was for.
	ErrStaleAnswer = errors.New("answer is for a question the run no longer waits on")
	// ErrNotRunning: a checkpoint, pause or finish for a run that is not
	// executing.
	ErrNotRunning = errors.New("run is not running")
	// ErrNotInterrupted: Resume of a run that was not interrupted.
	ErrNotInterrupted = errors.New("run is not interrupted")
	// ErrNotCancellable: Cancel of a run that is running or finished.
	ErrNotCancellable = errors.New("run cannot be cancelled")
	// ErrNotDue: ClaimDeadline before the question's deadline.
	ErrNotDue = errors.New("question is not due yet")
	ErrExists = errors.New("run already exists")
	// ErrInvalid: an argument the store cannot accept (bad JSON, unknown
	// status, empty id, …).
	ErrInvalid = errors.New("invalid argument")
	// ErrBadCursor: a List cursor this store did not make.
	ErrBadCursor = errors.New("invalid list cursor")
	ErrClosed    = errors.New("state store is closed")
	// ErrLocked: another process holds the state file.
	ErrLocked = errors.New("state file is in use by another vmcp process")
	// ErrNewerFormat: the file was written by a newer vmcp.
	ErrNewerFormat = errors.New("state file format is newer than this vmcp understands")
)

// TransitionError is a refused transition: which operation, which run,
// what status it was in, and why.
type TransitionError struct {
	Op     string // "claim", "pause", …
	RunID  string
	Status string // the run's status when refused ("" if not found)
	Detail string // more words, may be empty
	Err    error  // one of the Err… values above
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("%s run %s: %v", e.Op, e.RunID, e.Err)
	if e.Status != "" && e.Err != ErrNotFound {
		msg += " (it is " + e.Status + ")"
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

func (e *TransitionError) Unwrap() error { return e.Err }
