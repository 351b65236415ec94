package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vmcp-dev/vmcp/state"
)

var _ state.Sessions = (*Store)(nil)

// PutSession records a new session (vmcp_sessions), created by this
// replica, expiring ttl after the database's now.
func (s *Store) PutSession(ctx context.Context, ss *state.Session, ttl time.Duration) error {
	if ss == nil || ss.ID == "" || ss.Principal == "" {
		return fmt.Errorf("put session: no id or principal: %w", state.ErrInvalid)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO vmcp_sessions (id, principal, protocol, client_info, capabilities, replica, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, now() + $7::interval)`,
		ss.ID, []byte(ss.Principal), ss.Protocol, nilIfEmpty(ss.ClientInfo), nilIfEmpty(ss.Capabilities), s.me, ttl)
	if isUniqueViolation(err) {
		return fmt.Errorf("put session %s: %w", ss.ID, state.ErrExists)
	}
	return mapErr(err)
}

// GetSession returns a live session, or state.ErrNotFound.
func (s *Store) GetSession(ctx context.Context, id string) (*state.Session, error) {
	var ss state.Session
	var principal []byte
	err := s.pool.QueryRow(ctx, `SELECT id, principal, protocol, client_info, capabilities, replica, created_at, last_seen, expires_at
		FROM vmcp_sessions WHERE id = $1 AND expires_at > now()`, id).
		Scan(&ss.ID, &principal, &ss.Protocol, &ss.ClientInfo, &ss.Capabilities, &ss.Replica, &ss.Created, &ss.LastSeen, &ss.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("session %s: %w", id, state.ErrNotFound)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("session %s: %w", id, err))
	}
	ss.Principal = string(principal)
	return &ss, nil
}

// TouchSession extends a live session: last seen now, expiring ttl after.
func (s *Store) TouchSession(ctx context.Context, id string, ttl time.Duration) error {
	tag, err := s.pool.Exec(ctx, `UPDATE vmcp_sessions SET last_seen = now(), expires_at = now() + $2::interval
		WHERE id = $1 AND expires_at > now()`, id, ttl)
	if err != nil {
		return mapErr(fmt.Errorf("touch session %s: %w", id, err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("touch session %s: %w", id, state.ErrNotFound)
	}
	return nil
}

// DeleteSession forgets a session.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM vmcp_sessions WHERE id = $1`, id)
	return mapErr(err)
}

// PruneSessions deletes expired sessions.
func (s *Store) PruneSessions(ctx context.Context) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM vmcp_sessions WHERE expires_at <= now()`)
	if err != nil {
		return 0, mapErr(fmt.Errorf("prune sessions: %w", err))
	}
	return int(tag.RowsAffected()), nil
}
