//! The audit log: security events, each a row of `audit_events` and one JSON line in the log
//! under target `audit`.
//!
//! Event names follow the OWASP logging vocabulary (`authn_login_success`, `session_expired`,
//! `excess_rate_limit_exceeded`…), with names of the same shape where it has none
//! (`authn_mfa_fail`, `csrf_fail`). A record holds the UTC time, the user, the client's IP
//! address and user agent, the outcome, the request id (see [`crate::guard::request_id`]) and a short
//! detail. It never holds a password, token, code or session id: callers put in `detail`
//! only what may be read by whoever reads the logs.
//!
//! The log line is built with `serde_json`, which escapes control characters, so a user agent
//! or an email with a newline in it cannot forge a line (log injection).

use std::sync::Arc;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use latchkey_db::DbConnection;
use serde::Serialize;

/// The table, as `diesel print-schema` writes it. The application's migrations create it.
pub mod schema {
    diesel::table! {
        /// Security events.
        audit_events (id) {
            /// Increasing with time.
            id -> Int8,
            /// When it happened (UTC).
            at -> Timestamp,
            /// The event's name ([`crate::audit::Event::name`]).
            event -> Text,
            /// `success` or `failure`.
            outcome -> Text,
            /// The user it concerns, if known. Not a foreign key: events outlive accounts
            /// until the retention period ends.
            user_id -> Nullable<Int4>,
            /// The client's IP address.
            ip -> Nullable<Text>,
            /// The client's user agent, cut to 256 characters.
            user_agent -> Nullable<Text>,
            /// The request's id (`X-Request-Id`).
            request_id -> Nullable<Text>,
            /// A short detail, never a secret.
            detail -> Nullable<Text>,
        }
    }

    /// The table in SQLite, for applications without migrations of their own: logging in
    /// records events, so it must exist beside `logins`.
    pub const SQLITE_DDL: &str = "CREATE TABLE IF NOT EXISTS audit_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, at TIMESTAMP NOT NULL, event TEXT NOT NULL,
        outcome TEXT NOT NULL, user_id INTEGER, ip TEXT, user_agent TEXT, request_id TEXT, detail TEXT);
        CREATE INDEX IF NOT EXISTS audit_events_user_id_idx ON audit_events (user_id, id);";
}

use schema::audit_events;

/// The log target of audit lines.
pub const TARGET: &str = "audit";

/// The longest user agent and detail kept.
const TEXT_MAX: usize = 256;

macro_rules! events {
    ($($variant:ident => $name:literal, $failure:literal, $describe:expr;)*) => {
        /// A security event. [`Event::name`] is its OWASP-style name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Event {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl Event {
            /// Every event.
            pub const ALL: &'static [Event] = &[$(Event::$variant),*];

            /// The event's name, as stored and logged.
            pub const fn name(self) -> &'static str {
                match self { $(Event::$variant => $name,)* }
            }

            /// Whether the event records something refused or gone wrong.
            pub const fn is_failure(self) -> bool {
                match self { $(Event::$variant => $failure,)* }
            }

            /// What it means to the account's owner, for their activity page; `None` for
            /// events another line already says (a new session beside its sign-in).
            pub const fn describe(self) -> Option<&'static str> {
                match self { $(Event::$variant => $describe,)* }
            }
        }
    };
}

events! {
    AuthnLoginSuccess => "authn_login_success", false, Some("Signed in");
    AuthnLoginNewDevice => "authn_login_new_device", false, Some("Signed in from a new device (you were told by email)");
    AuthnLoginFail => "authn_login_fail", true, Some("Failed sign-in");
    AuthnLoginLock => "authn_login_lock", true, Some("Password sign-in locked after too many failures");
    AuthnMfaFail => "authn_mfa_fail", true, Some("Wrong second-factor code");
    AuthnReauthSuccess => "authn_reauth_success", false, Some("Confirmed it was you");
    AuthnReauthFail => "authn_reauth_fail", true, Some("Failed to confirm it was you");
    AuthnPasswordChange => "authn_password_change", false, Some("Password changed");
    AuthnPasswordChangeFail => "authn_password_change_fail", true, Some("Wrong current password at a password change");
    AuthnPasswordResetRequest => "authn_password_reset_request", false, Some("Password reset link sent by email");
    AuthnMfaEnabled => "authn_mfa_enabled", false, Some("Second factor added");
    AuthnMfaDisabled => "authn_mfa_disabled", false, Some("Second factor removed");
    AuthnRecoveryCodesRenewed => "authn_recovery_codes_renewed", false, Some("New recovery codes made");
    AuthnTokenReuse => "authn_token_reuse", true, Some("An old copy of a login's cookie was refused");
    SessionCreated => "session_created", false, None;
    SessionRenewed => "session_renewed", false, None;
    SessionExpired => "session_expired", false, Some("Signed out: the login timed out");
    SessionLogout => "session_logout", false, Some("Signed out");
    SessionRevoked => "session_revoked", false, Some("Signed out another device");
    SessionProtection => "session_protection", true, Some("A login's IP address or browser changed");
    AuthzFail => "authz_fail", true, Some("Refused: not allowed");
    ExcessRateLimitExceeded => "excess_rate_limit_exceeded", true, Some("Too many attempts: slowed down");
    CsrfFail => "csrf_fail", true, Some("A form was refused (CSRF check)");
    UserCreated => "user_created", false, Some("Account created");
    UserUpdated => "user_updated", false, Some("Account changed");
    UserEmailConfirmed => "user_email_confirmed", false, Some("Email address confirmed");
    UserEmailChangeRequest => "user_email_change_request", false, Some("Email change asked for: a link went to the new address");
    UserDeleted => "user_deleted", false, Some("Account deleted");
    AdminUserDisabled => "admin_user_disabled", false, Some("An administrator disabled the account");
    AdminUserEnabled => "admin_user_enabled", false, Some("An administrator enabled the account again");
    AdminPasswordReset => "admin_password_reset", false, Some("An administrator required a new password");
    AdminFactorsReset => "admin_factors_reset", false, Some("An administrator removed the second factors");
    AdminUnlock => "admin_unlock", false, Some("An administrator lifted the sign-in lock");
    AdminSessionRevoked => "admin_session_revoked", false, Some("An administrator signed out a device");
}

