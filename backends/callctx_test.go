package backends

import (
	"context"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/backends/outauth"
)

type ctxMark struct{}

// A message from a stdio backend goes to the caller whose call is in
// flight; with calls of several principals in flight it goes to nobody.
func TestCallCtxRefusesToGuessBetweenPrincipals(t *testing.T) {
	c := &Conn{inflight: map[uint64]*callInfo{}, tokens: map[string]*callInfo{}}
	as := func(p, mark string) context.Context {
		ctx := outauth.WithSubject(context.Background(), outauth.Subject{Principal: p})
		return context.WithValue(ctx, ctxMark{}, mark)
	}
	if got := c.callCtx(context.Background()); got.Value(ctxMark{}) != nil || Ambiguous(got) {
		t.Fatal("nothing in flight: want a context of no caller")
	}
	c.inflight[1] = &callInfo{ctx: as("alice", "a1"), start: time.Now()}
	c.inflight[2] = &callInfo{ctx: as("alice", "a2"), start: time.Now().Add(time.Millisecond)}
	if got := c.callCtx(context.Background()); got.Value(ctxMark{}) != "a2" {
		t.Fatalf("one principal in flight: got call %v, want the latest (a2)", got.Value(ctxMark{}))
	}
	c.inflight[3] = &callInfo{ctx: as("bob", "b1"), start: time.Now().Add(2 * time.Millisecond)}
	if got := c.callCtx(context.Background()); !Ambiguous(got) || got.Value(ctxMark{}) != nil {
		t.Fatalf("alice and bob in flight: got call %v, want an ambiguous context", got.Value(ctxMark{}))
	}
}
