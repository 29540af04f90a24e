-- Account security state: accounts, sessions, devices, passkeys, 2FA, customer whitelist
-- entries and pending WebAuthn ceremonies. One row per record, the body JSON; personal data
-- and secrets inside a body are sealed by the caller (crypto::seal) and lookups use blind
-- indexes, so the database alone reveals neither. Every write is compare-and-swap on
-- version and audited as entity auth/<kind>/<id>.
CREATE TABLE auth_records (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    owner TEXT NOT NULL,
    lookup TEXT,
    body TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX auth_records_lookup ON auth_records (kind, lookup);
CREATE INDEX auth_records_owner ON auth_records (kind, owner);
