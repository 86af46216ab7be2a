-- SQLite twin of migrations/postgres/2026-12-05-000014_email_confirmation.
-- Email confirmation: when an account's address was confirmed (NULL: not yet), and the
-- links that confirm one. A link names the address it confirms: the account's own (a new
-- account) or the one it is changing to (the change applies when the link is used). The
-- token is 256 random bits; only its SHA-256 is stored.
ALTER TABLE users ADD COLUMN email_confirmed_at TIMESTAMP;

CREATE TABLE email_confirmations (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX email_confirmations_user_id_idx ON email_confirmations (user_id);
