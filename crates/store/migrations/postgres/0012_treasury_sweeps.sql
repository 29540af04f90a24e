-- Treasury sweeps: a hot wallet's balance above its high watermark moves to a whitelisted
-- cold address ('to_cold'). Like the other sweeps, custody does not change.
ALTER TABLE sweeps DROP CONSTRAINT sweeps_kind_check;
ALTER TABLE sweeps ADD CONSTRAINT sweeps_kind_check CHECK (kind IN ('sweep', 'top_up', 'to_cold'));
