package statetest

import (
	"bytes"
	"time"

	"github.com/vmcp-dev/vmcp/state"
)

// CloneWaiting is a new waiting run made from tmpl, a real paused run
// read back from a store: id replaces tmpl's id in the checkpoint, to
// replaces every from in the parameters and checkpoint (a tag the
// template was started with), and the question falls due at deadline.
// Create stores it as a run created waiting, with its own history: what a
// paused call leaves, without making the call (for tests and the bench
// that need thousands of them).
func CloneWaiting(tmpl *state.Run, id, from, to string, deadline time.Time) *state.Run {
	r := *tmpl
	r.ID, r.Status, r.Created, r.Updated, r.History, r.Seq = id, state.StatusWaiting, time.Time{}, time.Time{}, nil, 0
	r.Params = bytes.ReplaceAll(tmpl.Params, []byte(from), []byte(to))
	r.Checkpoint = bytes.ReplaceAll(bytes.ReplaceAll(tmpl.Checkpoint, []byte(tmpl.ID), []byte(id)), []byte(from), []byte(to))
	q := *tmpl.Pending
	q.Deadline = deadline
	r.Pending = &q
	return &r
}
