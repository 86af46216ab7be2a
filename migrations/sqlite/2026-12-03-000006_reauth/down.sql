ALTER TABLE logins DROP COLUMN proved_at;
