-- Kinds are open: a new kind of Jamf object (users, buildings, patch titles…) needs no
-- migration of the tables that name a kind. These columns took an enumerated list; they now
-- take any lower-case name (`computer`, `mobile_device`, `computers`, `user`…), which the
-- program writes from its one list of kinds. SQLite cannot change a CHECK in place: the two
-- tables are rebuilt once, rows, ids and indexes kept.
CREATE TABLE inventory_changes_open (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance    TEXT    NOT NULL,
    device_type TEXT    NOT NULL CHECK (device_type <> '' AND device_type NOT GLOB '*[^a-z_]*'),
    jamf_id     INTEGER NOT NULL,
    changed_at  TEXT,
    recorded_at TEXT    NOT NULL,
    field       TEXT    NOT NULL,
    old_value   TEXT,
    new_value   TEXT,
    run_id      INTEGER
);
INSERT INTO inventory_changes_open (id, instance, device_type, jamf_id, changed_at, recorded_at,
    field, old_value, new_value, run_id)
    SELECT id, instance, device_type, jamf_id, changed_at, recorded_at, field, old_value,
           new_value, run_id FROM inventory_changes;
DROP TABLE inventory_changes;
ALTER TABLE inventory_changes_open RENAME TO inventory_changes;
CREATE INDEX inventory_changes_device ON inventory_changes (instance, device_type, jamf_id, changed_at);
CREATE INDEX inventory_changes_field ON inventory_changes (field, changed_at);
CREATE INDEX inventory_changes_recorded ON inventory_changes (recorded_at);

CREATE TABLE webhook_events_open (
    id          INTEGER     PRIMARY KEY AUTOINCREMENT,
    instance    TEXT        NOT NULL,
    kind        TEXT        NOT NULL CHECK (kind <> '' AND kind NOT GLOB '*[^a-z_]*'),
    jamf_id     INTEGER     NOT NULL,
    event       TEXT        NOT NULL,
    action      TEXT        NOT NULL CHECK (action IN ('refresh', 'checkin', 'unenroll')),
    received_at TEXT        NOT NULL,
    event_at    TEXT,
    attempts    INTEGER     NOT NULL DEFAULT 0,
    not_before  TEXT        NOT NULL,
    last_error  TEXT
);
INSERT INTO webhook_events_open (id, instance, kind, jamf_id, event, action, received_at,
    event_at, attempts, not_before, last_error)
    SELECT id, instance, kind, jamf_id, event, action, received_at, event_at, attempts,
           not_before, last_error FROM webhook_events;
DROP TABLE webhook_events;
ALTER TABLE webhook_events_open RENAME TO webhook_events;
CREATE INDEX webhook_events_instance ON webhook_events (instance, id);
