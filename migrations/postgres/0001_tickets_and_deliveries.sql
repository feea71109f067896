-- Tickets and their delivery jobs (the outbox), written in one transaction.

CREATE TABLE tickets (
    id                 BIGSERIAL   PRIMARY KEY,
    reference          TEXT        NOT NULL UNIQUE,
    created_at         TIMESTAMPTZ NOT NULL,
    source             TEXT        NOT NULL CHECK (source IN ('api', 'form')),
    name               TEXT        NOT NULL,
    email              TEXT        NOT NULL,
    picked_type        TEXT        NOT NULL,
    type               TEXT        NOT NULL,
    status             TEXT        NOT NULL CHECK (status IN ('received', 'unsupported')),
    unsupported_reason TEXT,
    needs_triage       BOOLEAN     NOT NULL DEFAULT FALSE,
    signals            JSONB       NOT NULL DEFAULT '[]',
    subject            TEXT        NOT NULL,
    message            TEXT        NOT NULL,
    account            TEXT,
    page_url           TEXT,
    idempotency_key    TEXT        UNIQUE,
    content_hash       TEXT        NOT NULL
);

-- Newest first is id order; no further index on tickets, so that inserting stays cheap.

CREATE TABLE deliveries (
    id          BIGSERIAL   PRIMARY KEY,
    ticket_id   BIGINT      NOT NULL REFERENCES tickets (id),
    kind        TEXT        NOT NULL CHECK (kind IN ('ack_email', 'github_issue', 'followup_email')),
    state       TEXT        NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'running', 'done', 'dead', 'skipped')),
    attempts    INTEGER     NOT NULL DEFAULT 0,
    run_at      TIMESTAMPTZ NOT NULL,
    lease_until TIMESTAMPTZ,
    last_error  TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX deliveries_ticket ON deliveries (ticket_id);
CREATE INDEX deliveries_due ON deliveries (state, run_at);
