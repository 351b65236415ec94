package postgres_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/state"
)

// A session recorded by one replica is read by another; it expires, is
// touched, refused twice, deleted and pruned.
func TestSessionsShared(t *testing.T) {
	dsn, o := freshSchema(t)
	a, b := replica(t, dsn, *o), replica(t, dsn, *o)
	ctx := t.Context()
	in := &state.Session{ID: "mcp-session-1", Principal: "alice", Protocol: "2025-11-25",
		ClientInfo: json.RawMessage(`{"name":"c","version":"1"}`), Capabilities: json.RawMessage(`{"elicitation":{}}`)}
	if err := a.PutSession(ctx, in, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.PutSession(ctx, in, time.Minute); !errors.Is(err, state.ErrExists) {
		t.Fatalf("second put: %v", err)
	}
	got, err := b.GetSession(ctx, in.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Principal != "alice" || got.Protocol != "2025-11-25" || string(got.Capabilities) != `{"elicitation":{}}` ||
		string(got.ClientInfo) != `{"name":"c","version":"1"}` || got.Replica != a.ReplicaID() || !got.Expires.After(got.LastSeen) {
		t.Fatalf("session read on B: %+v", got)
	}
	if _, err := b.GetSession(ctx, "mcp-session-missing"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("missing session: %v", err)
	}
	// Expired: not found, not touchable, pruned.
	if err := b.TouchSession(ctx, in.ID, -time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetSession(ctx, in.ID); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("expired session: %v", err)
	}
	if err := a.TouchSession(ctx, in.ID, time.Minute); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("touch of an expired session: %v", err)
	}
	if n, err := a.PruneSessions(ctx); err != nil || n != 1 {
		t.Fatalf("prune: %d, %v", n, err)
	}
	in.ID = "mcp-session-2"
	if err := a.PutSession(ctx, in, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteSession(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetSession(ctx, in.ID); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("deleted session: %v", err)
	}
}
