-- One writer per Jamf instance across processes (issue 17). PostgreSQL coordinates: a lease
-- row per instance, renewed by its holder's heartbeat, expiring in the database's clock.
CREATE TABLE instance_leases (
    instance TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    -- Grows by one at every change of holder: a write checks the epoch it was started under.
    epoch BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- The live daemons, so instances spread over them.
CREATE TABLE ha_members (
    holder TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Runs asked for (POST /sync on any process) and not yet taken by the instance's holder.
CREATE TABLE run_requests (
    id BIGSERIAL PRIMARY KEY,
    instance TEXT NOT NULL,
    kind TEXT NOT NULL,
    op TEXT NOT NULL,
    "trigger" TEXT NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    requested_by TEXT NOT NULL
);
-- One pending request per instance, kind and operation: a second is coalesced.
CREATE UNIQUE INDEX run_requests_pending ON run_requests (instance, kind, op);
