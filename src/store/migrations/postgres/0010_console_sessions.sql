-- Console sessions, kept in the database so that every replica knows them: a login on one
-- replica is honored on the others, and a logout anywhere ends it everywhere. The cookie's
-- token is never stored, only its SHA-256. A session ends `expires_at` (its last use plus
-- the idle limit) or at logout; expired rows are removed in batches.
CREATE TABLE IF NOT EXISTS console_sessions (
    token_hash  TEXT PRIMARY KEY,            -- hex SHA-256 of the cookie's token
    user_name   TEXT NOT NULL,
    via_proxy   BIGINT NOT NULL,             -- 1: opened from a trusted proxy's header
    created_at  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_expires ON console_sessions (expires_at);
CREATE INDEX IF NOT EXISTS console_sessions_last_seen ON console_sessions (last_seen);
-- A runbook's page reads its runs (newest first) and their success rate from here.
CREATE INDEX IF NOT EXISTS incidents_runbook ON incidents (runbook, id);
