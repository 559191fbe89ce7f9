-- Child tables: the lists inside a device record as rows (see README "Database"). A device's rows
-- are replaced in the transaction that writes the device, only when that section was in the
-- answer and changed (child_hashes).
CREATE TABLE computer_applications (
    instance         TEXT    NOT NULL,
    jamf_id          INTEGER NOT NULL,
    name             TEXT,
    path             TEXT,
    version          TEXT,
    bundle_id        TEXT,
    mac_app_store    INTEGER,
    size_megabytes   INTEGER,
    update_available INTEGER,
    -- The version's leading number ("130" of "130.0.6723.92"), for range questions.
    version_major    INTEGER
);
CREATE INDEX computer_applications_device ON computer_applications (instance, jamf_id);
CREATE INDEX computer_applications_name ON computer_applications (name, version);
CREATE INDEX computer_applications_bundle_id ON computer_applications (bundle_id, version_major);

CREATE TABLE computer_group_memberships (
    instance   TEXT    NOT NULL,
    jamf_id    INTEGER NOT NULL,
    group_id   TEXT,
    group_name TEXT,
    smart      INTEGER
);
CREATE INDEX computer_group_memberships_device ON computer_group_memberships (instance, jamf_id);
CREATE INDEX computer_group_memberships_group ON computer_group_memberships (instance, group_name);

-- Hash of each device's rows per child table: unchanged sections write nothing.
CREATE TABLE child_hashes (
    instance    TEXT    NOT NULL,
    device_type TEXT    NOT NULL,
    jamf_id     INTEGER NOT NULL,
    child       TEXT    NOT NULL,
    hash        INTEGER NOT NULL,
    PRIMARY KEY (instance, device_type, child, jamf_id)
);

ALTER TABLE sync_runs ADD COLUMN child_rows INTEGER NOT NULL DEFAULT 0;
