-- Verification timers, escalation rounds and acks on incidents.
ALTER TABLE incidents ADD COLUMN external_url TEXT NOT NULL DEFAULT '';  -- Alertmanager's, from the latest delivery
ALTER TABLE incidents ADD COLUMN verify_until TEXT;                      -- while verifying: when it escalates still_firing
ALTER TABLE incidents ADD COLUMN escalated_at TEXT;
ALTER TABLE incidents ADD COLUMN round BIGINT NOT NULL DEFAULT 0;       -- escalation rounds (1, then one per renotify)
ALTER TABLE incidents ADD COLUMN round_at TEXT;                          -- when the latest round began
ALTER TABLE incidents ADD COLUMN acked_by TEXT;
CREATE INDEX incidents_verify ON incidents (verify_until) WHERE verify_until IS NOT NULL;

-- The outbox: every notification an escalation (or a resolution after one) owes, committed
-- in the same transaction as the change that owes it, then delivered by the sender.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,        -- idempotency: <incident>/<round>/<tier>/<channel> or <incident>/resolved/<channel>
    incident_id TEXT NOT NULL,
    kind        TEXT NOT NULL,               -- 'escalated' or 'resolved'
    round       BIGINT NOT NULL,
    tier        BIGINT NOT NULL,
    channel     TEXT NOT NULL,
    state       TEXT NOT NULL,               -- pending, sent, failed, cancelled
    due_at      TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    done_at     TEXT
);
CREATE INDEX outbox_due ON outbox (due_at) WHERE state = 'pending';
CREATE INDEX outbox_incident ON outbox (incident_id);
