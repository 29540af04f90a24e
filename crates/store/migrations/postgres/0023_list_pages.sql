-- Lists are read a page at a time from a cursor (time, id): a customer's risk events and all
-- withdrawals, newest first, walk an index instead of the table.
CREATE INDEX risk_events_customer ON risk_events (customer_id, at_ms, id);
CREATE INDEX withdrawals_created ON withdrawals (created_at_ms, id);
