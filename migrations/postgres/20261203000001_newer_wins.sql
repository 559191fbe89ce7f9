-- Newer data always wins, PostgreSQL flavour. `fetched_at` is when the stored copy was
-- requested from Jamf: of two copies with the same inventory time, the one asked for later
-- wins, and a device marked deleted comes back only with a copy asked for after the deletion
-- was seen. NULL (rows written before this migration) counts as older than any request.
ALTER TABLE computers ADD COLUMN fetched_at TIMESTAMPTZ;
ALTER TABLE mobile_devices ADD COLUMN fetched_at TIMESTAMPTZ;
-- Copies a run did not write because the stored one was newer.
ALTER TABLE sync_runs ADD COLUMN stale BIGINT NOT NULL DEFAULT 0;
