-- A case read (`GET /api/v1/cases/{id}`) lists the case's alerts by event time and its
-- actions by id. Without these the alerts of a case were sorted after the lookup and the
-- actions table was scanned whole on every read.
CREATE INDEX alerts_case_time ON alerts (case_id, timestamp, id);
DROP INDEX alerts_case;
CREATE INDEX actions_case ON actions (case_id, id);
