-- What several API/engine instances on one database coordinate through (issue 19). Like
-- request_nonces, this is coordination state, not business state: outside the audit chain.

-- Who does a piece of work: a singleton job (`leader/watcher/<chain>`) or one withdrawal
-- (`withdrawal/<id>`). A lease is held until `expires_at_ms` and renewed while worked; an
-- expired lease may be taken by anyone, and every change of holder raises `token` (a
-- fencing token: a holder that stalled past its lease can tell it was overtaken).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

-- Counters over a fixed window shared by every instance (failed sign-ins per address):
-- a limit is one limit however many instances a request may land on.
CREATE TABLE rate_counters (
    name TEXT PRIMARY KEY,
    window_start_ms BIGINT NOT NULL,
    hits BIGINT NOT NULL
);
CREATE INDEX rate_counters_window ON rate_counters (window_start_ms);

-- Messages to deliver at least once (operator alerts, customer notices): written before
-- anything is sent, claimed by one instance at a time, retried with backoff until
-- delivered, kept after delivery for the record.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    claimed_by TEXT,
    claimed_until_ms BIGINT NOT NULL DEFAULT 0,
    delivered_at_ms BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (delivered_at_ms, next_attempt_ms);

-- The engine and the metrics look withdrawals up by state (not by customer).
CREATE INDEX withdrawals_state ON withdrawals (state, created_at_ms);

-- What a singleton job last reported, for every instance's API to show (the treasury's last
-- pass and its history): written by the job's leader only.
CREATE TABLE job_reports (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- A withdrawal's destination is checked against deposit addresses case-insensitively; with
-- millions of addresses that must not be a scan.
CREATE INDEX deposit_addresses_lower ON deposit_addresses (chain, LOWER(address));
-- The deposit watcher reads new addresses incrementally, in the order they were made.
CREATE INDEX deposit_addresses_order ON deposit_addresses (chain, path_index);
