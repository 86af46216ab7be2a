//! Alert rules over the audit events: a burst of failures on one account
//! (`ALERT_ACCOUNT_FAILURES`) or from one client address (`ALERT_IP_FAILURES`), a session
//! protection trigger, and a burst of refused forms (`ALERT_CSRF_FAILURES`). An alert is a
//! WARN line under target `alert`, a row of `alerts` (the admin page lists them), and, with
//! `ALERT_WEBHOOK_URL`, a JSON POST with bounded retries.
//!
//! Nothing here runs on a request's path: the auth layer's event observer hands each event to
//! a bounded channel (a send that never blocks, callable from the blocking pool), and one task
//! per instance counts and raises. When a flood outruns the task (forged forms cost an
//! attacker nothing), events beyond `BACKLOG` are dropped and counted in the log rather than
//! held in memory: the rules have long since fired by then. One burst raises one alert per
//! rule, subject and window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use latchkey_auth::audit::{self, Event, Record};
use latchkey_auth::throttle::Limit;
use latchkey_db::DbConnection;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::db::schema::alerts;
use crate::db::{self, Pool};
use crate::settings::AlertSettings;

/// Events waiting for the rules at most; more are dropped.
const BACKLOG: usize = 4096;
/// Attempts at delivering one alert to the webhook.
const WEBHOOK_ATTEMPTS: u32 = 4;
/// The longest a webhook may take to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Events that count as a failed proof of identity.
const FAILURES: [Event; 3] = [Event::AuthnLoginFail, Event::AuthnMfaFail, Event::AuthnReauthFail];

/// What the rules are told of an event.
struct Signal {
    event: Event,
    user_id: Option<i32>,
    ip: Option<String>,
}

/// Hands events to the rules' task.
#[derive(Clone)]
pub struct Alerts {
    signals: mpsc::Sender<Signal>,
    /// Events dropped because the backlog was full, not yet logged.
    dropped: Arc<AtomicU64>,
}

impl Alerts {
    /// Starts the rules' task for `settings`.
    pub fn spawn(pool: Pool, settings: AlertSettings) -> Self {
        let (signals, received) = mpsc::channel(BACKLOG);
        let webhook = settings.webhook.as_ref().map(|url| Webhook::new(url.expose()));
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(Rules { pool, settings, webhook, dropped: Arc::clone(&dropped) }.run(received));
        Self { signals, dropped }
    }

    /// Tells the rules of an event, if a rule watches it (see `Auth::with_event_observer`).
    pub fn observe(&self, event: Event, record: &Record) {
        let watched =
            FAILURES.contains(&event) || matches!(event, Event::SessionProtection | Event::CsrfFail);
        if watched {
            let signal = Signal { event, user_id: record.user_id, ip: record.ip.clone() };
            if let Err(mpsc::error::TrySendError::Full(_)) = self.signals.try_send(signal) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // Closed: the task has stopped with the server.
        }
    }
}

/// An alert as stored, logged and posted.
#[derive(Debug, Clone, Serialize, Queryable, Selectable)]
#[diesel(table_name = alerts)]
pub struct Alert {
    pub at: NaiveDateTime,
    /// `account_failures`, `ip_failures`, `session_protection` or `csrf_failures`.
    pub rule: String,
    /// What the rule watched: `user:<id>`, `ip:<address>` or `site`.
    pub subject: String,
    pub detail: String,
    pub user_id: Option<i32>,
    pub ip: Option<String>,
}

impl Alert {
    /// The `limit` latest alerts, newest first.
    pub fn recent(conn: &mut DbConnection, limit: i64) -> QueryResult<Vec<Alert>> {
        alerts::table.order(alerts::id.desc()).limit(limit).select(Alert::as_select()).load(conn)
    }

    /// Deletes alerts older than `before`.
    pub fn purge_older_than(conn: &mut DbConnection, before: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(alerts::table.filter(alerts::at.lt(before))).execute(conn)
    }

    /// Stores the alert unless one of the same rule and subject was raised since `since`;
    /// returns whether it was stored.
    fn insert_unless_raised_since(&self, conn: &mut DbConnection, since: NaiveDateTime) -> QueryResult<bool> {
        conn.transaction(|conn| {
            let raised: i64 = alerts::table
                .filter(alerts::rule.eq(&self.rule))
                .filter(alerts::subject.eq(&self.subject))
                .filter(alerts::at.ge(since))
                .count()
                .get_result(conn)?;
            if raised > 0 {
                return Ok(false);
            }
            diesel::insert_into(alerts::table)
                .values((
                    alerts::at.eq(self.at),
                    alerts::rule.eq(&self.rule),
                    alerts::subject.eq(&self.subject),
                    alerts::detail.eq(&self.detail),
                    alerts::user_id.eq(self.user_id),
                    alerts::ip.eq(&self.ip),
                ))
                .execute(conn)?;
            Ok(true)
        })
    }
}

struct Rules {
    pool: Pool,
    settings: AlertSettings,
    webhook: Option<Webhook>,
    dropped: Arc<AtomicU64>,
}

