-- Who asked for a withdrawal, signed (JSON of strongroom_governance::initiation::Initiation):
-- `member` is the initiating member's (the exchange's backend, a staff operator), `customer`
-- the customer's own. Written with the withdrawal in one transaction and handed to the signer
-- nodes, which check the intent against them.
CREATE TABLE withdrawal_initiations (
    withdrawal_id TEXT NOT NULL REFERENCES withdrawals(id),
    kind TEXT NOT NULL,
    initiation TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (withdrawal_id, kind)
);
