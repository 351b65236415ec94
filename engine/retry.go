package engine

import (
	"math/rand/v2"
	"time"
)

// errClass is a bit set of the failure classes a retry policy covers.
type errClass uint8

const (
	classTransport errClass = 1 << iota // the call did not complete
	classTimeout                        // an attempt ran out of time
	classToolError                      // the tool answered isError: true
	classAll       = classTransport | classTimeout | classToolError
)

// retryPolicy is a compiled `retry:` (or the ToolHive on_error retry form).
type retryPolicy struct {
	maxAttempts int
	delay       time.Duration
	backoff     float64
	maxDelay    time.Duration
	jitter      bool
	on          errClass // 0 = all classes
}

// covers reports whether failures of class k are retried.
func (r *retryPolicy) covers(k errClass) bool {
	if r.on == 0 {
		return k&classAll != 0
	}
	return r.on&k != 0
}

// wait returns the delay before attempt number next (2 = first retry).
// With jitter the delay is drawn uniformly from [d/2, d].
func (r *retryPolicy) wait(next int) time.Duration {
	d := float64(r.delay)
	for i := 2; i < next; i++ {
		d *= r.backoff
		if r.maxDelay > 0 && d >= float64(r.maxDelay) {
			d = float64(r.maxDelay)
			break
		}
	}
	if r.maxDelay > 0 && d > float64(r.maxDelay) {
		d = float64(r.maxDelay)
	}
	if r.jitter && d > 0 {
		d = d/2 + rand.Float64()*d/2
	}
	return time.Duration(d)
}
