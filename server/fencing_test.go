package server

import (
	"errors"
	"testing"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/steps"
)

// notLive is a store whose replica lease lapsed (PostgreSQL's Live).
type notLive struct{ state.Driver }

func (notLive) Live() bool { return false }

// A replica that lost its lease makes no backend call for a run's step
// (self-fencing); plain tool calls, which belong to no run, still go out.
func TestNoStepCallsWithoutLease(t *testing.T) {
	g := &Gateway{runs: &runs{store: notLive{}}}
	c := caller{g: g} // no manager: a call that got through would panic
	_, err := c.CallTool(t.Context(), &steps.Call{Backend: "kit", Tool: "write", Step: "second", Attempt: 1})
	if !errors.Is(err, errNotLive) {
		t.Fatalf("step call on a fenced replica: %v, want errNotLive", err)
	}
	if !(&runs{store: nil}).live() || !(*runs)(nil).live() {
		t.Fatal("a store without leases must count as live")
	}
}
