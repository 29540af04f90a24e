-- Refills of a hot wallet from cold storage that the server prepares for the offline
-- signers: the cold-tier intent it asked for (the treasury, when the hot wallet fell below its
-- low watermark), the approvals people sent for it, and, once governance allows the
-- movement, the signing bundle for the key holders. At most one refill is open per chain and
-- asset (the partial unique index), so two treasury passes never ask twice.
CREATE TABLE cold_refills (
    id TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    asset TEXT NOT NULL,
    wallet TEXT NOT NULL,
    intent TEXT NOT NULL,
    intent_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('awaiting_approvals', 'ready', 'done', 'expired')),
    approvals TEXT NOT NULL,
    bundle TEXT,
    waiting_for TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX cold_refills_one_open ON cold_refills (chain, asset)
    WHERE state IN ('awaiting_approvals', 'ready');
CREATE INDEX cold_refills_list ON cold_refills (created_at_ms, id);
