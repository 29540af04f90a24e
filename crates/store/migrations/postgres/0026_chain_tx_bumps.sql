-- Fee bumps: replacements of a broadcast transaction that the network leaves waiting, each
-- spending exactly the coins the first one spends (the signer nodes sign nothing else), so at
-- most one of them is ever mined. Version 0 is the transaction in chain_txs; bumps are 1, 2, …
-- A bump is stored unsigned first, then signed; the one that is mined becomes the
-- transaction of record (chain_txs) before its withdrawal is concluded.
CREATE TABLE chain_tx_bumps (
    owner_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    unsigned_tx TEXT NOT NULL,
    signed_tx TEXT,
    txid TEXT UNIQUE,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (owner_id, version)
);
