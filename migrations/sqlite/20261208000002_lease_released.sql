-- Whether the holder gave the lease up itself (a clean hand-over) or let it expire (killed,
-- cut off, frozen): a new holder taking an expired lease waits `ha.takeover_quiet_secs` before
-- its first Jamf request, so a frozen holder's requests and sockets are gone first.
ALTER TABLE instance_leases ADD COLUMN released BOOLEAN NOT NULL DEFAULT FALSE;
