-- Approval before a run: an incident of a route with `approval` waits in
-- `awaiting_approval` until `approval_until`; its plan (what a dry run of the runbook did,
-- JSON) is written once, before the request goes out; the approval record (who, when) is
-- what lets it be queued and run at all.
ALTER TABLE incidents ADD COLUMN approval_until TEXT;
ALTER TABLE incidents ADD COLUMN plan TEXT;
ALTER TABLE incidents ADD COLUMN approved_by TEXT;
ALTER TABLE incidents ADD COLUMN approved_at TEXT;
CREATE INDEX incidents_awaiting ON incidents (approval_until) WHERE state = 'awaiting_approval';
