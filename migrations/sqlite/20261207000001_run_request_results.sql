-- The run that answered a recorded run request: a one-shot command that handed its run to the
-- instance's holder waits for this row and reports it.
ALTER TABLE sync_runs ADD COLUMN request_id BIGINT;
CREATE INDEX sync_runs_request ON sync_runs (request_id) WHERE request_id IS NOT NULL;
