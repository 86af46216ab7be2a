ALTER TABLE login_sessions DROP COLUMN fresh;
DROP TABLE session_states;
