-- The rest of a mobile device's lists: configuration profiles and certificates (Classic record
-- and Jamf Pro API), and whether a group is smart (the Jamf Pro API says; Classic does not).
ALTER TABLE mobile_device_group_memberships ADD COLUMN smart BOOLEAN;

CREATE TABLE mobile_device_configuration_profiles (
    instance           TEXT    NOT NULL,
    jamf_id            BIGINT NOT NULL,
    display_name       TEXT,
    profile_identifier TEXT,
    uuid               TEXT,
    version            TEXT,
    removable          BOOLEAN,
    last_installed     TIMESTAMPTZ
);
CREATE INDEX mobile_device_configuration_profiles_device ON mobile_device_configuration_profiles (instance, jamf_id);
CREATE INDEX mobile_device_configuration_profiles_identifier ON mobile_device_configuration_profiles (instance, profile_identifier);

CREATE TABLE mobile_device_certificates (
    instance        TEXT    NOT NULL,
    jamf_id         BIGINT NOT NULL,
    common_name     TEXT,
    identity        BOOLEAN,
    expiration_date TIMESTAMPTZ
);
CREATE INDEX mobile_device_certificates_device ON mobile_device_certificates (instance, jamf_id);
CREATE INDEX mobile_device_certificates_expiration ON mobile_device_certificates (instance, expiration_date);
