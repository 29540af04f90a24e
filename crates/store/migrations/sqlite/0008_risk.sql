-- The risk engine's decisions on withdrawals and the review queue. A withdrawal is signed
-- only once its row here is cleared (allowed) or released by an analyst; a rejected or
-- blocked one is cancelled. One row per withdrawal, written once by the assessment, then
-- changed only by analysts' actions (assign, note, release, reject).
CREATE TABLE risk_reviews (
    withdrawal_id TEXT PRIMARY KEY REFERENCES withdrawals(id),
    customer_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    state TEXT NOT NULL,
    score INTEGER NOT NULL,
    assessment TEXT NOT NULL,
    assignee TEXT,
    notes TEXT NOT NULL,
    decided_by TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX risk_reviews_state ON risk_reviews (state, created_at_ms);
-- Events the risk engine learns from besides withdrawals: logins, security changes, and the
-- device and address a withdrawal was requested from.
CREATE TABLE risk_events (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX risk_events_at ON risk_events (at_ms, id);
