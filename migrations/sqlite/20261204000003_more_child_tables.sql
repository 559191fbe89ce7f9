-- Child tables of CONFIGURATION_PROFILES, LOCAL_USER_ACCOUNTS and CERTIFICATES (computers).
CREATE TABLE computer_configuration_profiles (
    instance           TEXT    NOT NULL,
    jamf_id            INTEGER NOT NULL,
    profile_id         TEXT,
    display_name       TEXT,
    profile_identifier TEXT,
    uuid               TEXT,
    username           TEXT,
    removable          INTEGER,
    last_installed     TEXT
);
CREATE INDEX computer_configuration_profiles_device ON computer_configuration_profiles (instance, jamf_id);
CREATE INDEX computer_configuration_profiles_identifier ON computer_configuration_profiles (instance, profile_identifier);

CREATE TABLE computer_local_user_accounts (
    instance            TEXT    NOT NULL,
    jamf_id             INTEGER NOT NULL,
    uid                 TEXT,
    user_guid           TEXT,
    username            TEXT,
    full_name           TEXT,
    admin               INTEGER,
    home_directory      TEXT,
    file_vault2_enabled INTEGER,
    user_account_type   TEXT
);
CREATE INDEX computer_local_user_accounts_device ON computer_local_user_accounts (instance, jamf_id);
CREATE INDEX computer_local_user_accounts_username ON computer_local_user_accounts (instance, username);

CREATE TABLE computer_certificates (
    instance           TEXT    NOT NULL,
    jamf_id            INTEGER NOT NULL,
    common_name        TEXT,
    subject_name       TEXT,
    serial_number      TEXT,
    sha1_fingerprint   TEXT,
    identity           INTEGER,
    username           TEXT,
    lifecycle_status   TEXT,
    certificate_status TEXT,
    issued_date        TEXT,
    expiration_date    TEXT
);
CREATE INDEX computer_certificates_device ON computer_certificates (instance, jamf_id);
CREATE INDEX computer_certificates_expiration ON computer_certificates (instance, expiration_date);
