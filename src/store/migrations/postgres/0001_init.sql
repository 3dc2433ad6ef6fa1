-- Incidents: one row per alert fingerprint per firing period.
CREATE TABLE incidents (
    id            TEXT PRIMARY KEY,          -- ULID
    fingerprint   TEXT NOT NULL,
    alertname     TEXT NOT NULL,
    labels        TEXT NOT NULL,             -- JSON object
    annotations   TEXT NOT NULL,             -- JSON object, latest seen
    generator_url TEXT NOT NULL,
    starts_at     TEXT NOT NULL,             -- the alert's startsAt, RFC 3339 with nanoseconds
    state         TEXT NOT NULL,
    is_open       BIGINT NOT NULL,          -- 1 while the alert is firing, else 0
    reason        TEXT,
    outcome       TEXT,
    route         TEXT,
    runbook       TEXT,
    deliveries    BIGINT NOT NULL,          -- notifications received for this incident
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    resolved_at   TEXT
);
-- At most one open incident per fingerprint, and one incident per firing period:
-- concurrent or repeated deliveries can never open two.
CREATE UNIQUE INDEX incidents_one_open ON incidents (fingerprint) WHERE is_open = 1;
CREATE UNIQUE INDEX incidents_period ON incidents (fingerprint, starts_at);
CREATE INDEX incidents_state ON incidents (state);

-- The audit log: append-only and hash-chained (see src/audit.rs).
CREATE TABLE audit (
    seq         BIGINT PRIMARY KEY,
    at          TEXT NOT NULL,
    event       TEXT NOT NULL,
    incident_id TEXT,
    detail      TEXT NOT NULL,               -- JSON, exactly as hashed
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_incident ON audit (incident_id) WHERE incident_id IS NOT NULL;
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
