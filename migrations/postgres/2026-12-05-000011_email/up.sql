-- Email: the outbox a background task sends from, and password-reset tokens.

-- Messages waiting to be sent. The body is sealed (AES-256-GCM, a key derived from
-- SECRET_KEY): it may hold a link with a token. A sent message is deleted; one that still
-- fails after its last attempt is deleted and logged.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    created_at TIMESTAMP NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    claimed_until TIMESTAMP
);
CREATE INDEX outbox_next_attempt_at_idx ON outbox (next_attempt_at);

-- A password-reset link: the SHA-256 of its 256-bit token, for one user, valid until
-- expires_at and while the user's credential epoch is still the one it was made under.
CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_epoch BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX password_resets_user_id_idx ON password_resets (user_id);
