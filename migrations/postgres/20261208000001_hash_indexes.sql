-- Text that comes from a device (an application's name or version from its Info.plist, a
-- bundle id, a group or user name, an extension attribute's name, a history field that embeds
-- one) has no length limit, but a B-tree entry must fit a third of a page (2,704 bytes): one
-- long value failed the whole page. These lookups are equalities (the query guide's
-- questions), which a hash index answers for a value of any length, so long values are stored
-- whole and still indexed. Index names are kept.
DROP INDEX computers_serial_number;
CREATE INDEX computers_serial_number ON computers USING hash (serial_number);
DROP INDEX mobile_devices_serial_number;
CREATE INDEX mobile_devices_serial_number ON mobile_devices USING hash (serial_number);
DROP INDEX extension_attributes_name;
CREATE INDEX extension_attributes_name ON extension_attributes USING hash (name);
DROP INDEX inventory_changes_field;
CREATE INDEX inventory_changes_field ON inventory_changes USING hash (field);
DROP INDEX computer_applications_name;
CREATE INDEX computer_applications_name ON computer_applications USING hash (name);
DROP INDEX computer_applications_bundle_id;
CREATE INDEX computer_applications_bundle_id ON computer_applications USING hash (bundle_id);
DROP INDEX computer_group_memberships_group;
CREATE INDEX computer_group_memberships_group ON computer_group_memberships USING hash (group_name);
DROP INDEX computer_group_memberships_group_id;
CREATE INDEX computer_group_memberships_group_id ON computer_group_memberships USING hash (group_id);
DROP INDEX computer_configuration_profiles_identifier;
CREATE INDEX computer_configuration_profiles_identifier ON computer_configuration_profiles USING hash (profile_identifier);
DROP INDEX computer_local_user_accounts_username;
CREATE INDEX computer_local_user_accounts_username ON computer_local_user_accounts USING hash (username);
DROP INDEX mobile_device_applications_identifier;
CREATE INDEX mobile_device_applications_identifier ON mobile_device_applications USING hash (identifier);
DROP INDEX mobile_device_applications_name;
CREATE INDEX mobile_device_applications_name ON mobile_device_applications USING hash (name);
DROP INDEX mobile_device_group_memberships_group;
CREATE INDEX mobile_device_group_memberships_group ON mobile_device_group_memberships USING hash (group_name);
DROP INDEX mobile_device_group_memberships_group_id;
CREATE INDEX mobile_device_group_memberships_group_id ON mobile_device_group_memberships USING hash (group_id);
DROP INDEX mobile_device_configuration_profiles_identifier;
CREATE INDEX mobile_device_configuration_profiles_identifier ON mobile_device_configuration_profiles USING hash (profile_identifier);
