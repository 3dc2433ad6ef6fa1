-- Retention (`store.retention`, see src/store/retention.rs): closed incidents older than the
-- retention are removed, and the oldest audit entries with them, behind a checkpoint.
-- Written to apply again over itself (a database rolled back to an older schema by hand).

-- The latest pruning of the audit log: entries up to `seq` were removed; `hash` is the last
-- removed entry's hash, which the first kept entry's prev_hash equals. The checkpoint entry
-- in the chain (event `audit_checkpoint`) records the same; this row is what tells the
-- trigger below a pruning from any other DELETE.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq   BIGINT PRIMARY KEY,
    hash  TEXT NOT NULL,
    at    TEXT NOT NULL
);
DROP TRIGGER IF EXISTS audit_no_update ON audit;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE FUNCTION audit_prune_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints) THEN
        RAISE EXCEPTION 'the audit log is append-only: only entries behind a checkpoint are removed';
    END IF;
    RETURN OLD;
END $$;
DROP TRIGGER IF EXISTS audit_no_delete ON audit;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_prune_only();

-- A job one replica at a time does (pruning): who holds it, until when unless renewed.
CREATE TABLE IF NOT EXISTS leases (
    name   TEXT PRIMARY KEY,
    owner  TEXT NOT NULL,
    until  TEXT NOT NULL
);

-- Closed incidents in the order they become removable (the state first, so that SQLite's
-- planner prefers these to incidents_state, which would scan and sort every incident of
-- the state), and what refers to an incident.
UPDATE incidents SET resolved_at = updated_at WHERE state = 'resolved' AND resolved_at IS NULL;
CREATE INDEX IF NOT EXISTS incidents_resolved_at ON incidents (state, resolved_at) WHERE state = 'resolved';
CREATE INDEX IF NOT EXISTS incidents_ignored_at ON incidents (state, created_at) WHERE state = 'ignored';
CREATE INDEX IF NOT EXISTS incidents_acked_seen ON incidents (state, last_seen_at) WHERE state = 'acknowledged';
CREATE INDEX IF NOT EXISTS incidents_group ON incidents (escalation_group) WHERE escalation_group IS NOT NULL;
CREATE INDEX IF NOT EXISTS silences_incident ON silences (incident_id);
CREATE INDEX IF NOT EXISTS used_links_incident ON used_links (incident_id);
