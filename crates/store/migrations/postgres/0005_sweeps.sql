-- Movements between our own addresses: sweeps from deposit addresses into a hot wallet, and
-- gas top-ups from a hot wallet to a deposit address holding tokens. Custody does not change
-- (only the network fee leaves, paid from the treasury); each has one chain_txs row.
CREATE TABLE sweeps (
    id TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('sweep', 'top_up')),
    wallet TEXT NOT NULL,
    path TEXT NOT NULL,
    from_address TEXT NOT NULL,
    to_address TEXT NOT NULL,
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    intent TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX sweeps_open ON sweeps (chain, state);
