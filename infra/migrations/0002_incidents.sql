-- Intake inbox, incidents, their reports and their timeline.

-- Every accepted report, recorded before it is acknowledged. Unique on the source's own id,
-- which makes intake idempotent; published_at says the raw record reached Kafka.
CREATE TABLE reports (
    tracking_no  text PRIMARY KEY,
    source       text NOT NULL CHECK (source IN ('camera', 'hotline', 'app')),
    source_id    text NOT NULL,
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    incident_id  text,
    UNIQUE (source, source_id)
);
CREATE INDEX reports_unpublished_idx ON reports (received_at) WHERE published_at IS NULL;

CREATE TABLE incidents (
    incident_id    text PRIMARY KEY,
    status         text NOT NULL,
    source         text NOT NULL,
    category       text NOT NULL,
    severity       smallint NOT NULL CHECK (severity BETWEEN 1 AND 4),
    title          text NOT NULL,
    description    text NOT NULL DEFAULT '',
    address        text,
    lon            double precision NOT NULL,
    lat            double precision NOT NULL,
    grid_id        text,
    community_id   text,
    out_of_area    boolean NOT NULL DEFAULT false,
    occurred_at    timestamptz NOT NULL,
    due_at         timestamptz,
    recommended    jsonb NOT NULL DEFAULT '{}'::jsonb,
    record         jsonb NOT NULL,          -- the enriched record as last applied
    version        integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incidents_status_idx ON incidents (status, severity, occurred_at);
CREATE INDEX incidents_grid_idx ON incidents (grid_id);

CREATE TABLE incident_reports (
    incident_id text NOT NULL REFERENCES incidents (incident_id),
    tracking_no text NOT NULL REFERENCES reports (tracking_no),
    linked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incident_id, tracking_no)
);

-- Append-only timeline: one row per state-change event, numbered per incident.
CREATE TABLE incident_events (
    event_id    text PRIMARY KEY,
    incident_id text NOT NULL REFERENCES incidents (incident_id),
    version     integer NOT NULL,
    type        text NOT NULL,
    actor       text NOT NULL,
    at          timestamptz NOT NULL,
    public      boolean NOT NULL DEFAULT false,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    UNIQUE (incident_id, version)
);

-- Input events already applied by the dispatcher (replays change nothing).
CREATE TABLE processed_events (
    event_id     text PRIMARY KEY,
    incident_id  text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE RULE incident_events_no_update AS ON UPDATE TO incident_events DO INSTEAD NOTHING;
CREATE RULE incident_events_no_delete AS ON DELETE TO incident_events DO INSTEAD NOTHING;
