-- Server-side session state for SESSION_STORE=database. The id is the SHA-256 (hex) of the
-- session key in the cookie, so a leaked table cannot be replayed as cookies. Rows past
-- expires_at are ignored on read and purged periodically.
CREATE TABLE session_states (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    -- Set when the id was replaced or deleted: it works until expires_at (the grace period)
    -- but is never extended again.
    retired BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX session_states_expires_at_idx ON session_states (expires_at);

-- Session protection: a login whose IP or user agent changed is no longer "fresh".
ALTER TABLE login_sessions ADD COLUMN fresh BOOLEAN NOT NULL DEFAULT TRUE;
