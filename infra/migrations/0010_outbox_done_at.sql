-- The outbox relay, like the intake's reconciler (0009), re-sends a command only when it was
-- lost, not merely late: the last command the dispatcher confirmed says how far it has got
-- (issue 6: under a backlog the relay re-sent every command unconfirmed after 10 s, thousands
-- a minute, and the dispatcher spent its time replaying them). Pruning reads it too.
CREATE INDEX outbox_done_at_idx ON outbox (done_at) WHERE done_at IS NOT NULL;
