-- One row: a random id of this database, which names what jamf-sync owns in Jamf (its
-- advanced search), so two installations on one Jamf server never share it.
CREATE TABLE installation (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id        TEXT    NOT NULL
);

-- Jamf's clock minus ours (ms) as a run measured it from Jamf's Date header: the next run
-- widens its overlap by it when it is large.
ALTER TABLE sync_runs ADD COLUMN clock_offset_ms BIGINT;

-- Devices Jamf would not give (a 500 for that device, a record that does not decode): the run
-- that met them still succeeds; every later run retries them, and a written copy removes the row.
CREATE TABLE sync_failures (
    instance      TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    jamf_id       BIGINT  NOT NULL,
    error         TEXT    NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    attempts      INTEGER NOT NULL,
    PRIMARY KEY (instance, kind, jamf_id)
);
