package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Driver is the contract every state driver implements: the bbolt Store
// in this package (the default, one process) and the PostgreSQL driver in
// state/postgres (several replicas on one database). Every method that
// changes a run is a transition: one durable commit, or a refusal (a
// *TransitionError wrapping one of the Err… values) that changes nothing.
// The contract suite in state/statetest runs every case against each
// driver.
//
// Drivers differ only where one process and several differ:
//   - Recover: bbolt interrupts every running run (the process that ran
//     them is gone); PostgreSQL interrupts running runs whose replica's
//     lease expired or that were left without a holder, and keeps doing
//     so in its sweep.
//   - Checkpoint, Pause and Finish of a running run: PostgreSQL accepts
//     them only from the replica holding the run at the epoch it claimed
//     it (else ErrFenced); bbolt has one holder, the process.
//   - Changes: bbolt's hints are in-process; PostgreSQL's also travel
//     between replicas (NOTIFY after commit, LISTEN on one connection).
//   - Times: bbolt stamps with its clock, PostgreSQL with the database's
//     now(), never a replica's clock.
type Driver interface {
	Create(ctx context.Context, r *Run) error
	Checkpoint(ctx context.Context, id string, checkpoint json.RawMessage, inFlight []string) error
	Pause(ctx context.Context, id string, checkpoint json.RawMessage, q Question) (uint64, error)
	Claim(ctx context.Context, id, step string, seq uint64, who string, answer json.RawMessage) (*Run, error)
	ClaimDeadline(ctx context.Context, due DueQuestion, answer json.RawMessage) (*Run, error)
	// ClaimDue is ClaimDeadline for up to max questions due by now, in one
	// commit: each claimed run is returned whole (running, history
	// "deadline"), once across every process sharing the store.
	ClaimDue(ctx context.Context, now time.Time, max int, answer json.RawMessage) ([]*Run, error)
	Resume(ctx context.Context, id, who string) (*Run, error)
	Finish(ctx context.Context, id, status string, result json.RawMessage, errMsg string) error
	Cancel(ctx context.Context, id, who string) error
	AppendHistory(ctx context.Context, id string, ev Event) error

	Get(ctx context.Context, id string) (*Run, error)
	List(ctx context.Context, f Filter) (runs []*RunSummary, next string, err error)
	DueDeadlines(ctx context.Context, now time.Time, limit int) ([]DueQuestion, error)
	NextDeadline(ctx context.Context) (at time.Time, ok bool, err error)

	// Recover returns the runs it interrupted (each after its commit).
	Recover(ctx context.Context) ([]Interrupted, error)
	Prune(ctx context.Context, before time.Time) (int, error)
	// Key is the 32-byte key for sealing resume tokens, the same for
	// every process sharing the store.
	Key(ctx context.Context) ([]byte, error)
	// Changes streams hints about committed transitions of any run, made
	// by this process or (PostgreSQL) by any replica sharing the store,
	// until ctx ends or the store closes (see Change). Hints may be lost
	// on the way from another replica; a Change{} says when the driver
	// knows it (a reconnect), and a waiter also re-reads now and then.
	Changes(ctx context.Context) <-chan Change
	Close() error
}

var _ Driver = (*Store)(nil)

// Interrupted is a run Recover interrupted: what its audit line names.
type Interrupted struct {
	ID, Workflow, Owner string
	// InFlight are the steps that were executing.
	InFlight []string
	// Holder is the replica that held the run when it was taken over
	// (PostgreSQL; "" with bbolt or when no replica held it).
	Holder string
}

// ErrFenced: a write for a running run from a process that no longer
// holds it (another replica took it over, or this one's lease lapsed).
// The caller must stop executing the run.
var ErrFenced = errors.New("run is held by another replica (this one was fenced out)")

// EncodeDocument returns the versioned run document a driver stores for
// r (everything but the checkpoint and the definition source) and its
// summary, byte for byte as the bbolt store writes them.
func EncodeDocument(r *Run) (doc, summary []byte, err error) {
	d := fromRun(r)
	if doc, err = encodeJSON(d); err != nil {
		return nil, nil, err
	}
	if summary, err = encodeJSON(d.head()); err != nil {
		return nil, nil, err
	}
	return doc, summary, nil
}

// DecodeDocument reads a run document (see EncodeDocument); the run's
// Checkpoint and Definition are left empty.
func DecodeDocument(doc []byte) (*Run, error) {
	d, err := decodeDoc(doc)
	if err != nil {
		return nil, fmt.Errorf("run document: %w", err)
	}
	if d.V > FormatVersion {
		return nil, fmt.Errorf("run %s has document version %d; this vmcp understands up to %d: %w", d.ID, d.V, FormatVersion, ErrNewerFormat)
	}
	return d.run(), nil
}

func fromRun(r *Run) *runDoc {
	v := r.FormatVersion
	if v == 0 {
		v = FormatVersion
	}
	d := &runDoc{V: v, ID: r.ID, Workflow: r.Workflow, Owner: r.Owner, Status: r.Status,
		Created: r.Created, Updated: r.Updated, Finished: r.Finished, DefName: r.DefinitionName,
		DefHash: r.DefinitionHash, Params: r.Params, Seq: r.Seq, InFlight: r.InFlight,
		Result: r.Result, Error: r.Error, History: r.History}
	if r.Pending != nil {
		q := *r.Pending
		d.Pending = &q
	}
	return d
}

// CheckNewRun says why a driver must refuse to create r with id (a
// wrapped ErrInvalid), or nil: the same rules for every driver.
func CheckNewRun(id string, r *Run) error {
	if why := createArgs(id, r); why != "" {
		return invalid("create", id, why)
	}
	return nil
}

// DefinitionHash is the hash under which a definition source is stored
// (sha256, hex).
func DefinitionHash(src []byte) string { return hashHex(src) }

// ValidJSON checks an optional (empty ok when optional) raw JSON value,
// naming what in its error.
func ValidJSON(what string, raw json.RawMessage, optional bool) error {
	return validJSON(what, raw, optional)
}

// Invalid is the error for an argument a transition cannot accept.
func Invalid(op, id, why string) error { return invalid(op, id, why) }

// MaxPageSize is the largest List page; DefaultPageSize is used for 0.
const (
	MaxPageSize     = maxPageSize
	DefaultPageSize = defaultPageSize
)
