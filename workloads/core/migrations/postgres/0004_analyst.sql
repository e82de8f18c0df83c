-- Analyst work on cases: the same tables and columns as migrations/sqlite/0004_analyst.sql
-- (integers BIGINT, times RFC 3339 UTC text, JSON documents text).

-- The first time anyone acknowledged, ignored, promoted or merged the alert: the end of
-- its time to acknowledge. Later triage does not move it.
ALTER TABLE alerts ADD COLUMN acknowledged_at TEXT;

-- Exactly one of case_id and alert_id is set. NULLs are distinct in both UNIQUE
-- constraints, so each applies only to its own owner.
CREATE TABLE observables (
    id         BIGSERIAL PRIMARY KEY,
    case_id    BIGINT  REFERENCES cases (id),
    alert_id   TEXT    REFERENCES alerts (id),
    type       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    ioc        BIGINT  NOT NULL DEFAULT 0,
    sighted    BIGINT  NOT NULL DEFAULT 0,
    -- A JSON array of strings.
    tags       TEXT    NOT NULL DEFAULT '[]',
    created_by TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    UNIQUE (case_id, type, value),
    UNIQUE (alert_id, type, value),
    CHECK ((case_id IS NULL) <> (alert_id IS NULL))
);
CREATE INDEX observables_value ON observables (value);

CREATE TABLE tasks (
    id         BIGSERIAL PRIMARY KEY,
    case_id    BIGINT  NOT NULL REFERENCES cases (id),
    title      TEXT    NOT NULL,
    assignee   TEXT,
    -- open, in_progress or done.
    status     TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
);
CREATE INDEX tasks_case ON tasks (case_id, id);

-- What happened to a case, in order: comments and events, each written in the
-- transaction of the change it describes.
CREATE TABLE case_timeline (
    id      BIGSERIAL PRIMARY KEY,
    case_id BIGINT  NOT NULL REFERENCES cases (id),
    at      TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    -- A JSON object; its keys depend on the kind.
    details TEXT    NOT NULL
);
CREATE INDEX case_timeline_case ON case_timeline (case_id, id);
