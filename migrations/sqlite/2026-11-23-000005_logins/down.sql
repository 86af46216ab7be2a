ALTER TABLE logins DROP COLUMN rotated_at;
ALTER TABLE logins DROP COLUMN generation;
ALTER TABLE logins DROP COLUMN credential_epoch;
ALTER TABLE users DROP COLUMN credential_epoch;
DROP INDEX logins_user_id_idx;
CREATE INDEX login_sessions_user_id_idx ON logins (user_id);
ALTER TABLE logins RENAME TO login_sessions;
