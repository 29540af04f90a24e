-- Treasury sweeps: a hot wallet's balance above its high watermark moves to a whitelisted
-- cold address ('to_cold'). Like the other sweeps, custody does not change. SQLite cannot
-- alter a CHECK constraint, so the table is rebuilt with the same rows.
CREATE TABLE sweeps_new (
    id TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('sweep', 'top_up', 'to_cold')),
    wallet TEXT NOT NULL,
    path TEXT NOT NULL,
    from_address TEXT NOT NULL,
    to_address TEXT NOT NULL,
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    intent TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
INSERT INTO sweeps_new SELECT id, chain, kind, wallet, path, from_address, to_address, asset, amount, intent, state, created_at_ms, updated_at_ms FROM sweeps;
DROP TABLE sweeps;
ALTER TABLE sweeps_new RENAME TO sweeps;
CREATE INDEX sweeps_open ON sweeps (chain, state);
