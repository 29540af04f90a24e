-- Coins a built transaction spends, on chains of unspent outputs (Bitcoin): each coin has
-- one owner (a withdrawal or sweep), written in the same transaction that stores the
-- unsigned transaction, so two withdrawals are never built on one coin (the second build
-- fails and chooses its coins again). The owner may build again on its own coins (a fee
-- bump replaces its transaction).
CREATE TABLE coin_reservations (
    chain TEXT NOT NULL,
    coin TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (chain, coin)
);
CREATE INDEX coin_reservations_owner ON coin_reservations (owner_id);
