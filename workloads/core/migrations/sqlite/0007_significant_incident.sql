-- NIS2 (art. 23): whether a case is a significant incident, a field of the case rather
-- than the `nis2:significant` tag the compliance report read before. Cases that carry the
-- tag keep their flag. Tags are stored as a JSON array of strings.
ALTER TABLE cases ADD COLUMN significant_incident INTEGER NOT NULL DEFAULT 0;
UPDATE cases SET significant_incident = 1 WHERE tags LIKE '%"nis2:significant"%';
