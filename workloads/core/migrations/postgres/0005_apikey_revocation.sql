-- API keys can be revoked (`kastell apikey revoke`): a revoked key is refused at its
-- next request. `last_used_at` is when a request last authenticated with the key, kept
-- to the minute so that reads do not become writes.
ALTER TABLE api_keys ADD COLUMN revoked_at TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
