package state

import (
	"context"
	"encoding/json"
	"time"
)

// Session is the shared metadata of a 2025-11-25 MCP session: who it is
// bound to and what its client declared at initialize, so that any
// replica sharing the store accepts the session's ordinary requests. Its
// streams (server-to-client requests) stay on the replica that holds them.
type Session struct {
	ID           string
	Principal    string
	Protocol     string
	ClientInfo   json.RawMessage
	Capabilities json.RawMessage
	// Replica that created the session.
	Replica  string
	Created  time.Time
	LastSeen time.Time
	Expires  time.Time
}

// Sessions is implemented by drivers that several processes share
// (PostgreSQL). With bbolt, one process serves every session and keeps
// them in memory.
type Sessions interface {
	// PutSession records a new session, expiring ttl after now (an
	// existing id is refused with ErrExists).
	PutSession(ctx context.Context, s *Session, ttl time.Duration) error
	// GetSession returns a live session (ErrNotFound if missing or
	// expired).
	GetSession(ctx context.Context, id string) (*Session, error)
	// TouchSession records activity: last seen now, expiring ttl after.
	TouchSession(ctx context.Context, id string, ttl time.Duration) error
	// DeleteSession forgets a session (a client's DELETE).
	DeleteSession(ctx context.Context, id string) error
	// PruneSessions deletes expired sessions and returns how many.
	PruneSessions(ctx context.Context) (int, error)
}
