//! Alert rules over the audit events: a burst of failures on one account
//! (`ALERT_ACCOUNT_FAILURES`) or from one client address (`ALERT_IP_FAILURES`), a session
//! protection trigger, a burst of refused forms (`ALERT_CSRF_FAILURES`), and a sign-in from a
//! new device. An alert is a WARN line under target `alert`, a row of `alerts` (the admin page
//! lists them), and, with `ALERT_WEBHOOK_URL`, a JSON POST with bounded retries.
//!
//! A device is new when none of the account's sign-ins in the last `NEW_DEVICE_WINDOW` came
//! from the same browser, operating system and IP network (/24 for IPv4, /48 for IPv6). It is
//! judged from the audit log on the server, since logging out clears every cookie a browser
//! could be recognised by. An account's first sign-in in the window (its registration, or a
//! return after a long absence) has nothing to compare with and makes its device known. A new
//! device also gets an `authn_login_new_device` event and an email to the account's owner,
//! with a link to their devices.
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
use crate::http::device_family;
use crate::mail::{with_client, Mailer};
use crate::models::User;
use crate::settings::AlertSettings;

/// Events waiting for the rules at most; more are dropped.
const BACKLOG: usize = 4096;
/// Attempts at delivering one alert to the webhook.
const WEBHOOK_ATTEMPTS: u32 = 4;
/// The longest a webhook may take to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Events that count as a failed proof of identity.
const FAILURES: [Event; 3] = [Event::AuthnLoginFail, Event::AuthnMfaFail, Event::AuthnReauthFail];

/// Earlier sign-ins the new-device rule compares a sign-in with, at most.
const DEVICE_HISTORY: i64 = 200;

/// What the rules are told of an event.
struct Signal {
    event: Event,
    at: NaiveDateTime,
    user_id: Option<i32>,
    ip: Option<String>,
    user_agent: Option<String>,
}

/// Hands events to the rules' task.
#[derive(Clone)]
pub struct Alerts {
    signals: mpsc::Sender<Signal>,
    /// Events dropped because the backlog was full, not yet logged.
    dropped: Arc<AtomicU64>,
}

impl Alerts {
    /// Starts the rules' task for `settings`; `mail` writes the new-device emails.
    pub fn spawn(pool: Pool, settings: AlertSettings, mail: (Mailer, tera::Tera)) -> Self {
        let (signals, received) = mpsc::channel(BACKLOG);
        let webhook = settings.webhook.as_ref().map(|url| Webhook::new(url.expose()));
        let dropped = Arc::new(AtomicU64::new(0));
        let (mailer, tera) = mail;
        let rules = Rules { pool, settings, webhook, dropped: Arc::clone(&dropped), mailer, tera };
        tokio::spawn(rules.run(received));
        Self { signals, dropped }
    }

    /// Tells the rules of an event, if a rule watches it (see `Auth::with_event_observer`).
    pub fn observe(&self, event: Event, record: &Record) {
        let watched = FAILURES.contains(&event)
            || matches!(event, Event::SessionProtection | Event::CsrfFail | Event::AuthnLoginSuccess);
        if watched {
            let signal = Signal {
                event,
                at: record.at,
                user_id: record.user_id,
                ip: record.ip.clone(),
                user_agent: record.user_agent.clone(),
            };
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
    /// `account_failures`, `ip_failures`, `session_protection`, `csrf_failures` or
    /// `new_device`.
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
        crate::db::write_transaction(conn, |conn| {
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
    mailer: Mailer,
    tera: tera::Tera,
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
        if let (Event::AuthnLoginSuccess, Some(user_id)) = (signal.event, signal.user_id) {
            self.judge_device(user_id, &signal).await?;
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

    /// A sign-in of `user_id`: from a new device unless an earlier sign-in in the window came
    /// from the same one, or there is none to compare with.
    async fn judge_device(&self, user_id: i32, signal: &Signal) -> Result<(), db::DbError> {
        let window = (signal.at - delta(self.settings.new_device_window), signal.at);
        let earlier = db::run(&self.pool, move |conn| {
            audit::of_user_between(conn, (Event::AuthnLoginSuccess, user_id), window, DEVICE_HISTORY)
        })
        .await?;
        let device = Device::of(signal.ip.as_deref(), signal.user_agent.as_deref());
        let known = earlier.is_empty()
            || earlier
                .iter()
                .any(|event| Device::of(event.ip.as_deref(), event.user_agent.as_deref()) == device);
        if known {
            return Ok(());
        }
        let detail = format!("account #{user_id} signed in from a new device: {device}");
        self.raise("new_device", format!("user:{user_id}"), detail, signal, Duration::ZERO).await?;
        let mut record = Record::new(Event::AuthnLoginNewDevice).user(user_id).detail(device.to_string());
        record.ip = signal.ip.clone();
        record.user_agent = signal.user_agent.clone();
        let Some(user) = db::run(&self.pool, move |conn| {
            record.insert(conn)?;
            User::find(conn, user_id)
        })
        .await?
        else {
            return Ok(());
        };
        let mut context = tera::Context::new();
        context.insert("email", &user.email);
        let window = crate::error::wait_in_words(self.settings.new_device_window.as_secs());
        context.insert("window", &format!("in the last {window}"));
        let ip = signal.ip.as_deref().unwrap_or("unknown");
        let context = with_client(context, signal.at, ip, signal.user_agent.as_deref());
        match self.mailer.write(&self.tera, "new_device", &user.email, context) {
            Ok(letter) => self.mailer.send(&self.pool, letter).await,
            Err(error) => log::warn!("new-device email not written: {error:?}"),
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

/// What recognises a device across its sign-ins: browser and operating system (not their
/// versions) and the IP network.
#[derive(PartialEq, Eq)]
struct Device {
    browser: String,
    os: String,
    network: String,
}

impl Device {
    fn of(ip: Option<&str>, user_agent: Option<&str>) -> Self {
        let (browser, os) = device_family(user_agent);
        Self { browser, os, network: network(ip) }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}, network {}", self.browser, self.os, self.network)
    }
}

/// The network of an address: its /24 (IPv4) or /48 (IPv6), where a device's address moves
/// within a home or an office.
fn network(ip: Option<&str>) -> String {
    match ip.and_then(|ip| ip.parse::<std::net::IpAddr>().ok()).map(|ip| ip.to_canonical()) {
        Some(std::net::IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        Some(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        None => "unknown".to_owned(),
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// A limit's window in words ("10 minutes").
fn window(limit: Limit) -> String {
    crate::error::wait_in_words(limit.window.as_secs())
}
