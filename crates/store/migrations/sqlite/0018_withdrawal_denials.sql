-- An approver's denial of a withdrawal: who, why and when. Written in the same transaction
-- that cancels the withdrawal (one denial ends the request for everyone), so a withdrawal
-- cancelled by a denial always says by whom and why.
CREATE TABLE withdrawal_denials (
    withdrawal_id TEXT PRIMARY KEY REFERENCES withdrawals(id),
    denied_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    denied_at_ms INTEGER NOT NULL
);
