-- Dead letters: a message whose deliveries kept failing past its channel's limit stops
-- being retried and waits here, visible, until an operator sends it again.
ALTER TABLE outbox ADD COLUMN dead_at_ms BIGINT;
-- The dead-letter view lists a channel's dead messages.
CREATE INDEX outbox_dead ON outbox (channel, dead_at_ms);
