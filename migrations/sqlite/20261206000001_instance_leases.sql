-- The coordination tables of PostgreSQL deployments (issue 17), kept here so both schemas
-- have the same tables; on SQLite one process writes (an OS file lock) and these stay empty.
CREATE TABLE instance_leases (
    instance TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    acquired_at TEXT NOT NULL,
    renewed_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE TABLE ha_members (
    holder TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE TABLE run_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    kind TEXT NOT NULL,
    op TEXT NOT NULL,
    "trigger" TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    requested_by TEXT NOT NULL
);
CREATE UNIQUE INDEX run_requests_pending ON run_requests (instance, kind, op);
