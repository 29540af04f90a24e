-- A customer keeps one deposit address per hot wallet key on a chain: when governance
-- migrates a chain's hot key to a new one (ADR 0017), new addresses come from the new key
-- while the old ones stay watched and swept.
ALTER TABLE deposit_addresses DROP CONSTRAINT deposit_addresses_pkey;
ALTER TABLE deposit_addresses ADD PRIMARY KEY (chain, wallet, customer_id);
-- The watcher reads each wallet's new addresses in the order they were made.
DROP INDEX deposit_addresses_order;
