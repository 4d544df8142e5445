-- A year of history (issue 6: a million stored incidents, bench.memory) must not be read row by
-- row on the hot paths. Without these, every filed report's duplicate check walked the whole
-- status index (59 ms at 1,000,000 incidents), GET /api/v1/incidents?status=all sorted every
-- incident (790 ms), and 三率 read every incident to find a week's (400 ms, every minute from
-- each console page).
CREATE INDEX incidents_occurred_idx ON incidents (occurred_at);  -- duplicates; history, newest first
CREATE INDEX incidents_created_idx ON incidents (created_at);    -- 三率 over a window of filing days
