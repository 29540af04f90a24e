-- The initiator's signed request for a withdrawal (JSON of
-- strongroom_governance::initiation::Initiation): written with the withdrawal in one
-- transaction, handed to the signer nodes, which check the intent against it.
CREATE TABLE withdrawal_initiations (
    withdrawal_id TEXT PRIMARY KEY REFERENCES withdrawals(id),
    initiation TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
