-- SQLite twin of migrations/postgres/2026-12-05-000010_audit.
-- The audit log: security events (latchkey_auth::audit). No foreign key to users: events
-- outlive a deleted account until AUDIT_RETENTION purges them. Never a secret in any column.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    at TIMESTAMP NOT NULL,
    event TEXT NOT NULL,
    outcome TEXT NOT NULL,
    user_id INTEGER,
    ip TEXT,
    user_agent TEXT,
    request_id TEXT,
    detail TEXT
);
CREATE INDEX audit_events_user_id_idx ON audit_events (user_id, id);
CREATE INDEX audit_events_event_at_idx ON audit_events (event, at);
CREATE INDEX audit_events_at_idx ON audit_events (at);
