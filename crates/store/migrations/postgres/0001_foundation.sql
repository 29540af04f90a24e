-- Foundation schema. Amounts are base units as decimal text: SQLite has no 128-bit
-- integers, and the ledger does its arithmetic in Rust with checked u128 math.

CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    external_id TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE accounts (
    key TEXT PRIMARY KEY,
    customer_id TEXT REFERENCES customers(id),
    asset TEXT NOT NULL,
    bucket TEXT NOT NULL CHECK (bucket IN ('available', 'pending', 'custody')),
    balance TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX accounts_customer ON accounts (customer_id);

CREATE TABLE journal_entries (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    reference TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE postings (
    entry_id TEXT NOT NULL REFERENCES journal_entries(id),
    n BIGINT NOT NULL,
    account_key TEXT NOT NULL REFERENCES accounts(key),
    asset TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('debit', 'credit')),
    amount TEXT NOT NULL,
    balance_after TEXT NOT NULL,
    PRIMARY KEY (entry_id, n)
);
CREATE INDEX postings_account ON postings (account_key);

CREATE TABLE deposits (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    reference TEXT NOT NULL,
    entry_id TEXT NOT NULL REFERENCES journal_entries(id),
    created_at_ms BIGINT NOT NULL,
    UNIQUE (asset, reference)
);

CREATE TABLE withdrawals (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    asset TEXT NOT NULL,
    destination TEXT NOT NULL,
    amount TEXT NOT NULL,
    intent TEXT NOT NULL,
    intent_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX withdrawals_customer ON withdrawals (customer_id, created_at_ms);

CREATE TABLE idempotency_keys (
    principal TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (principal, key)
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    changes TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    leaf_hash TEXT NOT NULL
);

-- One row: the chain's head. Writers lock it first, which serialises appends (and so every
-- state change) and gives a fixed lock order.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    leaf_hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, leaf_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- The audit log is append-only. (A superuser can disable this trigger; `strongroom audit
-- verify` catches what they then change.)
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
