-- The head follows the log: appending a record moves it, in the same statement, so the two
-- can never disagree and a writer needs one round trip less.
CREATE FUNCTION audit_head_follows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audit_head SET seq = NEW.seq, leaf_hash = NEW.leaf_hash WHERE id = 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_head_follows AFTER INSERT ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_head_follows();
