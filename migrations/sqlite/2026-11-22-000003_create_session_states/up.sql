-- SQLite twin of migrations/postgres/2026-11-22-000003_create_session_states.
CREATE TABLE session_states (
    id TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    -- Set when the id was replaced or deleted: it works until expires_at (the grace period)
    -- but is never extended again.
    retired BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX session_states_expires_at_idx ON session_states (expires_at);

ALTER TABLE login_sessions ADD COLUMN fresh BOOLEAN NOT NULL DEFAULT TRUE;
