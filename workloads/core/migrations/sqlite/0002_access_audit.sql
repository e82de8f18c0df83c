-- Access control (API keys, a TLP and PAP per case) and the tamper-evident audit log.
-- Kept to SQL that PostgreSQL also runs, apart from the key types of the sequences.

-- TLP and PAP as ranks: 0 clear, 1 green, 2 amber, 3 amber+strict, 4 red; TheHive's
-- default for both is amber.
ALTER TABLE cases ADD COLUMN tlp INTEGER NOT NULL DEFAULT 2;
ALTER TABLE cases ADD COLUMN pap INTEGER NOT NULL DEFAULT 2;
ALTER TABLE cases ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN assignee TEXT;
-- A JSON array of strings.
ALTER TABLE cases ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';

-- An API key is `kst_<id>_<secret>`; only the argon2 hash of the secret is kept.
CREATE TABLE api_keys (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    role       TEXT    NOT NULL,
    tlp        INTEGER NOT NULL,
    hash       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);

-- Each entry's hash covers its content and the previous entry's hash (see
-- docs/cases-api.md, "Audit log"). Entries are only ever inserted.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
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
