package state

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
)

// groupCommit shares bbolt commits (and their fsyncs) between concurrent
// transitions, without a batching delay: a transition that finds no
// commit in flight commits at once, alone; transitions that arrive while
// a commit is in flight queue, and the next commit takes up to max of
// them in one transaction, led by one of the queued callers as soon as
// the previous commit returns. Under load the batch size follows the
// arrival rate during one fsync; a lone transition never waits.
//
// A function that fails (an error, not a refusal: refusals return nil and
// report through their closure) rolls the shared transaction back; it
// gets its error, and the others are committed again without it, so a
// failing transition never fails its neighbours. Their functions then run
// a second time: every function must derive everything from tx and reset
// what it reports (as with bbolt's Batch). A commit that fails (the fsync,
// a closed database) fails every member of the batch.
type groupCommit struct {
	db  *bbolt.DB
	max int

	mu      sync.Mutex
	busy    bool // a leader is committing
	pending []*groupCall
	// commits and calls count what was committed, for benchmarks/tests;
	// inTx is the time spent running the transitions' functions inside
	// the shared transactions (the serial part of a commit besides bbolt's
	// own), for benchmarks.
	commits, calls uint64
	inTx           atomic.Int64
}

type groupCall struct {
	fn  func(*bbolt.Tx) error
	err error
	// wake receives nil once the call's batch committed (err is set), or
	// the next batch to commit when this caller is to lead it.
	wake chan []*groupCall
}

// counts returns how many commits the committer made and how many
// transitions they carried.
func (g *groupCommit) counts() (commits, calls uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.commits, g.calls
}

func (g *groupCommit) do(fn func(*bbolt.Tx) error) error {
	c := &groupCall{fn: fn, wake: make(chan []*groupCall, 1)}
	g.mu.Lock()
	if !g.busy {
		g.busy = true
		g.mu.Unlock()
		g.lead([]*groupCall{c}, c)
		return c.err
	}
	g.pending = append(g.pending, c)
	g.mu.Unlock()
	if batch := <-c.wake; batch != nil {
		g.lead(batch, c)
	}
	return c.err
}

// lead commits batch (self is the calling member), wakes its other
// members, and hands the queue, if any, to a new leader.
func (g *groupCommit) lead(batch []*groupCall, self *groupCall) {
	g.commit(batch)
	g.mu.Lock()
	g.commits++
	g.calls += uint64(len(batch))
	var next []*groupCall
	if n := len(g.pending); n > 0 {
		k := min(n, g.max)
		next = append([]*groupCall(nil), g.pending[:k]...)
		g.pending = append(g.pending[:0], g.pending[k:]...)
	} else {
		g.busy = false
	}
	g.mu.Unlock()
	if next != nil {
		next[0].wake <- next
	}
	for _, c := range batch {
		if c != self {
			c.wake <- nil
		}
	}
}

// commit runs every function of batch in one transaction; a failing one
// is taken out with its error and the rest committed again without it.
func (g *groupCommit) commit(batch []*groupCall) {
	for len(batch) > 0 {
		failed := -1
		err := g.db.Update(func(tx *bbolt.Tx) error {
			t0 := time.Now()
			defer func() { g.inTx.Add(int64(time.Since(t0))) }()
			for i, c := range batch {
				if err := call(c.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, c := range batch {
				c.err = err
			}
			return
		}
		batch[failed].err = err
		batch = append(batch[:failed:failed], batch[failed+1:]...)
	}
}

// call runs fn, turning a panic into its error (the transaction is rolled
// back and the other transitions of the batch go on).
func call(fn func(*bbolt.Tx) error, tx *bbolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("state transition panicked: %v", p)
		}
	}()
	return fn(tx)
}