impl Event {
    /// The event named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|event| event.name() == name)
    }

    /// `success` or `failure`.
    pub const fn outcome(self) -> &'static str {
        if self.is_failure() {
            "failure"
        } else {
            "success"
        }
    }
}

/// An event about to be recorded.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_events)]
pub struct Record {
    /// When it happened.
    pub at: NaiveDateTime,
    /// Its name.
    pub event: &'static str,
    /// `success` or `failure`.
    pub outcome: &'static str,
    /// The user it concerns.
    pub user_id: Option<i32>,
    /// The client's IP address.
    pub ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The request's id.
    pub request_id: Option<String>,
    /// A short detail, never a secret.
    pub detail: Option<String>,
    /// Told of the event once it is stored (the application's metrics and alert rules); see
    /// [`Auth::with_event_observer`].
    #[diesel(skip_insertion)]
    pub(crate) observer: Option<Observer>,
}

/// Receives every event recorded for requests of an [`crate::Auth`], with its record (for metrics
/// and alert rules). It may be called on a blocking thread, inside a transaction: hand any
/// slow work to a task of its own.
pub type EventObserver = Arc<dyn Fn(Event, &Record) + Send + Sync>;

/// An [`EventObserver`] and the event it is to be told of.
#[derive(Clone)]
pub(crate) struct Observer(pub(crate) EventObserver, pub(crate) Event);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Record {
    /// `event` now, by nobody in particular (a background task).
    pub fn new(event: Event) -> Self {
        Self {
            at: chrono::Utc::now().naive_utc(),
            event: event.name(),
            outcome: event.outcome(),
            user_id: None,
            ip: None,
            user_agent: None,
            request_id: None,
            detail: None,
            observer: None,
        }
    }

    /// The user it concerns.
    pub fn user(mut self, user_id: i32) -> Self {
        self.user_id = Some(user_id);
        self
    }

    /// The user it concerns, when known.
    pub fn maybe_user(mut self, user_id: Option<i32>) -> Self {
        self.user_id = user_id;
        self
    }

    /// A short detail (cut to 256 characters). Never a secret.
    pub fn detail(mut self, detail: impl AsRef<str>) -> Self {
        self.detail = Some(cut(detail.as_ref()));
        self
    }

    /// Writes the log line and the row, in the caller's connection (and transaction: the
    /// event commits with what it records).
    pub fn insert(self, conn: &mut DbConnection) -> QueryResult<()> {
        self.log();
        let inserted = diesel::insert_into(audit_events::table).values(&self).execute(conn);
        // After the row: an observer that counts rows (an alert rule) sees this one.
        self.notify();
        inserted.map(drop)
    }

    /// Tells the observer, if any, of the event.
    pub(crate) fn notify(&self) {
        if let Some(Observer(observer, event)) = &self.observer {
            observer(*event, self);
        }
    }

    /// The log line: one JSON object under target `audit`.
    pub fn log(&self) {
        match self.line() {
            Ok(json) => log::info!(target: TARGET, "{json}"),
            Err(error) => log::warn!("an audit line would not serialise: {error}"),
        }
    }

