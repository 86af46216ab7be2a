-- SQLite twin of migrations/postgres/2026-11-23-000005_logins.
ALTER TABLE login_sessions RENAME TO logins;
DROP INDEX login_sessions_user_id_idx;
CREATE INDEX logins_user_id_idx ON logins (user_id);
ALTER TABLE users ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE logins ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE logins ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE logins ADD COLUMN rotated_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
