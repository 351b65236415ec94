-- vmcp state, version 4: step results as their own rows (design §5.2), so
-- that a checkpoint after a step writes that step's few hundred bytes, not
-- every earlier step's output again.
--
-- A run whose checkpoint is split keeps in vmcp_runs.checkpoint the
-- engine's checkpoint with its "steps" object replaced by {} at byte offset
-- steps_at; each entry of that object is a row of vmcp_steps holding the
-- entry's value byte for byte (bytea: SPEC promises raw backend JSON in
-- step outputs). steps_at NULL: checkpoint is the whole checkpoint (every
-- run written before this migration, and a checkpoint that cannot be split
-- and reassembled to the same bytes).
ALTER TABLE vmcp_runs ADD COLUMN steps_at integer;

CREATE TABLE vmcp_steps (
  run_id text COLLATE "C" NOT NULL REFERENCES vmcp_runs ON DELETE CASCADE,
  step   text COLLATE "C" NOT NULL,   -- the step id (a key of the checkpoint's steps)
  output bytea NOT NULL,              -- the step's state (its value in steps), byte for byte
  epoch  bigint NOT NULL,             -- the run's epoch when it was written
  at     timestamptz NOT NULL,        -- the database time of that transition
  PRIMARY KEY (run_id, step));
