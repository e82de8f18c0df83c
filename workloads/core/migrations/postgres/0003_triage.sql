-- Alert triage (acknowledge, ignore with a reason) and case closure with a resolution.
ALTER TABLE alerts ADD COLUMN status_reason TEXT;
ALTER TABLE alerts ADD COLUMN triaged_by TEXT;
ALTER TABLE alerts ADD COLUMN triaged_at TEXT;
ALTER TABLE cases ADD COLUMN resolution TEXT;
ALTER TABLE cases ADD COLUMN summary TEXT;
ALTER TABLE cases ADD COLUMN closed_at TEXT;
