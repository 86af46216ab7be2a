-- Second factors. A TOTP secret is stored sealed (AEAD under a key derived from SECRET_KEY,
-- with the key's id in the sealed value), never in plain text; `last_step` refuses a code's
-- replay within its time step. It is active once `confirmed` by one valid code.
CREATE TABLE totp_factors (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret TEXT NOT NULL,
    confirmed BOOLEAN NOT NULL DEFAULT FALSE,
    last_step BIGINT NOT NULL DEFAULT -1,
    created_at TIMESTAMP NOT NULL
);
-- Recovery codes, each stored as an HMAC (a key derived from SECRET_KEY) and usable once.
CREATE TABLE recovery_codes (
    id SERIAL PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at TIMESTAMP
);
CREATE INDEX recovery_codes_user_id_idx ON recovery_codes (user_id);
-- A password login waiting for its second factor: only the SHA-256 of the token its session
-- carries, and its count of wrong codes, which a replayed cookie cannot reset.
CREATE TABLE pending_logins (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    remember BOOLEAN NOT NULL DEFAULT FALSE,
    next TEXT NOT NULL DEFAULT '',
    credential_epoch BIGINT NOT NULL
);
-- Whether a login's last proof of identity included a second factor.
ALTER TABLE logins ADD COLUMN second_factor BOOLEAN NOT NULL DEFAULT FALSE;
