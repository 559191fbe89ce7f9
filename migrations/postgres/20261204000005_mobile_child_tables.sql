-- Child tables of a mobile device's Classic record: its apps and its groups.
CREATE TABLE mobile_device_applications (
    instance      TEXT    NOT NULL,
    jamf_id       BIGINT NOT NULL,
    name          TEXT,
    identifier    TEXT,
    version       TEXT,
    build         TEXT,
    version_major BIGINT
);
CREATE INDEX mobile_device_applications_device ON mobile_device_applications (instance, jamf_id);
CREATE INDEX mobile_device_applications_identifier ON mobile_device_applications (identifier, version_major);
CREATE INDEX mobile_device_applications_name ON mobile_device_applications (name, version);

CREATE TABLE mobile_device_group_memberships (
    instance   TEXT    NOT NULL,
    jamf_id    BIGINT NOT NULL,
    group_id   TEXT,
    group_name TEXT
);
CREATE INDEX mobile_device_group_memberships_device ON mobile_device_group_memberships (instance, jamf_id);
CREATE INDEX mobile_device_group_memberships_group ON mobile_device_group_memberships (instance, group_name);
