-- The risk engine follows decided reviews (cleared, released, rejected) by when they last
-- changed, not by reading the oldest ones again.
CREATE INDEX risk_reviews_updated ON risk_reviews (updated_at_ms, withdrawal_id);
