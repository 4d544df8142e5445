-- Two hot paths of the pipeline read every open incident's rows for each incident they handle
-- (issue 6, the city benchmark: 300,000 incident rows and 263,000 timer rows fetched for 933
-- inputs). The duplicate check searched the time window (an hour of incidents at every filing,
-- 720,000 at 200 reports/s) and then filtered by place; it now searches the open incidents'
-- places. Cancelling a clock's timers (every merge, dispatch and closure) walked every pending
-- timer for its clock id.
CREATE INDEX incidents_open_place_idx ON incidents USING gist (point(lon, lat))
    WHERE status NOT IN ('closed', 'cancelled', 'merged');
CREATE INDEX timers_pending_clock_idx ON timers (clock_id) WHERE fired_at IS NULL AND cancelled_at IS NULL;
