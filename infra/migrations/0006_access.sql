-- Access control (issue 5): sessions in PostgreSQL, login throttling, disabled users, photo
-- ownership, and the audit log widened from commands to every access decision worth proving.

-- Sessions survive a Redis restart (fault drill): they live here. Only the SHA-256 of the token
-- is stored, so a database leak hands out no usable session.
CREATE TABLE sessions (
    token_hash    text PRIMARY KEY,                 -- sha256 hex of the bearer token
    username      text NOT NULL REFERENCES users (username),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    idle_deadline timestamptz NOT NULL,             -- pushed back on use (sliding idle expiry)
    expires_at    timestamptz NOT NULL,             -- absolute end, whatever the use
    revoked_at    timestamptz,
    origin        text                              -- client IP at login
);
CREATE INDEX sessions_user_idx ON sessions (username) WHERE revoked_at IS NULL;
CREATE INDEX sessions_expiry_idx ON sessions (idle_deadline);

-- Failed logins counted per username and per client IP in a sliding window; a subject over the
-- limit is locked until locked_until.
CREATE TABLE login_throttle (
    scope        text NOT NULL CHECK (scope IN ('user', 'ip')),
    subject      text NOT NULL,
    failures     integer NOT NULL DEFAULT 0,
    window_start timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    PRIMARY KEY (scope, subject)
);

-- An administrator can disable an account; its sessions are revoked at once.
ALTER TABLE users
    ADD COLUMN disabled   boolean NOT NULL DEFAULT false,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Which incident a photo belongs to (the uploader's active task at upload), for object-level
-- read checks: the uploader, staff and the responders tasked on that incident.
ALTER TABLE photos
    ADD COLUMN incident_id text REFERENCES incidents (incident_id),
    ADD COLUMN task_id     text;
CREATE INDEX photos_incident_idx ON photos (incident_id);

-- The audit log now records logins (ok, failed, locked), logouts, reveals of personal data and
-- administrative changes beside the dispatcher's commands (kind 'command'). Still append-only:
-- the refuse_change trigger from 0003 stays. `seq` orders and pages it (newest first).
ALTER TABLE audit_log
    ADD COLUMN kind   text NOT NULL DEFAULT 'command'
        CHECK (kind IN ('command', 'login', 'logout', 'reveal', 'admin')),
    ADD COLUMN origin text,                         -- client IP (or the command's data.origin)
    ADD COLUMN seq    bigserial;
CREATE UNIQUE INDEX audit_log_seq_idx ON audit_log (seq);
CREATE INDEX audit_log_kind_idx ON audit_log (kind, seq);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, seq);
CREATE INDEX audit_log_incident_idx ON audit_log (incident_id, seq);
-- TRUNCATE bypasses row triggers: refuse it too.
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
