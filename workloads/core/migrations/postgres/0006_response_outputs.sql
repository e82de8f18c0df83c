-- The respond stage's outputs (case operations, step results) the cases stage has
-- applied, by idempotency key: a redelivered output is applied once. No foreign key to
-- cases, so erasing a case leaves these keys (which hold no personal data) behind
-- without blocking the erasure.
CREATE TABLE response_outputs (
    idempotency_key TEXT    PRIMARY KEY,
    case_id         BIGINT  NOT NULL,
    kind            TEXT    NOT NULL,
    applied_at      TEXT    NOT NULL
);
CREATE INDEX response_outputs_case ON response_outputs (case_id);
