-- The closed loop: tasks per responder, durable timers and clocks, escalations, residents'
-- feedback and an append-only audit of every command.

ALTER TABLE incidents
    ADD COLUMN round         integer NOT NULL DEFAULT 0,       -- bumped on each reopening
    ADD COLUMN merged_into   text REFERENCES incidents (incident_id),
    ADD COLUMN family        text,
    ADD COLUMN dispatched_at timestamptz,
    ADD COLUMN first_accepted_at timestamptz,
    ADD COLUMN resolved_at   timestamptz,
    ADD COLUMN closed_at     timestamptz;

CREATE TABLE tasks (
    task_id      text PRIMARY KEY,
    incident_id  text NOT NULL REFERENCES incidents (incident_id),
    responder_id text NOT NULL REFERENCES responders (responder_id),
    responder_name text NOT NULL,
    responder_kind text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('response', 'verification')),
    state        text NOT NULL,
    version      integer NOT NULL,
    org          text NOT NULL,
    round        integer NOT NULL DEFAULT 0,
    reasons      text[] NOT NULL DEFAULT '{}',
    distance_m   double precision,
    eta_s        integer,
    note         text,
    photo_urls   text[] NOT NULL DEFAULT '{}',
    offered_at   timestamptz NOT NULL,
    accepted_at  timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX tasks_incident_idx ON tasks (incident_id);
-- A responder never holds two active tasks, whichever incidents' writers race for them.
CREATE UNIQUE INDEX tasks_one_active_per_responder ON tasks (responder_id)
    WHERE state IN ('offered', 'accepted', 'en_route', 'on_scene');

-- Step clocks (分级响应) and the durable timers that fire their warnings, deadlines and offer expiries.
CREATE TABLE clocks (
    clock_id      text PRIMARY KEY,
    incident_id   text NOT NULL REFERENCES incidents (incident_id),
    task_id       text,
    step          text NOT NULL,
    started_at    timestamptz NOT NULL,
    limit_s       double precision NOT NULL,
    warning_ratio double precision NOT NULL,
    stopped_at    timestamptz
);
CREATE INDEX clocks_incident_idx ON clocks (incident_id) WHERE stopped_at IS NULL;

CREATE TABLE timers (
    timer_id     text PRIMARY KEY,
    incident_id  text NOT NULL,
    clock_id     text,
    task_id      text,
    kind         text NOT NULL,
    fire_at      timestamptz NOT NULL,
    fired_at     timestamptz,
    cancelled_at timestamptz
);
CREATE INDEX timers_due_idx ON timers (fire_at) WHERE fired_at IS NULL AND cancelled_at IS NULL;

CREATE TABLE escalations (
    escalation_id   text PRIMARY KEY,
    incident_id     text NOT NULL REFERENCES incidents (incident_id),
    clock_id        text NOT NULL,
    level           text NOT NULL,
    message         text NOT NULL,
    at              timestamptz NOT NULL,
    acknowledged_by text,
    acknowledged_at timestamptz
);

CREATE TABLE feedback (
    feedback_id text PRIMARY KEY,
    incident_id text NOT NULL REFERENCES incidents (incident_id),
    tracking_no text NOT NULL REFERENCES reports (tracking_no),
    satisfied   boolean NOT NULL,
    fixed       boolean NOT NULL,
    rating      smallint CHECK (rating BETWEEN 1 AND 5),
    comment     text,
    at          timestamptz NOT NULL
);
CREATE INDEX feedback_incident_idx ON feedback (incident_id, at);

-- Every command, accepted or refused: who, what, when, outcome. Never edited.
CREATE TABLE audit_log (
    command_id  text PRIMARY KEY,
    incident_id text,
    action      text NOT NULL,
    actor       text NOT NULL,
    at          timestamptz NOT NULL,
    outcome     text NOT NULL,           -- applied | refused
    detail      text,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb
);
-- Refused loudly (a trigger, not a rule: rules would forbid INSERT ... ON CONFLICT).
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Responders log in on their phones (username = responder id).
ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('operator', 'commander', 'admin', 'viewer', 'responder'));
ALTER TABLE users ADD COLUMN responder_id text REFERENCES responders (responder_id);
