-- The risk model registry (issue 21): every version of the deployed model, what it was
-- trained with and on, and which one decides (`live`), which one is scored beside it without
-- deciding (`shadow`), and which ones are kept to roll back to (`retired`). Each change is an
-- audited write: who promoted or rolled back what, when, and why.
CREATE TABLE risk_models (
    version BIGINT PRIMARY KEY,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    trained_on TEXT NOT NULL,
    -- The model's state (encoded by the risk crate), hex.
    state TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    -- When it last became live (rollback returns to the one live before).
    live_since_ms BIGINT
);
CREATE INDEX risk_models_status ON risk_models (status);
