-- Alerts, the cases that group them, and the response actions taken on them: the same
-- tables and columns as migrations/sqlite/0001_cases.sql, so that both stores decode
-- rows with the same code. Integers are BIGINT (SQLite's are 64-bit), times RFC 3339 UTC
-- text (fixed width, so they sort chronologically as text), JSON documents text.

CREATE TABLE cases (
    id          BIGSERIAL PRIMARY KEY,
    title       TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'open',
    group_key   TEXT    NOT NULL,
    rule_id     TEXT    NOT NULL,
    host        TEXT,
    first_seen  TEXT    NOT NULL,
    last_seen   TEXT    NOT NULL,
    alert_count BIGINT  NOT NULL DEFAULT 0,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE INDEX cases_group ON cases (group_key, status, last_seen);

CREATE TABLE alerts (
    id          TEXT    PRIMARY KEY,
    case_id     BIGINT  REFERENCES cases (id),
    rule_id     TEXT    NOT NULL,
    rule_title  TEXT    NOT NULL,
    level       TEXT    NOT NULL,
    level_rank  BIGINT  NOT NULL,
    host        TEXT,
    sensor      TEXT,
    timestamp   TEXT    NOT NULL,
    detected_at TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'new',
    intel_count BIGINT  NOT NULL DEFAULT 0,
    body        TEXT    NOT NULL
);
CREATE INDEX alerts_time ON alerts (timestamp);
CREATE INDEX alerts_case ON alerts (case_id);

CREATE TABLE actions (
    id                BIGSERIAL PRIMARY KEY,
    case_id           BIGINT  NOT NULL REFERENCES cases (id),
    alert_id          TEXT    NOT NULL,
    playbook          TEXT    NOT NULL,
    step              TEXT    NOT NULL,
    step_type         TEXT    NOT NULL,
    approval_required BIGINT  NOT NULL,
    status            TEXT    NOT NULL,
    params            TEXT    NOT NULL,
    reason            TEXT,
    decided_by        TEXT,
    result            TEXT,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    -- One action per playbook step per triggering alert: replays stay idempotent.
    UNIQUE (playbook, step, alert_id)
);
CREATE INDEX actions_status ON actions (status);
