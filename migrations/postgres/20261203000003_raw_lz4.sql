-- The raw JSON of a device is ~3 KB, so PostgreSQL compresses it on every write; lz4 costs a
-- fraction of the default pglz's CPU (a full sync of 20,000 computers spent ~1 s of the
-- server's CPU in pglz). Servers built without lz4, or older than 14, keep the default.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE computers ALTER COLUMN raw SET COMPRESSION lz4;
        ALTER TABLE mobile_devices ALTER COLUMN raw SET COMPRESSION lz4;
    END IF;
END
$$;
