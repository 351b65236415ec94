-- vmcp state, version 3: run ids compare as bytes (COLLATE "C"), as in
-- the bbolt driver, whatever the database's default collation. Run ids
-- are base64url ("r_" + 22 characters of [A-Za-z0-9_-]); under a
-- language collation such as en_US.UTF-8, List's tie order (runs created
-- in the same microsecond) and its keyset cursor followed that
-- collation's rules instead, and every comparison paid for them.
ALTER TABLE vmcp_runs ALTER COLUMN id TYPE text COLLATE "C";
