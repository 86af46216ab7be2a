-- Passkeys (WebAuthn). Only public keys and counters, as webauthn-rs serialises them: nothing
-- here is secret. The credential id is unique across accounts; the user handle (a UUID) is
-- the same for all of a user's passkeys, and is what a discoverable passkey names at sign-in.
CREATE TABLE passkeys (
    id SERIAL PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_handle TEXT NOT NULL,
    credential_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    passkey TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP
);
CREATE INDEX passkeys_user_id_idx ON passkeys (user_id);
-- WebAuthn ceremonies under way: the state between the options a browser gets and its
-- answer. It never leaves the server (a client could replay it), is keyed by the SHA-256 of
-- the token the browser holds, is taken once, and is dead after five minutes.
CREATE TABLE passkey_ceremonies (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX passkey_ceremonies_created_at_idx ON passkey_ceremonies (created_at);
