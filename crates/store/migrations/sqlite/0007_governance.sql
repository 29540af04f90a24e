-- The governance log as the online side keeps it, to show it and to hand it to the signer
-- nodes with each signing request. Nodes pin the genesis and verify every entry themselves,
-- so a row written here by anyone but the members changes nothing they sign. The store
-- keeps order (one genesis, entries numbered 1, 2, ... with no gap) and one open proposal.
CREATE TABLE governance_genesis (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pin TEXT NOT NULL,
    genesis TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE governance_entries (
    seq INTEGER PRIMARY KEY,
    entry TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE governance_proposal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    entry TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
