-- A login is fresh while its last proof of identity (the password, at login or at /reauth) is
-- younger than REAUTH_WINDOW. Existing logins were proved when they began.
ALTER TABLE logins ADD COLUMN proved_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
UPDATE logins SET proved_at = created_at;
