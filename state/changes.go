package state

import (
	"context"
	"sync"
)

// Change is a hint that a run changed: a committed transition someone may
// be waiting for (an answer or claim, a pause, a resume, a finish, a
// cancel, a deadline). It is only a hint: the state is always re-read from
// the store. Checkpoints send none (a waiter does not follow a run's steps
// through the store, only its transitions).
type Change struct {
	// RunID is the run that changed; "" means anything may have changed
	// (hints were lost: a listener reconnected, a subscriber fell behind),
	// so re-read every run you watch.
	RunID string
	// Status is the run's status after the change, when the driver knows
	// it ("" otherwise).
	Status string
}

// changeBuffer is how many hints a subscriber may lag behind before it
// gets a Change{} (re-read everything) instead of the hints it missed.
const changeBuffer = 256

// Hub fans change hints out to the subscribers of one process: the bbolt
// store publishes after each commit; the PostgreSQL driver publishes its
// own commits and what its LISTEN connection hears from other replicas.
// The zero Hub is ready to use. Publish never blocks.
type Hub struct {
	mu     sync.Mutex
	subs   map[*hubSub]struct{}
	closed bool
}

type hubSub struct {
	c    chan Change
	lost bool // a hint was dropped: send Change{} before the next one
}

// Subscribe returns a channel of hints from now until ctx ends or the hub
// is closed (then the channel is closed). A subscriber that does not keep
// up loses hints but then receives Change{}.
func (h *Hub) Subscribe(ctx context.Context) <-chan Change {
	s := &hubSub{c: make(chan Change, changeBuffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(s.c)
		return s.c
	}
	if h.subs == nil {
		h.subs = map[*hubSub]struct{}{}
	}
	h.subs[s] = struct{}{}
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[s]; ok {
			delete(h.subs, s)
			close(s.c)
		}
	})
	return s.c
}

// Publish sends c to every subscriber without blocking.
func (h *Hub) Publish(c Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.lost {
			select {
			case s.c <- Change{}:
				s.lost = false
			default:
				continue
			}
		}
		select {
		case s.c <- c:
		default:
			s.lost = true
		}
	}
}

// Close closes every subscriber's channel; later subscriptions get a
// closed channel.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		close(s.c)
	}
	h.subs = nil
}