impl Rules {
    async fn run(self, mut received: mpsc::Receiver<Signal>) {
        while let Some(signal) = received.recv().await {
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                log::warn!(target: "alert", "{dropped} security event(s) not judged: the alert rules fell behind");
            }
            if let Err(error) = self.judge(signal).await {
                log::warn!("alert rules: {}", latchkey_auth::cause_chain(&error));
            }
        }
    }

    /// Runs the rules that watch `signal`'s event.
    async fn judge(&self, signal: Signal) -> Result<(), db::DbError> {
        let now = Utc::now().naive_utc();
        if FAILURES.contains(&signal.event) {
            if let Some(user_id) = signal.user_id {
                let limit = self.settings.account_failures;
                let count = self.failures_since(now, limit, Some(user_id), None).await?;
                if count >= limit.count as i64 {
                    let detail = format!(
                        "{count} failed sign-ins, codes or re-authentications of account #{user_id} in {}",
                        window(limit)
                    );
                    self.raise("account_failures", format!("user:{user_id}"), detail, &signal, limit.window)
                        .await?;
                }
            }
            if let Some(ip) = signal.ip.clone() {
                let limit = self.settings.ip_failures;
                let count = self.failures_since(now, limit, None, Some(ip.clone())).await?;
                if count >= limit.count as i64 {
                    let detail = format!(
                        "{count} failed sign-ins, codes or re-authentications from {ip} in {}",
                        window(limit)
                    );
                    self.raise("ip_failures", format!("ip:{ip}"), detail, &signal, limit.window).await?;
                }
            }
        }
        if signal.event == Event::SessionProtection {
            let user = signal.user_id.map_or_else(|| "unknown".to_owned(), |id| format!("#{id}"));
            let detail = format!("a login of account {user} changed IP address or browser");
            let subject = format!("user:{user}");
            self.raise("session_protection", subject, detail, &signal, Duration::from_secs(60)).await?;
        }
        if signal.event == Event::CsrfFail {
            let limit = self.settings.csrf_failures;
            let since = now - delta(limit.window);
            let count =
                db::run(&self.pool, move |conn| audit::count_since(conn, Event::CsrfFail, since, None, None))
                    .await?;
            if count >= limit.count as i64 {
                let detail = format!("{count} forms refused by the CSRF check in {}", window(limit));
                self.raise("csrf_failures", "site".to_owned(), detail, &signal, limit.window).await?;
            }
        }
        Ok(())
    }

    /// Failures (of every kind) in `limit`'s window, of `user_id` or from `ip`.
    async fn failures_since(
        &self,
        now: NaiveDateTime,
        limit: Limit,
        user_id: Option<i32>,
        ip: Option<String>,
    ) -> Result<i64, db::DbError> {
        let since = now - delta(limit.window);
        db::run(&self.pool, move |conn| {
            FAILURES.iter().try_fold(0, |sum, event| {
                Ok(sum + audit::count_since(conn, *event, since, user_id, ip.as_deref())?)
            })
        })
        .await
    }

    /// Raises an alert, unless this rule raised one for `subject` within `quiet`.
    async fn raise(
        &self,
        rule: &str,
        subject: String,
        detail: String,
        signal: &Signal,
        quiet: Duration,
    ) -> Result<(), db::DbError> {
        let now = Utc::now().naive_utc();
        let alert = Alert {
            at: now,
            rule: rule.to_owned(),
            subject,
            detail,
            user_id: signal.user_id,
            ip: signal.ip.clone(),
        };
        let stored = alert.clone();
        let since = now - delta(quiet);
        if !db::run(&self.pool, move |conn| stored.insert_unless_raised_since(conn, since)).await? {
            return Ok(());
        }
        match serde_json::to_string(&alert) {
            Ok(json) => log::warn!(target: "alert", "{json}"),
            Err(error) => log::warn!(target: "alert", "{} (not serialised: {error})", alert.detail),
        }
        if let Some(webhook) = &self.webhook {
            tokio::spawn(webhook.clone().deliver(alert));
        }
        Ok(())
    }
}

/// `ALERT_WEBHOOK_URL`: each alert is POSTed as JSON, tried again after 1, 2 and 4 seconds.
#[derive(Clone)]
struct Webhook {
    client: reqwest::Client,
    url: Arc<str>,
}

impl Webhook {
    fn new(url: &str) -> Self {
        let client = reqwest::Client::builder().timeout(WEBHOOK_TIMEOUT).build().unwrap_or_default();
        Self { client, url: url.into() }
    }

    async fn deliver(self, alert: Alert) {
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            match self.client.post(&*self.url).json(&alert).send().await {
                Ok(answer) if answer.status().is_success() => return,
                Ok(answer) => log::warn!("alert webhook: attempt {attempt} answered {}", answer.status()),
                // Without the URL: it may hold a token.
                Err(error) => log::warn!("alert webhook: attempt {attempt} failed: {}", error.without_url()),
            }
            if attempt < WEBHOOK_ATTEMPTS {
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
            }
        }
        log::error!("alert webhook: gave up on the {} alert after {WEBHOOK_ATTEMPTS} attempts", alert.rule);
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// A limit's window in words ("10 minutes").
fn window(limit: Limit) -> String {
    crate::error::wait_in_words(limit.window.as_secs())
}
