-- One name per concept: a login is a row of `logins` (the session is the cookie's state).
ALTER TABLE login_sessions RENAME TO logins;
ALTER INDEX login_sessions_user_id_idx RENAME TO logins_user_id_idx;
ALTER TABLE logins RENAME CONSTRAINT login_sessions_pkey TO logins_pkey;
ALTER TABLE logins RENAME CONSTRAINT login_sessions_user_id_fkey TO logins_user_id_fkey;
-- A login is valid only for the credentials it proved: the user's epoch moves on at every
-- password change and "log out everywhere else", and each login keeps the epoch it proved.
ALTER TABLE users ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE logins ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
-- Where the session id cannot rotate (the cookie store), the login's generation does.
ALTER TABLE logins ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE logins ADD COLUMN rotated_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
