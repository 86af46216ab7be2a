-- One row per login. The session cookie carries a random token; only its SHA-256 is stored
-- here, so a leaked table cannot be replayed as cookies. Deleting the row ends the login in
-- every session store, including the client-side cookie store.
CREATE TABLE login_sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    ip TEXT,
    user_agent TEXT,
    remember BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX login_sessions_user_id_idx ON login_sessions (user_id);
