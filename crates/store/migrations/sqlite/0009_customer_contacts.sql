-- A customer's contact details for alerts (e-mail address, anti-phishing code), sealed with
-- AES-256-GCM under a per-record data key wrapped by the personal-data key (crypto::seal),
-- bound to the customer: the database alone reveals none of it.
CREATE TABLE customer_contacts (
    customer_id TEXT PRIMARY KEY REFERENCES customers(id),
    sealed TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
