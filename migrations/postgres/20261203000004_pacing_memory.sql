-- What adaptive pacing learned about an instance's Jamf server (limit reached, latency
-- baselines, as JSON), so the next process starts there instead of ramping up again.
CREATE TABLE pacing_memory (
    instance TEXT PRIMARY KEY,
    server   TEXT NOT NULL,
    memory   TEXT NOT NULL,
    saved_at TIMESTAMPTZ NOT NULL
);
