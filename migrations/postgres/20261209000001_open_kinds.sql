-- Kinds are open: a new kind of Jamf object (users, buildings, patch titles…) needs no
-- migration of the tables that name a kind. These columns took an enumerated list; they now
-- take any lower-case name (`computer`, `mobile_device`, `computers`, `user`…), which the
-- program writes from its one list of kinds.
ALTER TABLE inventory_changes DROP CONSTRAINT IF EXISTS inventory_changes_device_type_check;
ALTER TABLE inventory_changes ADD CONSTRAINT inventory_changes_device_type_check
    CHECK (device_type ~ '^[a-z][a-z_]*$');
ALTER TABLE webhook_events DROP CONSTRAINT IF EXISTS webhook_events_kind_check;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_kind_check
    CHECK (kind ~ '^[a-z][a-z_]*$');
