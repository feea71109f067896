-- The closed loop: GitHub webhook deliveries handled (each once) and what happened to a ticket's
-- issue after filing.

CREATE TABLE webhook_deliveries (
    delivery_id TEXT        PRIMARY KEY,
    event       TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE ticket_events (
    id           BIGSERIAL   PRIMARY KEY,
    ticket_id    BIGINT      NOT NULL REFERENCES tickets (id),
    at           TIMESTAMPTZ NOT NULL,
    kind         TEXT        NOT NULL CHECK (kind IN ('issue_closed', 'issue_reopened')),
    state_reason TEXT,
    delivery_id  TEXT
);

CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id);

-- A follow-up email answers one close event.
ALTER TABLE deliveries ADD COLUMN event_id BIGINT REFERENCES ticket_events (id);
