-- Tickets and their delivery jobs (the outbox), written in one transaction.
-- Times are Unix milliseconds (UTC).

CREATE TABLE tickets (
    id                 INTEGER PRIMARY KEY,
    reference          TEXT    NOT NULL UNIQUE,
    created_at         INTEGER NOT NULL,
    source             TEXT    NOT NULL CHECK (source IN ('api', 'form')),
    name               TEXT    NOT NULL,
    email              TEXT    NOT NULL,
    picked_type        TEXT    NOT NULL,
    type               TEXT    NOT NULL,
    status             TEXT    NOT NULL CHECK (status IN ('received', 'unsupported')),
    unsupported_reason TEXT,
    needs_triage       INTEGER NOT NULL DEFAULT 0,
    signals            TEXT    NOT NULL DEFAULT '[]',
    subject            TEXT    NOT NULL,
    message            TEXT    NOT NULL,
    account            TEXT,
    page_url           TEXT,
    ack_message_id     TEXT,
    github_repo        TEXT,
    github_issue_number INTEGER,
    github_issue_url   TEXT,
    idempotency_key    TEXT    UNIQUE,
    content_hash       TEXT    NOT NULL
);

-- Newest first is id order; no further index on tickets, so that inserting stays cheap.

CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    ticket_id   INTEGER NOT NULL REFERENCES tickets (id),
    kind        TEXT    NOT NULL CHECK (kind IN ('ack_email', 'github_issue', 'followup_email')),
    state       TEXT    NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'running', 'done', 'dead', 'skipped')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    run_at      INTEGER NOT NULL,
    lease_until INTEGER,
    last_error  TEXT,
    lease_token TEXT,
    first_attempt_at INTEGER,
    done_at     INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE INDEX deliveries_ticket ON deliveries (ticket_id);
CREATE INDEX deliveries_due ON deliveries (state, run_at);

-- An issue is matched back to its ticket (webhook) by repository and number.
CREATE UNIQUE INDEX tickets_github_issue ON tickets (github_repo, github_issue_number);

-- Every acknowledgement sent, for the per-address and per-domain caps.
CREATE TABLE ack_log (
    id      INTEGER PRIMARY KEY,
    email   TEXT NOT NULL,
    domain  TEXT NOT NULL,
    sent_at INTEGER NOT NULL
);

CREATE INDEX ack_log_email ON ack_log (email, sent_at);
CREATE INDEX ack_log_domain ON ack_log (domain, sent_at);
