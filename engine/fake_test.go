package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/steps"
)

// fakeCaller scripts backend replies per "<backend>.<tool>". Each call
// takes the next reply of that tool (the last one repeats). A reply may
// sleep (virtual time under synctest), fail at the transport, or be an
// isError result.
type fakeCaller struct {
	mu      sync.Mutex
	replies map[string][]reply
	calls   []recordedCall
	now     func() time.Time
	start   time.Time
	// onCall, when set, is told of each call as it is made.
	onCall func(tool, args string)
	// defaultDelay applies to unscripted tools.
	defaultDelay time.Duration
}

type reply struct {
	Delay      time.Duration
	Structured any
	Text       string
	IsError    bool
	Transport  string // non-empty: fail with this transport error
	Panic      string
	// When, if set, makes the reply answer (every time, without being
	// consumed) the calls whose JSON arguments contain it.
	When string
}

type recordedCall struct {
	Tool string
	Args string
	At   time.Duration
}

func newFakeCaller() *fakeCaller {
	return &fakeCaller{replies: map[string][]reply{}, now: time.Now, start: time.Now()}
}

func (f *fakeCaller) on(tool string, rs ...reply) *fakeCaller {
	f.replies[tool] = append(f.replies[tool], rs...)
	return f
}

func (f *fakeCaller) CallTool(ctx context.Context, c *steps.Call) (*steps.Result, error) {
	key := c.Backend + "." + c.Tool
	f.mu.Lock()
	f.calls = append(f.calls, recordedCall{Tool: key, Args: string(c.Arguments), At: f.now().Sub(f.start)})
	if f.onCall != nil {
		f.onCall(key, string(c.Arguments))
	}
	rs := f.replies[key]
	var r reply
	var seq []reply
	matched := false
	for _, x := range rs {
		if x.When == "" {
			seq = append(seq, x)
		} else if !matched && strings.Contains(string(c.Arguments), x.When) {
			r, matched = x, true
		}
	}
	rs = seq
	switch {
	case matched:
	case len(rs) == 0:
		r = reply{Structured: map[string]any{"ok": true}, Delay: f.defaultDelay}
	case len(rs) == 1:
		r = rs[0]
	default:
		r = rs[0]
		for i, x := range f.replies[key] {
			if x.When == "" {
				f.replies[key] = append(append([]reply(nil), f.replies[key][:i]...), f.replies[key][i+1:]...)
				break
			}
		}
	}
	f.mu.Unlock()
	if r.Delay > 0 {
		t := time.NewTimer(r.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	if r.Panic != "" {
		panic(r.Panic)
	}
	if r.Transport != "" {
		return nil, fmt.Errorf("%s", r.Transport)
	}
	res := &steps.Result{IsError: r.IsError}
	text := r.Text
	if r.Structured != nil {
		b, _ := json.Marshal(r.Structured)
		res.StructuredContent = b
		if text == "" {
			text = string(b)
		}
	}
	res.Content, _ = json.Marshal([]map[string]any{{"type": "text", "text": text}})
	return res, nil
}

func (f *fakeCaller) recorded() []recordedCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedCall(nil), f.calls...)
}

// mustCompile loads and compiles a workflow from YAML text.
func mustCompile(t testing.TB, src string, cat Catalog) *Plan {
	t.Helper()
	wf, ds := dsl.LoadWorkflow("test.yaml", []byte(src))
	if len(ds) > 0 {
		t.Fatalf("load: %v", ds)
	}
	p, ds := Compile(wf, &CompileOptions{Catalog: cat})
	if len(ds) > 0 {
		t.Fatalf("compile: %v", ds)
	}
	return p
}
