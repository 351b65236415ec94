-- vmcp state, version 1. Applied by state/postgres under an advisory lock,
-- in one transaction, in the schema named by the configuration.
CREATE TABLE vmcp_replicas (
  id           text PRIMARY KEY,
  started_at   timestamptz NOT NULL,
  heartbeat_at timestamptz NOT NULL,
  expires_at   timestamptz NOT NULL,
  version      text NOT NULL DEFAULT '',
  address      text NOT NULL DEFAULT '');

CREATE TABLE vmcp_definitions (
  hash   text PRIMARY KEY,             -- sha256 hex of source
  source bytea NOT NULL);              -- the workflow as the run started it

-- One row per run. doc is the versioned run document, byte for byte as the
-- bbolt driver stores it (bytea, not jsonb: jsonb reorders keys and
-- normalises numbers); summary is what List returns. owner and workflow
-- are bytea because text cannot hold every byte an identity may contain.
CREATE TABLE vmcp_runs (
  id           text PRIMARY KEY,
  owner        bytea NOT NULL,
  workflow     bytea NOT NULL,
  status       text NOT NULL,
  seq          bigint NOT NULL DEFAULT 0,   -- bumps at every pause: single-use answers
  pending_step bytea,
  deadline     timestamptz,                 -- of the pending question
  epoch        bigint NOT NULL DEFAULT 0,   -- fencing token, +1 at every claim
  holder       text,                        -- replica executing it (status running)
  def_hash     text REFERENCES vmcp_definitions,
  doc          bytea NOT NULL,
  summary      bytea NOT NULL,
  checkpoint   bytea,
  created_at   timestamptz NOT NULL,
  updated_at   timestamptz NOT NULL,
  finished_at  timestamptz);
CREATE INDEX vmcp_runs_created ON vmcp_runs (created_at DESC, id DESC);
CREATE INDEX vmcp_runs_owner_status ON vmcp_runs (owner, status, created_at DESC, id DESC);
CREATE INDEX vmcp_runs_owner ON vmcp_runs (owner, created_at DESC, id DESC);
CREATE INDEX vmcp_runs_status ON vmcp_runs (status, created_at DESC, id DESC);
CREATE INDEX vmcp_runs_workflow ON vmcp_runs (workflow, created_at DESC, id DESC);
CREATE INDEX vmcp_runs_deadline ON vmcp_runs (deadline) WHERE status = 'waiting';
CREATE INDEX vmcp_runs_holder ON vmcp_runs (holder) WHERE status = 'running';
CREATE INDEX vmcp_runs_finished ON vmcp_runs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE vmcp_keys (
  kid        text PRIMARY KEY,
  key        bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  retired_at timestamptz);
