-- The last refusal the signer nodes gave for a withdrawal: the node's typed reason, as the
-- node sent it (JSON of strongroom_governance::refusal::Refusal), so the API can say why a
-- withdrawal does not move. One per withdrawal (a new finding replaces it).
CREATE TABLE signer_refusals (
    withdrawal_id TEXT PRIMARY KEY REFERENCES withdrawals(id),
    refusal TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
