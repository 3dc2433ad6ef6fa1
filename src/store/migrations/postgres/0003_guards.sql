-- Circuit breakers, one per route and key-label values; `data` is the breaker's state
-- as JSON (see src/guard/breaker.rs).
CREATE TABLE breakers (
    id         TEXT PRIMARY KEY,
    route      TEXT NOT NULL,
    key        TEXT NOT NULL,                -- JSON object of the key labels
    state      TEXT NOT NULL,
    data       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Operator settings that survive restarts (the pause switch).
CREATE TABLE settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,                -- JSON
    updated_at TEXT NOT NULL
);

-- Escalations of one route and reason close in time form a group (storm handling).
CREATE TABLE escalation_groups (
    id        TEXT PRIMARY KEY,
    route     TEXT NOT NULL,
    reason    TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    size      BIGINT NOT NULL,
    leader    TEXT NOT NULL                  -- the first incident: its notification covers the group
);
CREATE INDEX escalation_groups_latest ON escalation_groups (route, reason, opened_at);
ALTER TABLE incidents ADD COLUMN escalation_group TEXT;
