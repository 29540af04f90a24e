-- What an API client's token may do beyond its role (JSON, see TokenRestrictions): scopes,
-- an IP allow-list, and a sealed request-signing key. NULL: only the role limits it.
ALTER TABLE api_tokens ADD COLUMN restrictions TEXT;
