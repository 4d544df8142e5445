-- When the dispatcher filed each report into an incident. The intake's reconciler re-sends a
-- published report that is not filed only when it was lost, not merely late: the latest filing
-- says how far the pipeline has got (issue 6: under a backlog every late report was re-sent,
-- and the re-sends added to the backlog). Rows filed before this migration have none; the
-- reconciler then treats the pipeline as stalled, as it did before.
ALTER TABLE reports ADD COLUMN filed_at timestamptz;
CREATE INDEX reports_filed_at_idx ON reports (filed_at) WHERE filed_at IS NOT NULL;
