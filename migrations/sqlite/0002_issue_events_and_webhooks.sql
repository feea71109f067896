-- The closed loop: GitHub webhook deliveries handled (each once) and what happened to a ticket's
-- issue after filing. Times are Unix milliseconds (UTC).

CREATE TABLE webhook_deliveries (
    delivery_id TEXT    PRIMARY KEY,
    event       TEXT    NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE TABLE ticket_events (
    id           INTEGER PRIMARY KEY,
    ticket_id    INTEGER NOT NULL REFERENCES tickets (id),
    at           INTEGER NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('issue_closed', 'issue_reopened')),
    state_reason TEXT,
    delivery_id  TEXT
);

CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id);

-- A follow-up email answers one close event.
ALTER TABLE deliveries ADD COLUMN event_id INTEGER REFERENCES ticket_events (id);
