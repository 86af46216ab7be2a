-- SQLite twin of migrations/postgres/2026-12-05-000012_admin.
-- The admin area: an administrator role, and accounts an administrator has disabled (they
-- cannot log in, and their logins end).
ALTER TABLE users ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMP;
