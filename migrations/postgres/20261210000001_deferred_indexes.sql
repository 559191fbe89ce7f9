-- A first fill writes an empty child table without its secondary indexes and builds them once
-- at the end (see docs/operations.md, "First fill"). Each index set aside is recorded here, in
-- the transaction that drops it, so its definition survives a crash and is rebuilt at the next
-- start or run.
CREATE TABLE deferred_indexes (
    name       TEXT   NOT NULL PRIMARY KEY,
    table_name TEXT   NOT NULL,
    definition TEXT   NOT NULL,
    run_id     BIGINT NOT NULL
);
