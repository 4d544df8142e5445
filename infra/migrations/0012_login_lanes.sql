-- Failed logins slow guessing with growing delays in lanes (console/throttle.py) instead of
-- hard locks (issue 14: twenty failures from one address shut every login from it out for 15
-- minutes, the duty operator and the simulator's phones included, and anyone could keep the
-- duty operator's account locked). Lanes: a known device's own, or (user, address), the user,
-- the address. `window_start` is now the time of the lane's last failure; `locked_until` when
-- the lane takes its next attempt.
ALTER TABLE login_throttle DROP CONSTRAINT login_throttle_scope_check;
DELETE FROM login_throttle;
ALTER TABLE login_throttle ADD CONSTRAINT login_throttle_scope_check
    CHECK (scope IN ('device', 'pair', 'user', 'ip'));

-- Device tokens (OWASP's device cookies): a browser or phone that logged in as a user keeps a
-- token; its later attempts count in their own lane, so guessing elsewhere never slows it.
-- Only the SHA-256 of each token is stored.
CREATE TABLE login_devices (
    username    text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    device_hash text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_ok     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (username, device_hash)
);
