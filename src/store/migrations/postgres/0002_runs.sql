-- Runs: how many times an incident's runbook was started, and why it stopped.
ALTER TABLE incidents ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN message TEXT;

-- Alertmanager silences created by runbooks, expired when their incident ends.
CREATE TABLE silences (
    silence_id  TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    ends_at     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expired_at  TEXT
);
CREATE INDEX silences_pending ON silences (incident_id) WHERE expired_at IS NULL;
