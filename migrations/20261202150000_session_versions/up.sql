-- A per-user session version, replicated like every row: tokens and cookies carry the version
-- they were issued under, and a logout raises it (a write through the writer), so every input
-- node refuses the older ones once it reads the new version. Added last so a snapshot's
-- `INSERT ... SELECT *` lines its columns up with any node's table.
ALTER TABLE users ADD COLUMN session_version BIGINT NOT NULL DEFAULT 0 CHECK (session_version >= 0);
