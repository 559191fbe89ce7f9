-- The lookup indexes lead with the looked-up value, as on PostgreSQL (where they became hash
-- indexes so a value of any length is indexed): the query guide's questions filter by it
-- without naming an instance, which an index leading with `instance` could not serve.
-- SQLite's B-tree has no entry size limit. Index names are kept.
DROP INDEX extension_attributes_name;
CREATE INDEX extension_attributes_name ON extension_attributes (name);
DROP INDEX inventory_changes_field;
CREATE INDEX inventory_changes_field ON inventory_changes (field, changed_at);
DROP INDEX computer_group_memberships_group;
CREATE INDEX computer_group_memberships_group ON computer_group_memberships (group_name);
DROP INDEX computer_configuration_profiles_identifier;
CREATE INDEX computer_configuration_profiles_identifier ON computer_configuration_profiles (profile_identifier);
DROP INDEX computer_local_user_accounts_username;
CREATE INDEX computer_local_user_accounts_username ON computer_local_user_accounts (username);
DROP INDEX mobile_device_group_memberships_group;
CREATE INDEX mobile_device_group_memberships_group ON mobile_device_group_memberships (group_name);
DROP INDEX mobile_device_configuration_profiles_identifier;
CREATE INDEX mobile_device_configuration_profiles_identifier ON mobile_device_configuration_profiles (profile_identifier);
