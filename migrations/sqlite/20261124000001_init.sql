-- jamf-sync schema, SQLite flavour. Timestamps are RFC 3339 text in UTC; booleans 0/1.
CREATE TABLE computers (
    instance       TEXT    NOT NULL,
    jamf_id        INTEGER NOT NULL,
    udid           TEXT,
    serial_number  TEXT,
    name           TEXT,
    model          TEXT,
    os_version     TEXT,
    os_build       TEXT,
    report_date    TEXT,
    last_contact   TEXT,
    managed        INTEGER,
    supervised     INTEGER,
    username       TEXT,
    email          TEXT,
    raw            TEXT    NOT NULL,
    raw_hash       INTEGER NOT NULL,
    first_seen_at  TEXT    NOT NULL,
    changed_at     TEXT    NOT NULL,
    synced_at      TEXT    NOT NULL,
    deleted_at     TEXT,
    PRIMARY KEY (instance, jamf_id)
);
CREATE INDEX computers_serial_number ON computers (serial_number);
CREATE INDEX computers_report_date ON computers (instance, report_date);

CREATE TABLE extension_attributes (
    instance      TEXT    NOT NULL,
    device_type   TEXT    NOT NULL,
    jamf_id       INTEGER NOT NULL,
    definition_id TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    value         TEXT,
    data_type     TEXT,
    updated_at    TEXT    NOT NULL,
    PRIMARY KEY (instance, device_type, jamf_id, definition_id)
);
CREATE INDEX extension_attributes_name ON extension_attributes (instance, device_type, name);

CREATE TABLE sync_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    instance      TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    "trigger"     TEXT    NOT NULL,
    mode          TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    listed        INTEGER NOT NULL DEFAULT 0,
    fetched       INTEGER NOT NULL DEFAULT 0,
    upserted      INTEGER NOT NULL DEFAULT 0,
    unchanged     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    missing       INTEGER NOT NULL DEFAULT 0,
    cursor_before TEXT,
    cursor_after  TEXT,
    last_id       INTEGER,
    error         TEXT
);
CREATE INDEX sync_runs_instance_kind ON sync_runs (instance, kind, id);

CREATE TABLE sync_cursors (
    instance   TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    cursor     TEXT    NOT NULL,
    run_id     INTEGER NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (instance, kind)
);
