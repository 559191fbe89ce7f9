-- The change history: one row per changed field of a device, written in the transaction that
-- writes the record (see README "Change history"). Timestamps RFC 3339 text in UTC.
CREATE TABLE inventory_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance    TEXT    NOT NULL,
    device_type TEXT    NOT NULL CHECK (device_type IN ('computer', 'mobile_device')),
    jamf_id     INTEGER NOT NULL,
    changed_at  TEXT,
    recorded_at TEXT    NOT NULL,
    field       TEXT    NOT NULL,
    old_value   TEXT,
    new_value   TEXT,
    run_id      INTEGER
);
CREATE INDEX inventory_changes_device ON inventory_changes (instance, device_type, jamf_id, changed_at);
CREATE INDEX inventory_changes_field ON inventory_changes (instance, device_type, field, changed_at);
CREATE INDEX inventory_changes_recorded ON inventory_changes (recorded_at);
