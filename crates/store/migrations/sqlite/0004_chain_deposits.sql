-- Deposits watched on chain: customers' deposit addresses, the blocks the watcher has read
-- (to notice reorganisations), and every transfer into one of our addresses.

-- One address per customer and chain, derived from a hot wallet's threshold key at the
-- non-hardened BIP-32 path [0, path_index].
CREATE TABLE deposit_addresses (
    chain TEXT NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    wallet TEXT NOT NULL,
    path_index INTEGER NOT NULL,
    address TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (chain, customer_id),
    UNIQUE (chain, wallet, path_index),
    UNIQUE (chain, address)
);

-- Where the watcher goes on from, per chain.
CREATE TABLE chain_cursors (
    chain TEXT PRIMARY KEY,
    next_block INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- The hash of each block the watcher read; a different hash at the same height later means
-- a reorganisation.
CREATE TABLE chain_blocks (
    chain TEXT NOT NULL,
    number INTEGER NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (chain, number)
);

-- Transfers into our addresses. state: seen (in a canonical block), orphaned (its block was
-- reorganised away), dropped (never re-included, never credited), reversed (its credit was
-- taken back), held (its credit could not be taken back: alert). deposit_id is set once
-- credited.
CREATE TABLE chain_deposits (
    chain TEXT NOT NULL,
    txid TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    to_address TEXT NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    block_number INTEGER NOT NULL,
    block_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('seen', 'orphaned', 'dropped', 'reversed', 'held')),
    deposit_id TEXT REFERENCES deposits(id),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (chain, txid, log_index)
);