    /// The record as one line of JSON (control characters escaped).
    pub fn line(&self) -> serde_json::Result<String> {
        #[derive(Serialize)]
        struct Line<'a> {
            time: String,
            event: &'a str,
            outcome: &'a str,
            user_id: Option<i32>,
            ip: Option<&'a str>,
            user_agent: Option<&'a str>,
            request_id: Option<&'a str>,
            detail: Option<&'a str>,
        }
        let line = Line {
            time: self.at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            event: self.event,
            outcome: self.outcome,
            user_id: self.user_id,
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            request_id: self.request_id.as_deref(),
            detail: self.detail.as_deref(),
        };
        serde_json::to_string(&line)
    }
}

pub(crate) fn cut(text: &str) -> String {
    text.chars().take(TEXT_MAX).collect()
}

// ---- reading --------------------------------------------------------------------------------

/// A stored event.
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = audit_events)]
pub struct StoredEvent {
    /// Increasing with time.
    pub id: i64,
    /// When it happened (UTC).
    pub at: NaiveDateTime,
    /// Its name.
    pub event: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// The user it concerns.
    pub user_id: Option<i32>,
    /// The client's IP address.
    pub ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The request's id.
    pub request_id: Option<String>,
    /// A short detail.
    pub detail: Option<String>,
}

impl StoredEvent {
    /// What it means to the account's owner (see [`Event::describe`]).
    pub fn description(&self) -> Option<&'static str> {
        Event::from_name(&self.event).and_then(Event::describe)
    }
}

/// The `limit` most recent events of `user_id`, newest first.
pub fn recent_for_user(conn: &mut DbConnection, user_id: i32, limit: i64) -> QueryResult<Vec<StoredEvent>> {
    audit_events::table
        .filter(audit_events::user_id.eq(user_id))
        .order(audit_events::id.desc())
        .limit(limit)
        .select(StoredEvent::as_select())
        .load(conn)
}

/// The `limit` most recent events, newest first.
pub fn recent(conn: &mut DbConnection, limit: i64) -> QueryResult<Vec<StoredEvent>> {
    audit_events::table
        .order(audit_events::id.desc())
        .limit(limit)
        .select(StoredEvent::as_select())
        .load(conn)
}

/// `user_id`'s `event`s at or after `since` and before `before`, newest first, at most
/// `limit` (the new-device rule reads an account's recent sign-ins this way).
pub fn of_user_between(
    conn: &mut DbConnection,
    (event, user_id): (Event, i32),
    (since, before): (NaiveDateTime, NaiveDateTime),
    limit: i64,
) -> QueryResult<Vec<StoredEvent>> {
    audit_events::table
        .filter(audit_events::event.eq(event.name()))
        .filter(audit_events::user_id.eq(user_id))
        .filter(audit_events::at.ge(since))
        .filter(audit_events::at.lt(before))
        .order(audit_events::id.desc())
        .limit(limit)
        .select(StoredEvent::as_select())
        .load(conn)
}

/// How many `event`s match since `since`, for `user_id` or from `ip` (alert rules).
pub fn count_since(
    conn: &mut DbConnection,
    event: Event,
    since: NaiveDateTime,
    user_id: Option<i32>,
    ip: Option<&str>,
) -> QueryResult<i64> {
    let mut query = audit_events::table
        .filter(audit_events::event.eq(event.name()))
        .filter(audit_events::at.ge(since))
        .into_boxed();
    if let Some(user_id) = user_id {
        query = query.filter(audit_events::user_id.eq(user_id));
    }
    if let Some(ip) = ip {
        query = query.filter(audit_events::ip.eq(ip.to_owned()));
    }
    query.count().get_result(conn)
}

/// Deletes events older than `before` (the retention period); returns how many went.
pub fn purge_older_than(conn: &mut DbConnection, before: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(audit_events::table.filter(audit_events::at.lt(before))).execute(conn)
}

// ---- request ids ----------------------------------------------------------------------------

/// This request's id, in the request extensions (see [`crate::guard::request_id`]).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Whether an incoming `X-Request-Id` is one worth keeping: short, and safe in any log.
pub(crate) fn acceptable_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<_> = Event::ALL.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Event::ALL.len());
        for event in Event::ALL {
            assert_eq!(Event::from_name(event.name()), Some(*event));
        }
        assert_eq!(Event::AuthnLoginFail.outcome(), "failure");
        assert_eq!(Event::AuthnLoginSuccess.outcome(), "success");
    }

    #[test]
    fn a_line_cannot_be_forged() -> Result<(), serde_json::Error> {
        let mut record = Record::new(Event::AuthnLoginFail).detail("x\n{\"event\":\"authn_login_success\"}");
        record.user_agent = Some("Mozilla\r\nINFO forged".into());
        let line = record.line()?;
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(parsed["event"], "authn_login_fail");
        assert_eq!(parsed["user_agent"], "Mozilla\r\nINFO forged");
        Ok(())
    }

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        assert!(acceptable_id("abc-123_x.y"));
        assert!(!acceptable_id(""));
        assert!(!acceptable_id("a\nb"));
        assert!(!acceptable_id(&"a".repeat(65)));
    }
}
