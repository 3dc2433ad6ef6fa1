-- The nonces of the signed one-click links already used: a link works once. A row is
-- written in the same transaction as the action the link performed.
CREATE TABLE used_links (
    nonce       TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    action      TEXT NOT NULL,
    used_by     TEXT NOT NULL,
    used_at     TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX used_links_expires ON used_links (expires_at);
