-- Durable queue of webhook events (written before the 202 answer), SQLite flavour.
-- A row is removed once its device has been refreshed, or after it ran out of attempts.
CREATE TABLE webhook_events (
    id          INTEGER     PRIMARY KEY AUTOINCREMENT,
    instance    TEXT        NOT NULL,
    kind        TEXT        NOT NULL CHECK (kind IN ('computers', 'mobile_devices')),
    jamf_id     INTEGER     NOT NULL,
    event       TEXT        NOT NULL,
    action      TEXT        NOT NULL CHECK (action IN ('refresh', 'checkin', 'unenroll')),
    received_at TEXT        NOT NULL,
    event_at    TEXT,
    attempts    INTEGER     NOT NULL DEFAULT 0,
    not_before  TEXT        NOT NULL,
    last_error  TEXT
);
CREATE INDEX webhook_events_instance ON webhook_events (instance, id);
