-- Ops tokens (stored as a SHA-256 of their secret part) and the append-only audit log.

CREATE TABLE ops_tokens (
    id          BIGSERIAL   PRIMARY KEY,
    token_id    TEXT        NOT NULL UNIQUE,
    name        TEXT        NOT NULL,
    secret_hash TEXT        NOT NULL,
    scopes      TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT        NOT NULL,
    revoked_at  TIMESTAMPTZ
);

-- A name belongs to one live token at a time; a revoked name may be given again.
CREATE UNIQUE INDEX ops_tokens_live_name ON ops_tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    id      BIGSERIAL   PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL,
    actor   TEXT        NOT NULL,
    action  TEXT        NOT NULL,
    target  TEXT        NOT NULL,
    reason  TEXT        NOT NULL,
    detail  TEXT
);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
