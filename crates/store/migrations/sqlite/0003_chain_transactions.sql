-- Withdrawals on chain: the transaction each one sends, and each hot wallet's next nonce.

-- The next nonce per (chain, wallet). Allocated in the same transaction that stores the
-- unsigned transaction, so a nonce is never handed out twice and never skipped.
CREATE TABLE wallet_nonces (
    chain TEXT NOT NULL,
    wallet TEXT NOT NULL,
    next_nonce INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (chain, wallet)
);

-- One transaction per withdrawal or sweep (owner_id is its id). The signed transaction is written once, before it is
-- ever broadcast; (chain, wallet, nonce) is unique, so two withdrawals can never share one.
CREATE TABLE chain_txs (
    owner_id TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    wallet TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    unsigned_tx TEXT NOT NULL,
    fee_asset TEXT NOT NULL,
    fee_reserved TEXT NOT NULL,
    signed_tx TEXT,
    txid TEXT UNIQUE,
    block_number INTEGER,
    block_hash TEXT,
    fee_paid TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (chain, wallet, nonce)
);
