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
    ack_message_id     TEXT,
    github_repo        TEXT,
    github_issue_number BIGINT,
    github_issue_url   TEXT,
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
    lease_token TEXT,
    first_attempt_at TIMESTAMPTZ,
    done_at     TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX deliveries_ticket ON deliveries (ticket_id);
CREATE INDEX deliveries_due ON deliveries (state, run_at);

-- An issue is matched back to its ticket (webhook) by repository and number.
CREATE UNIQUE INDEX tickets_github_issue ON tickets (github_repo, github_issue_number);

-- Every acknowledgement sent, for the per-address and per-domain caps.
CREATE TABLE ack_log (
    id      BIGSERIAL PRIMARY KEY,
    email   TEXT NOT NULL,
    domain  TEXT NOT NULL,
    sent_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX ack_log_email ON ack_log (email, sent_at);
CREATE INDEX ack_log_domain ON ack_log (domain, sent_at);
