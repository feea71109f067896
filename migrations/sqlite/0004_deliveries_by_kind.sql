-- Workers claim and wait by kind: without this index every claim of emails also walked the jobs of
-- other kinds (GitHub filings waiting for configuration piled up and slowed every email claim).
CREATE INDEX deliveries_kind_due ON deliveries (kind, state, run_at);
