-- Access control (API keys, a TLP and PAP per case) and the tamper-evident audit log, as
-- migrations/sqlite/0002_access_audit.sql.

-- TLP and PAP as ranks: 0 clear, 1 green, 2 amber, 3 amber+strict, 4 red; TheHive's
-- default for both is amber.
ALTER TABLE cases ADD COLUMN tlp BIGINT NOT NULL DEFAULT 2;
ALTER TABLE cases ADD COLUMN pap BIGINT NOT NULL DEFAULT 2;
ALTER TABLE cases ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN assignee TEXT;
-- A JSON array of strings.
ALTER TABLE cases ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';

-- An API key is `kst_<id>_<secret>`; only the argon2 hash of the secret is kept.
CREATE TABLE api_keys (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    role       TEXT    NOT NULL,
    tlp        BIGINT  NOT NULL,
    hash       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);

-- Each entry's hash covers its content and the previous entry's hash (see
-- docs/cases-api.md, "Audit log"). Entries are only ever inserted; the primary key on
-- `seq` refuses a second entry with the same number, so even a writer that skipped the
-- store's append lock could not fork the chain, only fail.
CREATE TABLE audit_log (
    seq         BIGINT  PRIMARY KEY,
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    object_kind TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,
    before      TEXT,
    after       TEXT,
    -- The chain hashes these digests, not the states, so erasing a state (GDPR) keeps
    -- it verifiable.
    before_digest TEXT,
    after_digest  TEXT,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
);
CREATE INDEX audit_object ON audit_log (object_kind, object_id);
