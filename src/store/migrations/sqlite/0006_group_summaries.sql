-- A storm group's summary belongs to the group, not to one of its incidents: acking or
-- resolving one member never cancels what the others are owed. `incident_id` of a summary
-- is the member it is told through (chosen again when it is sent).
ALTER TABLE outbox ADD COLUMN group_id TEXT;
UPDATE outbox SET group_id = substr(key, instr(key, '/group/') + 7, 26) WHERE key LIKE '%/group/%';
CREATE INDEX outbox_group ON outbox (group_id) WHERE group_id IS NOT NULL;
