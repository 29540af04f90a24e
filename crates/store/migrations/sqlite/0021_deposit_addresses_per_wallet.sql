-- A customer keeps one deposit address per hot wallet key on a chain: when governance
-- migrates a chain's hot key to a new one (ADR 0017), new addresses come from the new key
-- while the old ones stay watched and swept. SQLite cannot change a primary key in place.
CREATE TABLE deposit_addresses_new (
    chain TEXT NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    wallet TEXT NOT NULL,
    path_index INTEGER NOT NULL,
    address TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (chain, wallet, customer_id),
    UNIQUE (chain, wallet, path_index),
    UNIQUE (chain, address)
);
INSERT INTO deposit_addresses_new (chain, customer_id, wallet, path_index, address, created_at_ms)
    SELECT chain, customer_id, wallet, path_index, address, created_at_ms FROM deposit_addresses;
DROP TABLE deposit_addresses;
ALTER TABLE deposit_addresses_new RENAME TO deposit_addresses;
CREATE INDEX deposit_addresses_lower ON deposit_addresses (chain, LOWER(address));
