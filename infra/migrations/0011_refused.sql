-- A report or a command some stage refused for a permanent reason (a dead letter: a record no
-- retry can fix) is stuck, not late: the intake's reconciler and the outbox relay stop
-- re-sending it, the public status and the ops tail say so (issue 14: a report acknowledged
-- with a time no later stage could use was re-published every minute and showed 已受理 for
-- ever). Filing the report later (a replay after a fix) clears the mark.
ALTER TABLE reports ADD COLUMN refused_at timestamptz;
ALTER TABLE reports ADD COLUMN refused_stage text;
ALTER TABLE reports ADD COLUMN refused_reason text;
CREATE INDEX reports_refused_idx ON reports (refused_at) WHERE refused_at IS NOT NULL;

ALTER TABLE outbox ADD COLUMN refused_reason text;
