-- Durable delivery. What must reach Kafka is written here in the same transaction as the
-- state that needs it, published at once, and published again until its consumer confirms
-- it applied it: a broker that comes back empty, or a crash between commit and publish,
-- loses nothing. Consumers dedup by message id (the command id), so a re-send is harmless.
CREATE TABLE outbox (
    message_id text PRIMARY KEY,
    topic      text NOT NULL,
    key        text NOT NULL,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz,
    attempts   integer NOT NULL DEFAULT 0,
    done_at    timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (created_at) WHERE done_at IS NULL;

-- Reports acknowledged but not yet in an incident are published again (with back-off) until
-- they are: the intake's inbox reconciles against the dispatcher's incidents.
ALTER TABLE reports ADD COLUMN attempts integer NOT NULL DEFAULT 0;
CREATE INDEX reports_unfiled_idx ON reports (published_at) WHERE incident_id IS NULL;

-- Last known responder positions, copied from live state every few seconds, so a Redis that
-- comes back empty is rebuilt with where everyone was rather than with nobody available.
CREATE TABLE responder_positions (
    responder_id text PRIMARY KEY REFERENCES responders (responder_id),
    lon          double precision NOT NULL,
    lat          double precision NOT NULL,
    at_ms        bigint NOT NULL,
    accuracy_m   double precision
);

-- Console servers compare recently changed incidents with their boards (anti-entropy).
CREATE INDEX incidents_updated_idx ON incidents (updated_at);
