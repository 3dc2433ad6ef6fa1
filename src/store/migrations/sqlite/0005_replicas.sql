-- Leases on runs, claims on notifications, shared rate budgets: what several replicas of
-- medic on one database need (and one process uses the same way).
ALTER TABLE incidents ADD COLUMN lease_owner TEXT;      -- the process running it, while remediating
ALTER TABLE incidents ADD COLUMN lease_until TEXT;      -- when the run is presumed dead unless renewed
ALTER TABLE incidents ADD COLUMN in_flight_key TEXT;    -- its max_in_flight slot, while remediating
CREATE INDEX incidents_in_flight ON incidents (in_flight_key) WHERE state = 'remediating';
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;          -- the sender delivering it now
ALTER TABLE outbox ADD COLUMN claimed_until TEXT;

-- Rate limits shared by replicas (GCRA): the theoretical arrival time of each bucket.
CREATE TABLE rate_buckets (
    key     TEXT PRIMARY KEY,                 -- scope, rate and key values
    tat_us  BIGINT NOT NULL                   -- microseconds since the epoch
);
