-- An acknowledgement's slot under the per-address and per-domain caps is reserved, atomically,
-- before the email is sent: the row names its job, so a retry of that job keeps its slot and a
-- failed send gives it back. Addresses are counted case-insensitively: rows written before are
-- lowercased (the service lowercases new rows itself).
ALTER TABLE ack_log ADD COLUMN job_id BIGINT;
CREATE UNIQUE INDEX ack_log_job ON ack_log (job_id);
UPDATE ack_log SET email = lower(email), domain = lower(domain);

-- A close is told apart from the same close replayed under a new delivery id by the issue's
-- `closed_at`, as GitHub signed it.
ALTER TABLE ticket_events ADD COLUMN closed_at TEXT;
