-- vmcp state, version 2: shared metadata of 2025-11-25 MCP sessions, so
-- that any replica accepts an ordinary request of a session another one
-- created (design §4). principal is bytea like vmcp_runs.owner.
CREATE TABLE vmcp_sessions (
  id           text PRIMARY KEY,
  principal    bytea NOT NULL,              -- identity the session is bound to
  protocol     text NOT NULL,               -- negotiated protocol version
  client_info  bytea,                       -- the client's initialize clientInfo (JSON)
  capabilities bytea,                       -- the client's declared capabilities (JSON)
  replica      text NOT NULL DEFAULT '',    -- the replica that created it (holds its streams)
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_seen    timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL);
CREATE INDEX vmcp_sessions_expires ON vmcp_sessions (expires_at);
