-- Approvers' signed approvals of withdrawals, as submitted. The store keeps them and hands
-- them on; it does not vouch for them: the engine and every signer node verify each one
-- against the governance log. One per approver and withdrawal (a new one replaces it).
CREATE TABLE approvals (
    withdrawal_id TEXT NOT NULL REFERENCES withdrawals(id),
    approver TEXT NOT NULL,
    approval TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (withdrawal_id, approver)
);
