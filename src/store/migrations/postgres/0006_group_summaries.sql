-- A storm group's summary belongs to the group, not to one of its incidents: acking or
-- resolving one member never cancels what the others are owed. `incident_id` of a summary
-- is the member it is told through (chosen again when it is sent).
ALTER TABLE outbox ADD COLUMN group_id TEXT;
UPDATE outbox SET group_id = split_part(key, '/', 3) WHERE key LIKE '%/group/%';
-- Before, acking or resolving the group's first incident cancelled the summary: a member
-- still escalated was never told. Such a summary is owed again (sent at once if due; when
-- due, it goes out only if a member is still escalated then).
UPDATE outbox SET state = 'pending', done_at = NULL, claimed_by = NULL, claimed_until = NULL
 WHERE group_id IS NOT NULL AND kind = 'escalated' AND state = 'cancelled'
   AND EXISTS (SELECT 1 FROM incidents i JOIN escalation_groups g ON g.id = i.escalation_group
                WHERE i.escalation_group = outbox.group_id AND i.state = 'escalated'
                  AND i.id <> g.leader);
CREATE INDEX outbox_group ON outbox (group_id) WHERE group_id IS NOT NULL;
