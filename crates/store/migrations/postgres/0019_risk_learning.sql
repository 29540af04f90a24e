-- What the risk worker learned (issue 21), kept outside any one process so a restart or
-- another instance carries on from it: each customer's profile (at most 4 KiB, encoded by
-- the risk crate) and the shared models, written together with how far the worker has read
-- the event streams. Derived state (the events and reviews it came from are kept), so like
-- the coordination tables it stays outside the audit chain.

-- One row a customer: the profile and the commit that last wrote it (instances that cache
-- profiles drop those a newer commit changed).
CREATE TABLE risk_profiles (
    customer TEXT PRIMARY KEY,
    data BYTEA NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX risk_profiles_version ON risk_profiles (version);

-- Named states written in the same commits: `models` (the shared models), `cursor` (where
-- the streams were read up to).
CREATE TABLE risk_learning (
    name TEXT PRIMARY KEY,
    data BYTEA NOT NULL,
    version BIGINT NOT NULL
);

-- The last commit. A commit names the one it was made on top of and is refused otherwise,
-- so an instance that lost the lead without noticing cannot write over its successor.
CREATE TABLE risk_learning_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
INSERT INTO risk_learning_head (id, version, updated_at_ms) VALUES (1, 0, 0);
