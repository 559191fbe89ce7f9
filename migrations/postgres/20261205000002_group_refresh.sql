-- Group membership refresh replaces one group's rows at a time.
CREATE INDEX computer_group_memberships_group_id ON computer_group_memberships (instance, group_id);
CREATE INDEX mobile_device_group_memberships_group_id ON mobile_device_group_memberships (instance, group_id);
