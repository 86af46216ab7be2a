ALTER TABLE logins DROP COLUMN second_factor;
DROP TABLE pending_logins;
DROP TABLE recovery_codes;
DROP TABLE totp_factors;
