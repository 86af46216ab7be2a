-- SQLite twin of migrations/postgres/2026-12-03-000009_throttle.
-- Throttling counters, when the site has no Redis: failed logins per (email, address), per
-- address and per account, and requests per address. Keys carry a per-deployment prefix and
-- keyed hashes, never an email or address as such.
CREATE TABLE throttle_counters (
    key TEXT PRIMARY KEY NOT NULL,
    count BIGINT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    last_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX throttle_counters_expires_at_idx ON throttle_counters (expires_at);
