package state

import (
	"context"
	"testing"
)

// A subscriber that falls behind loses hints but is told so (Change{})
// before the next one; a cancelled subscription's channel closes; a
// closed hub closes every channel.
func TestHubLossAndClose(t *testing.T) {
	var h Hub
	ctx, cancel := context.WithCancel(t.Context())
	c := h.Subscribe(ctx)
	other := h.Subscribe(t.Context())
	for range changeBuffer + 10 {
		h.Publish(Change{RunID: "a", Status: StatusWaiting})
	}
	for range changeBuffer {
		if got := <-c; got.RunID != "a" {
			t.Fatalf("got %+v", got)
		}
	}
	h.Publish(Change{RunID: "b", Status: StatusRunning})
	if got := <-c; got != (Change{}) {
		t.Fatalf("after losing hints: %+v, want Change{}", got)
	}
	if got := <-c; got.RunID != "b" {
		t.Fatalf("then: %+v, want run b", got)
	}
	cancel()
	if _, ok := <-c; ok {
		t.Fatal("channel open after its context ended")
	}
	h.Publish(Change{RunID: "c"}) // no panic on the closed subscription
	h.Close()
	n := 0
	for range other {
		n++
	}
	if n != changeBuffer {
		t.Fatalf("other subscriber drained %d hints, want %d (its buffer)", n, changeBuffer)
	}
	if _, ok := <-h.Subscribe(t.Context()); ok {
		t.Fatal("subscription to a closed hub is open")
	}
}
