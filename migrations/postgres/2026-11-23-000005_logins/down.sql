ALTER TABLE logins DROP COLUMN rotated_at;
ALTER TABLE logins DROP COLUMN generation;
ALTER TABLE logins DROP COLUMN credential_epoch;
ALTER TABLE users DROP COLUMN credential_epoch;
ALTER TABLE logins RENAME CONSTRAINT logins_user_id_fkey TO login_sessions_user_id_fkey;
ALTER TABLE logins RENAME CONSTRAINT logins_pkey TO login_sessions_pkey;
ALTER INDEX logins_user_id_idx RENAME TO login_sessions_user_id_idx;
ALTER TABLE logins RENAME TO login_sessions;
