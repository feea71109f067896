-- Ops tokens (stored as a SHA-256 of their secret part) and the append-only audit log.
-- Times are Unix milliseconds (UTC).

CREATE TABLE ops_tokens (
    id          INTEGER PRIMARY KEY,
    token_id    TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    secret_hash TEXT    NOT NULL,
    scopes      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT    NOT NULL,
    revoked_at  INTEGER
);

-- A name belongs to one live token at a time; a revoked name may be given again.
CREATE UNIQUE INDEX ops_tokens_live_name ON ops_tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    reason  TEXT    NOT NULL,
    detail  TEXT
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
