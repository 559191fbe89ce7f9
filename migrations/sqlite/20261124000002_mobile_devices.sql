-- Mobile devices (Classic advanced search or Jamf Pro API), SQLite flavour.
CREATE TABLE mobile_devices (
    instance              TEXT    NOT NULL,
    jamf_id               INTEGER NOT NULL,
    udid                  TEXT,
    serial_number         TEXT,
    name                  TEXT,
    model                 TEXT,
    os_version            TEXT,
    os_type               TEXT,
    last_inventory_update TEXT,
    managed               INTEGER,
    supervised            INTEGER,
    username              TEXT,
    email                 TEXT,
    raw                   TEXT    NOT NULL,
    raw_hash              INTEGER NOT NULL,
    first_seen_at         TEXT    NOT NULL,
    changed_at            TEXT    NOT NULL,
    synced_at             TEXT    NOT NULL,
    deleted_at            TEXT,
    PRIMARY KEY (instance, jamf_id)
);
CREATE INDEX mobile_devices_serial_number ON mobile_devices (serial_number);
CREATE INDEX mobile_devices_last_inventory_update ON mobile_devices (instance, last_inventory_update);
