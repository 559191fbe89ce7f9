-- Mobile devices (Classic advanced search or Jamf Pro API), PostgreSQL flavour.
CREATE TABLE mobile_devices (
    instance              TEXT        NOT NULL,
    jamf_id               BIGINT      NOT NULL,
    udid                  TEXT,
    serial_number         TEXT,
    name                  TEXT,
    model                 TEXT,
    os_version            TEXT,
    os_type               TEXT,
    last_inventory_update TIMESTAMPTZ,
    managed               BOOLEAN,
    supervised            BOOLEAN,
    username              TEXT,
    email                 TEXT,
    raw                   JSONB       NOT NULL,
    raw_hash              BIGINT      NOT NULL,
    first_seen_at         TIMESTAMPTZ NOT NULL,
    changed_at            TIMESTAMPTZ NOT NULL,
    synced_at             TIMESTAMPTZ NOT NULL,
    deleted_at            TIMESTAMPTZ,
    PRIMARY KEY (instance, jamf_id)
);
CREATE INDEX mobile_devices_serial_number ON mobile_devices (serial_number);
CREATE INDEX mobile_devices_last_inventory_update ON mobile_devices (instance, last_inventory_update);
