-- Alerts raised by rules over the audit events (src/alerts.rs): shown on the admin page,
-- logged, and sent to ALERT_WEBHOOK_URL. `subject` names what the rule watched (an account,
-- an address, the site), so one burst raises one alert per window.
CREATE TABLE alerts (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMP NOT NULL,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    user_id INTEGER,
    ip TEXT
);
CREATE INDEX alerts_rule_subject_at_idx ON alerts (rule, subject, at);
