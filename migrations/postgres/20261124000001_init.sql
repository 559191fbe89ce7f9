-- jamf-sync schema, PostgreSQL flavour.
CREATE TABLE computers (
    instance       TEXT        NOT NULL,
    jamf_id        BIGINT      NOT NULL,
    udid           TEXT,
    serial_number  TEXT,
    name           TEXT,
    model          TEXT,
    os_version     TEXT,
    os_build       TEXT,
    report_date    TIMESTAMPTZ,
    last_contact   TIMESTAMPTZ,
    managed        BOOLEAN,
    supervised     BOOLEAN,
    username       TEXT,
    email          TEXT,
    raw            JSONB       NOT NULL,
    raw_hash       BIGINT      NOT NULL,
    first_seen_at  TIMESTAMPTZ NOT NULL,
    changed_at     TIMESTAMPTZ NOT NULL,
    synced_at      TIMESTAMPTZ NOT NULL,
    deleted_at     TIMESTAMPTZ,
    PRIMARY KEY (instance, jamf_id)
);
CREATE INDEX computers_serial_number ON computers (serial_number);
CREATE INDEX computers_report_date ON computers (instance, report_date);

CREATE TABLE extension_attributes (
    instance      TEXT        NOT NULL,
    device_type   TEXT        NOT NULL,
    jamf_id       BIGINT      NOT NULL,
    definition_id TEXT        NOT NULL,
    name          TEXT        NOT NULL,
    value         TEXT,
    data_type     TEXT,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (instance, device_type, jamf_id, definition_id)
);
CREATE INDEX extension_attributes_name ON extension_attributes (instance, device_type, name);

CREATE TABLE sync_runs (
    id            BIGSERIAL   PRIMARY KEY,
    instance      TEXT        NOT NULL,
    kind          TEXT        NOT NULL,
    "trigger"     TEXT        NOT NULL,
    mode          TEXT        NOT NULL,
    status        TEXT        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    listed        BIGINT      NOT NULL DEFAULT 0,
    fetched       BIGINT      NOT NULL DEFAULT 0,
    upserted      BIGINT      NOT NULL DEFAULT 0,
    unchanged     BIGINT      NOT NULL DEFAULT 0,
    failed        BIGINT      NOT NULL DEFAULT 0,
    missing       BIGINT      NOT NULL DEFAULT 0,
    cursor_before TIMESTAMPTZ,
    cursor_after  TIMESTAMPTZ,
    last_id       BIGINT,
    error         TEXT
);
CREATE INDEX sync_runs_instance_kind ON sync_runs (instance, kind, id);

CREATE TABLE sync_cursors (
    instance   TEXT        NOT NULL,
    kind       TEXT        NOT NULL,
    cursor     TIMESTAMPTZ NOT NULL,
    run_id     BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (instance, kind)
);
