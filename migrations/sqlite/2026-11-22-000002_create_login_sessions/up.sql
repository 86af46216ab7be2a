-- SQLite twin of migrations/postgres/2026-11-22-000002_create_login_sessions.
CREATE TABLE login_sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    ip TEXT,
    user_agent TEXT,
    remember BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX login_sessions_user_id_idx ON login_sessions (user_id);
