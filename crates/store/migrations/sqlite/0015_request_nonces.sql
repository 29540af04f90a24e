-- Nonces of signed API requests, shared by every API instance so a request replayed to
-- another instance is refused too. Security state, not business state: kept outside the
-- audit chain, and rows past their expiry are deleted as new nonces arrive.
CREATE TABLE request_nonces (
    token_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (token_id, nonce)
);
CREATE INDEX request_nonces_expiry ON request_nonces (expires_at_ms);
