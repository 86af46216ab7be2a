//! Typed settings read from the environment (and an optional `.env`), validated at start-up.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use latchkey_auth::passkeys::Url;
use latchkey_auth::throttle::{Limit, ThrottlePolicy};
use latchkey_auth::{LoginPolicy, Protection, Rotation};
pub use latchkey_db::DatabaseUrl;
use latchkey_sessions::Lifetimes;
use rand::RngCore;

/// Why the settings could not be loaded; always names the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {var}: {reason}")]
pub struct SettingsError {
    pub var: &'static str,
    pub reason: String,
}

impl SettingsError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self { var, reason: reason.into() }
    }
}

/// Where the application runs; production turns on `Secure` and `__Host-` cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// Where actix-session keeps session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStoreKind {
    /// Everything in a signed and encrypted cookie.
    Cookie,
    /// Redis, through our own store over one multiplexed connection.
    Redis,
    /// Our own store in the application database (`session_states`).
    Database,
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// env_logger's own lines, for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// `text` (the default when unset) or `json`.
    pub fn parse(raw: Option<&str>) -> Result<Self, SettingsError> {
        match raw.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("text") {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(SettingsError::new("LOG_FORMAT", format!("expected text or json, got {other:?}"))),
        }
    }
}

/// How long sessions live and how they are refreshed.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// An ordinary login ends after this long without a request.
    pub idle_timeout: Duration,
    /// An ordinary login ends this long after it started, however active.
    pub absolute_timeout: Duration,
    /// A remembered login ends this long after the password was entered, however active.
    pub remember_duration: Duration,
    /// Server-side session ids are replaced this often while in use.
    pub rotate_interval: Duration,
    /// A replaced or deleted server-side session id keeps working this long, so concurrent
    /// requests that still carry it are not logged out.
    pub rotate_grace: Duration,
    /// How long before the idle timeout the page warns.
    pub timeout_warning: Duration,
    /// A login may do sensitive things this long after its last proof of identity.
    pub reauth_window: Duration,
    /// How often expired server-side session state is purged.
    pub purge_interval: Duration,
    pub protection: Protection,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// `REQUIRE_VERIFIED_EMAIL`: login-required pages ask for a confirmed email, and
    /// registration answers the same for new and taken addresses.
    pub require_verified_email: bool,
}

impl SessionPolicy {
    /// How stale a login's `last_seen_at` (and a session's TTL) may get before a request
    /// writes it again.
    pub fn touch_interval(&self) -> Duration {
        latchkey_sessions::touch_interval(self.idle_timeout)
    }

    /// What the session store needs.
    pub fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            idle_timeout: self.idle_timeout,
            remember_duration: self.remember_duration,
            touch_interval: self.touch_interval(),
            rotate_interval: self.rotate_interval,
            rotate_grace: self.rotate_grace,
        }
    }

    /// What the auth layer needs. `ids_rotate` is false for the cookie store, whose logins
    /// rotate a generation number instead of the session id.
    pub fn login_policy(&self, ids_rotate: bool) -> LoginPolicy {
        LoginPolicy {
            idle_timeout: self.idle_timeout,
            absolute_timeout: self.absolute_timeout,
            remember_duration: self.remember_duration,
            touch_interval: self.touch_interval(),
            generation_rotation: (!ids_rotate)
                .then_some(Rotation { interval: self.rotate_interval, grace: self.rotate_grace }),
            protection: self.protection,
            trusted_proxies: self.trusted_proxies.clone(),
            timeout_warning: self.timeout_warning,
            reauth_window: self.reauth_window,
            require_confirmed_email: self.require_verified_email,
        }
    }
}

/// A string that must never reach a log: `Debug` prints `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The master secret (at least 64 bytes); sub-keys are derived from it per purpose.
#[derive(Clone)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    pub const MIN_LEN: usize = 64;

    pub fn new(bytes: Vec<u8>) -> Result<Self, SettingsError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(SettingsError::new(
                "SECRET_KEY",
                format!("must be at least {} bytes, got {}", Self::MIN_LEN, bytes.len()),
            ));
        }
        Ok(Self(bytes))
    }

    /// A fresh random key, hex-encoded to 128 characters.
    pub fn generate() -> String {
        let mut bytes = [0u8; 64];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// Everything the application needs to start; built once, passed down, never global.
#[derive(Debug, Clone)]
pub struct Settings {
    pub app_env: AppEnv,
    pub bind: String,
    /// The site's origin as people reach it (`https://…`, or `http://…` when TLS ends at a
    /// proxy), without a trailing slash: the passkeys' relying party, and the base of links.
    pub public_url: String,
    pub database_url: DatabaseUrl,
    pub database_pool_size: u32,
    /// How long a request waits for a database connection before answering 503.
    pub database_timeout: Duration,
    pub redis_url: Option<Secret>,
    /// How long a Redis command may take before the request answers 503.
    pub redis_timeout: Duration,
    /// How long a verified login may be served from the login cache before the database is
    /// asked again; `None` (`LOGIN_CACHE_TTL=off`) asks it on every request.
    pub login_cache_ttl: Option<Duration>,
    pub session_store: SessionStoreKind,
    pub sessions: SessionPolicy,
    pub secret_key: SecretKey,
    /// The key being rotated out: cookies and CSRF tokens made with it are still accepted, and
    /// re-issued under `secret_key`.
    pub secret_key_previous: Option<SecretKey>,
    /// How long a stopping server (SIGTERM) lets requests in flight finish.
    pub shutdown_timeout: Duration,
    pub bcrypt_cost: u32,
    /// Password hashes run on this many threads of their own (`HASH_THREADS`, one per core by
    /// default) ...
    pub hash_threads: usize,
    /// ... behind a queue of this many places (`HASH_QUEUE`); past it a login answers 503.
    pub hash_queue: usize,
    pub password_min_length: usize,
    /// The limits on guesses; `None` with `THROTTLE=off` (benchmarks only).
    pub throttle: Option<ThrottlePolicy>,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// How mail leaves: SMTP, files, or not at all.
    pub mail: MailSettings,
    /// The alert rules' thresholds, and where alerts are posted.
    pub alerts: AlertSettings,
    /// Client addresses that may read `/metrics`.
    pub metrics_allow: Vec<IpAddr>,
    /// A bearer token that may read `/metrics` from anywhere.
    pub metrics_token: Option<Secret>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Where to read templates from instead of the copies built into the binary (for editing
    /// them without rebuilding).
    pub templates_dir: Option<PathBuf>,
    /// Where the static files are; `None` looks in the usual places (see `pages::assets`).
    pub static_dir: Option<PathBuf>,
}

/// The origin of `raw`, an absolute `http://` or `https://` URL with no path, query or
/// fragment beyond a trailing slash.
fn parse_public_url(raw: &str) -> Result<String, String> {
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("expected http://host[:port] or https://host[:port], got {raw:?}"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!("expected an origin (scheme, host and port only), got {raw:?}"));
    }
    Ok(url.origin().ascii_serialization())
}

/// Default location of the embedded SQLite database and the generated development secret.
pub const DATA_DIR: &str = "data";

impl Settings {
    /// Reads the process environment (after loading `.env`, if present).
    pub fn from_env() -> Result<Self, SettingsError> {
        // A missing .env is normal; a malformed one is reported by the variables it fails to set.
        let _ = dotenvy::dotenv();
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Builds settings from a map of variables; tests use this to avoid touching the environment.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());

        let app_env = match get("APP_ENV").unwrap_or("development") {
            "development" | "dev" => AppEnv::Development,
            "production" | "prod" => AppEnv::Production,
            other => {
                return Err(SettingsError::new(
                    "APP_ENV",
                    format!("expected development or production, got {other:?}"),
                ))
            }
        };

        let bind = get("BIND").unwrap_or("127.0.0.1:8080").to_owned();
        if !bind.contains(':') {
            return Err(SettingsError::new("BIND", "expected host:port, e.g. 127.0.0.1:8080"));
        }

        let public_url = parse_public_url(get("PUBLIC_URL").unwrap_or("http://localhost:8080"))
            .map_err(|reason| SettingsError::new("PUBLIC_URL", reason))?;

        let default_db = format!("sqlite://{DATA_DIR}/latchkey.sqlite3");
        let database_url = DatabaseUrl::parse(get("DATABASE_URL").unwrap_or(&default_db))
            .map_err(|e| SettingsError::new("DATABASE_URL", e.0))?;

        let session_store = match get("SESSION_STORE").unwrap_or("database") {
            "cookie" => SessionStoreKind::Cookie,
            "redis" => SessionStoreKind::Redis,
            "database" => SessionStoreKind::Database,
            other => {
                return Err(SettingsError::new(
                    "SESSION_STORE",
                    format!("expected cookie, redis or database, got {other:?}"),
                ))
            }
        };
        let duration =
            |var: &'static str, default: u64| parse_duration_var(get(var), var, Duration::from_secs(default));
        let sessions = SessionPolicy {
            idle_timeout: duration("IDLE_TIMEOUT", 30 * 60)?,
            absolute_timeout: duration("ABSOLUTE_TIMEOUT", 12 * 3600)?,
            remember_duration: duration("REMEMBER_DURATION", 30 * 86_400)?,
            rotate_interval: duration("ROTATE_INTERVAL", 15 * 60)?,
            rotate_grace: duration("ROTATE_GRACE", 30)?,
            timeout_warning: duration("TIMEOUT_WARNING", 2 * 60)?,
            reauth_window: duration("REAUTH_WINDOW", 15 * 60)?,
            purge_interval: duration("SESSION_PURGE_INTERVAL", 10 * 60)?,
            protection: match get("SESSION_PROTECTION").unwrap_or("basic") {
                "off" => Protection::Off,
                "basic" => Protection::Basic,
                "strong" => Protection::Strong,
                other => {
                    return Err(SettingsError::new(
                        "SESSION_PROTECTION",
                        format!("expected off, basic or strong, got {other:?}"),
                    ))
                }
            },
            trusted_proxies: parse_ips(get("TRUSTED_PROXIES"), "TRUSTED_PROXIES", &[])?,
            require_verified_email: parse_bool_var(
                get("REQUIRE_VERIFIED_EMAIL"),
                "REQUIRE_VERIFIED_EMAIL",
                false,
            )?,
        };
        if sessions.absolute_timeout < sessions.idle_timeout {
            return Err(SettingsError::new("ABSOLUTE_TIMEOUT", "must not be shorter than IDLE_TIMEOUT"));
        }
        if sessions.timeout_warning >= sessions.idle_timeout {
            return Err(SettingsError::new("TIMEOUT_WARNING", "must be shorter than IDLE_TIMEOUT"));
        }
        let redis_url = get("REDIS_URL").map(Secret::new);
        if let Some(url) = &redis_url {
            if !(url.expose().starts_with("redis://")
                || url.expose().starts_with("rediss://")
                || url.expose().starts_with("redis+unix://")
                || url.expose().starts_with("unix://"))
            {
                return Err(SettingsError::new("REDIS_URL", "expected a redis:// or rediss:// URL"));
            }
        }
        if session_store == SessionStoreKind::Redis && redis_url.is_none() {
            return Err(SettingsError::new("REDIS_URL", "required when SESSION_STORE=redis"));
        }

        let secret_key = match get("SECRET_KEY") {
            Some(key) => SecretKey::new(key.as_bytes().to_vec())?,
            None if app_env == AppEnv::Production => {
                return Err(SettingsError::new("SECRET_KEY", "required when APP_ENV=production"))
            }
            None => SecretKey::new(development_secret(Path::new(DATA_DIR))?.into_bytes())?,
        };

        let secret_key_previous = match get("SECRET_KEY_PREVIOUS") {
            None => None,
            Some(key) => Some(
                SecretKey::new(key.as_bytes().to_vec())
                    .map_err(|e| SettingsError::new("SECRET_KEY_PREVIOUS", e.reason))?,
            ),
        };
        let shutdown_timeout =
            parse_duration_var(get("SHUTDOWN_TIMEOUT"), "SHUTDOWN_TIMEOUT", Duration::from_secs(30))?;

        let bcrypt_cost = parse_number(get("BCRYPT_COST"), "BCRYPT_COST", 12)?;
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(SettingsError::new("BCRYPT_COST", "must be between 4 and 31"));
        }
        if app_env == AppEnv::Production && bcrypt_cost < 10 {
            return Err(SettingsError::new("BCRYPT_COST", "must be at least 10 when APP_ENV=production"));
        }
        let password_min_length = parse_number(get("PASSWORD_MIN_LENGTH"), "PASSWORD_MIN_LENGTH", 12)?;
        if !(8..=256).contains(&password_min_length) {
            return Err(SettingsError::new("PASSWORD_MIN_LENGTH", "must be between 8 and 256"));
        }
        let throttle = match get("THROTTLE").unwrap_or("on") {
            "on" => Some(throttle_policy(&get)?),
            "off" => None,
            other => {
                return Err(SettingsError::new("THROTTLE", format!("expected on or off, got {other:?}")))
            }
        };
        let database_pool_size = parse_number(get("DATABASE_POOL_SIZE"), "DATABASE_POOL_SIZE", 10)?;
        if database_pool_size == 0 {
            return Err(SettingsError::new("DATABASE_POOL_SIZE", "must be at least 1"));
        }
        // r2d2 retries a failed connection with a back-off capped at half this time-out, so it
        // also bounds how long pages stay 503 after the database returns.
        let database_timeout =
            parse_duration_var(get("DATABASE_TIMEOUT"), "DATABASE_TIMEOUT", Duration::from_secs(2))?;
        let redis_timeout =
            parse_duration_var(get("REDIS_TIMEOUT"), "REDIS_TIMEOUT", Duration::from_secs(2))?;
        let hash_threads =
            parse_number(get("HASH_THREADS"), "HASH_THREADS", latchkey_auth::password::default_threads())?;
        if hash_threads == 0 {
            return Err(SettingsError::new("HASH_THREADS", "must be at least 1"));
        }
        let hash_queue = parse_number(
            get("HASH_QUEUE"),
            "HASH_QUEUE",
            hash_threads * latchkey_auth::password::DEFAULT_QUEUE_PER_THREAD,
        )?;
        let login_cache_ttl = match get("LOGIN_CACHE_TTL") {
            Some("off") => None,
            raw => Some(parse_duration_var(raw, "LOGIN_CACHE_TTL", Duration::from_secs(10))?),
        };

        let audit_retention =
            parse_duration_var(get("AUDIT_RETENTION"), "AUDIT_RETENTION", Duration::from_secs(90 * 86_400))?;
        let log_format = LogFormat::parse(get("LOG_FORMAT"))?;
        let mail = MailSettings::from_vars(&get)?;
        let alerts = AlertSettings::from_vars(&get)?;
        let loopback = [IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)];
        let metrics_allow = parse_ips(get("METRICS_ALLOW"), "METRICS_ALLOW", &loopback)?;
        let metrics_token = get("METRICS_TOKEN").map(Secret::new);
        if metrics_token.as_ref().is_some_and(|token| token.expose().len() < 32) {
            return Err(SettingsError::new("METRICS_TOKEN", "must be at least 32 characters"));
        }

        Ok(Self {
            app_env,
            bind,
            public_url,
            database_url,
            database_pool_size,
            database_timeout,
            redis_url,
            redis_timeout,
            login_cache_ttl,
            session_store,
            sessions,
            secret_key,
            secret_key_previous,
            shutdown_timeout,
            bcrypt_cost,
            hash_threads,
            hash_queue,
            password_min_length,
            throttle,
            audit_retention,
            mail,
            alerts,
            metrics_allow,
            metrics_token,
            log_format,
            templates_dir: get("TEMPLATES_DIR").map(PathBuf::from),
            static_dir: get("STATIC_DIR").map(PathBuf::from),
        })
    }

    pub fn is_production(&self) -> bool {
        self.app_env == AppEnv::Production
    }

    /// What the auth layer needs: the session policy, with the login generation rotating
    /// where session ids cannot (the cookie store).
    pub fn login_policy(&self) -> LoginPolicy {
        self.sessions.login_policy(self.session_store != SessionStoreKind::Cookie)
    }
}

/// A comma-separated list of IP addresses, or `default` when unset.
fn parse_ips(raw: Option<&str>, var: &'static str, default: &[IpAddr]) -> Result<Vec<IpAddr>, SettingsError> {
    let Some(list) = raw else { return Ok(default.to_vec()) };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|ip| ip.parse().map_err(|_| SettingsError::new(var, format!("{ip:?} is not an IP address"))))
        .collect()
}

/// The alert rules (`src/alerts.rs`): how many events in how long raise an alert.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Where each alert is POSTed as JSON, if anywhere.
    pub webhook: Option<Secret>,
    /// Failed sign-ins, codes and re-authentications of one account.
    pub account_failures: Limit,
    /// Failed sign-ins, codes and re-authentications from one client address.
    pub ip_failures: Limit,
    /// Refused forms (CSRF) across the site.
    pub csrf_failures: Limit,
    /// How far back a login's device is looked for among the account's earlier logins; a
    /// device not seen in that time is new (an email and an alert).
    pub new_device_window: Duration,
}

impl AlertSettings {
    fn from_vars<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Self, SettingsError> {
        let limit = |var: &'static str, default: Limit| parse_limit_var(get(var), var, default);
        const TEN_MINUTES: Duration = Duration::from_secs(600);
        let webhook = match get("ALERT_WEBHOOK_URL") {
            None => None,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => Some(Secret::new(url)),
            Some(_) => return Err(SettingsError::new("ALERT_WEBHOOK_URL", "expected http://… or https://…")),
        };
        Ok(Self {
            webhook,
            account_failures: limit("ALERT_ACCOUNT_FAILURES", Limit::new(10, TEN_MINUTES))?,
            ip_failures: limit("ALERT_IP_FAILURES", Limit::new(50, TEN_MINUTES))?,
            csrf_failures: limit("ALERT_CSRF_FAILURES", Limit::new(20, TEN_MINUTES))?,
            new_device_window: parse_duration_var(
                get("NEW_DEVICE_WINDOW"),
                "NEW_DEVICE_WINDOW",
                Duration::from_secs(90 * 86_400),
            )?,
        })
    }
}

/// How the site sends mail.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `smtp://` or `smtps://`, with credentials; `None`: files in development, held in the
    /// outbox in production.
    pub smtp_url: Option<Secret>,
    /// The `From` of every message.
    pub from: String,
    /// Where messages are written as `.eml` files in development without `SMTP_URL`.
    pub outbox_dir: PathBuf,
    /// Longest an SMTP exchange may take before the attempt counts as failed.
    pub smtp_timeout: Duration,
    /// The wait after a failed attempt, doubling after each.
    pub retry: Duration,
    /// Attempts at a message before it is given up.
    pub max_attempts: u32,
    /// How long a password-reset link works.
    pub reset_ttl: Duration,
    /// How long a link that confirms an email address works.
    pub confirm_ttl: Duration,
}

impl MailSettings {
    fn from_vars<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Self, SettingsError> {
        let smtp_url = match get("SMTP_URL") {
            None => None,
            Some(url) if url.starts_with("smtp://") || url.starts_with("smtps://") => Some(Secret::new(url)),
            Some(_) => return Err(SettingsError::new("SMTP_URL", "expected smtp://… or smtps://…")),
        };
        let from = get("MAIL_FROM").unwrap_or("latchkey <no-reply@localhost>").to_owned();
        if from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(SettingsError::new(
                "MAIL_FROM",
                "expected an address, e.g. Site <no-reply@example.com>",
            ));
        }
        let max_attempts = parse_number(get("MAIL_MAX_ATTEMPTS"), "MAIL_MAX_ATTEMPTS", 8)?;
        if max_attempts == 0 {
            return Err(SettingsError::new("MAIL_MAX_ATTEMPTS", "must be at least 1"));
        }
        Ok(Self {
            smtp_url,
            from,
            outbox_dir: PathBuf::from(get("OUTBOX_DIR").unwrap_or("data/outbox")),
            smtp_timeout: parse_duration_var(get("SMTP_TIMEOUT"), "SMTP_TIMEOUT", Duration::from_secs(10))?,
            retry: parse_duration_var(get("MAIL_RETRY"), "MAIL_RETRY", Duration::from_secs(5))?,
            max_attempts,
            reset_ttl: parse_duration_var(
                get("PASSWORD_RESET_TTL"),
                "PASSWORD_RESET_TTL",
                Duration::from_secs(30 * 60),
            )?,
            confirm_ttl: parse_duration_var(
                get("EMAIL_CONFIRM_TTL"),
                "EMAIL_CONFIRM_TTL",
                Duration::from_secs(24 * 3600),
            )?,
        })
    }
}

/// The throttle's limits, each `THROTTLE_*` setting over its default.
fn throttle_policy<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<ThrottlePolicy, SettingsError> {
    let defaults = ThrottlePolicy::default();
    let limit = |var: &'static str, default: Limit| parse_limit_var(get(var), var, default);
    let policy = ThrottlePolicy {
        login_email_ip: limit("THROTTLE_LOGIN", defaults.login_email_ip)?,
        login_ip: limit("THROTTLE_LOGIN_IP", defaults.login_ip)?,
        delay_after: parse_number(get("THROTTLE_DELAY_AFTER"), "THROTTLE_DELAY_AFTER", defaults.delay_after)?,
        delay_max: parse_duration_var(get("THROTTLE_DELAY_MAX"), "THROTTLE_DELAY_MAX", defaults.delay_max)?,
        lock_after: parse_number(get("THROTTLE_LOCK_AFTER"), "THROTTLE_LOCK_AFTER", defaults.lock_after)?,
        register: limit("THROTTLE_REGISTER", defaults.register)?,
        reauth: limit("THROTTLE_REAUTH", defaults.reauth)?,
        second_factor: limit("THROTTLE_SECOND_FACTOR", defaults.second_factor)?,
        guest_session: limit("THROTTLE_GUEST_SESSION", defaults.guest_session)?,
        email: limit("THROTTLE_EMAIL", defaults.email)?,
        email_ip: limit("THROTTLE_EMAIL_IP", defaults.email_ip)?,
    };
    if policy.lock_after <= policy.delay_after {
        return Err(SettingsError::new("THROTTLE_LOCK_AFTER", "must be more than THROTTLE_DELAY_AFTER"));
    }
    if policy.second_factor.count <= 5 {
        // The second step's own rule (five wrong codes end a pending login) must come first.
        return Err(SettingsError::new("THROTTLE_SECOND_FACTOR", "must allow more than 5 attempts"));
    }
    Ok(policy)
}

/// A limit setting (`5/1m`), or `default` when unset.
fn parse_limit_var(raw: Option<&str>, var: &'static str, default: Limit) -> Result<Limit, SettingsError> {
    raw.map_or(Ok(default), |raw| parse_limit(raw).map_err(|reason| SettingsError::new(var, reason)))
}

/// `true` or `false`, or `default` when unset.
fn parse_bool_var(raw: Option<&str>, var: &'static str, default: bool) -> Result<bool, SettingsError> {
    match raw {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(SettingsError::new(var, format!("expected true or false, got {other:?}"))),
    }
}

/// `N/duration`: at most N events per window, e.g. `5/1m`.
fn parse_limit(raw: &str) -> Result<Limit, String> {
    let (count, window) =
        raw.split_once('/').ok_or_else(|| format!("expected count/duration such as 5/1m, got {raw:?}"))?;
    let count: u64 =
        count.trim().parse().map_err(|_| format!("expected a whole number before /, got {raw:?}"))?;
    let window = parse_duration(window.trim())?;
    if count == 0 || window.is_zero() {
        return Err(format!("expected a count and a window above zero, got {raw:?}"));
    }
    Ok(Limit::new(count, window))
}

fn parse_number<T: std::str::FromStr>(
    raw: Option<&str>,
    var: &'static str,
    default: T,
) -> Result<T, SettingsError> {
    match raw {
        None => Ok(default),
        Some(raw) => {
            raw.parse().map_err(|_| SettingsError::new(var, format!("expected a whole number, got {raw:?}")))
        }
    }
}

fn parse_duration_var(
    raw: Option<&str>,
    var: &'static str,
    default: Duration,
) -> Result<Duration, SettingsError> {
    match raw {
        None => Ok(default),
        Some(raw) => match parse_duration(raw) {
            Ok(duration) if !duration.is_zero() => Ok(duration),
            Ok(_) => Err(SettingsError::new(var, "must be longer than zero")),
            Err(reason) => Err(SettingsError::new(var, reason)),
        },
    }
}

/// Parses `90s`, `30m`, `12h`, `30d` or plain seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => raw.split_at(at),
        None => (raw, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 90s, 30m, 12h or 30d, got {raw:?}"))?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown duration unit in {raw:?}; use s, m, h or d")),
    };
    value
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {raw:?} is too large"))
}

/// In development a missing `SECRET_KEY` is generated once and kept in `data/secret_key`, so
/// restarts keep people logged in. Production must set the variable.
fn development_secret(dir: &Path) -> Result<String, SettingsError> {
    let path = dir.join("secret_key");
    let fail = |reason: String| SettingsError::new("SECRET_KEY", reason);
    match std::fs::read_to_string(&path) {
        Ok(existing) => return Ok(existing.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(format!("cannot read {}: {e}", path.display()))),
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let key = SecretKey::generate();
    write_private(&path, &key).map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    log::warn!("SECRET_KEY is not set; generated a development key in {}", path.display());
    Ok(key)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn database_url_scheme_picks_the_backend() {
        let err = Settings::from_vars(&vars(&[("DATABASE_URL", "mysql://h/db")])).err().map(|e| e.var);
        assert_eq!(err, Some("DATABASE_URL"));
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let key = "k".repeat(64);
        let mut map: HashMap<String, String> = [("SECRET_KEY".to_owned(), key)].into_iter().collect();
        map.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        map
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let cases = [
            ("APP_ENV", "staging"),
            ("SESSION_STORE", "memcached"),
            ("BCRYPT_COST", "two"),
            ("BCRYPT_COST", "40"),
            ("SECRET_KEY", "short"),
            ("SECRET_KEY_PREVIOUS", "short"),
            ("SHUTDOWN_TIMEOUT", "0s"),
            ("DATABASE_TIMEOUT", "soon"),
            ("REDIS_URL", "http://x"),
            ("IDLE_TIMEOUT", "forever"),
            ("SESSION_PROTECTION", "paranoid"),
            ("TRUSTED_PROXIES", "10.0.0.1, proxy.local"),
        ];
        for (var, value) in cases {
            let err = Settings::from_vars(&vars(&[(var, value)])).err().map(|e| e.var);
            assert_eq!(err, Some(var), "{var}={value}");
        }
        let err = Settings::from_vars(&vars(&[("SESSION_STORE", "redis")])).err().map(|e| e.var);
        assert_eq!(err, Some("REDIS_URL"));
    }

    #[test]
    fn production_requires_a_secret_key() {
        let mut map = vars(&[("APP_ENV", "production")]);
        map.remove("SECRET_KEY");
        assert_eq!(Settings::from_vars(&map).err().map(|e| e.var), Some("SECRET_KEY"));
    }

    #[test]
    fn production_refuses_a_weak_bcrypt_cost() {
        let err = Settings::from_vars(&vars(&[("APP_ENV", "production"), ("BCRYPT_COST", "9")])).err();
        assert_eq!(err.map(|e| e.var), Some("BCRYPT_COST"));
        assert!(Settings::from_vars(&vars(&[("APP_ENV", "production"), ("BCRYPT_COST", "10")])).is_ok());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let settings = Settings::from_vars(&vars(&[
            ("DATABASE_URL", "postgres://u:hunter2@h/db"),
            ("REDIS_URL", "redis://:swordfish@h"),
            ("SECRET_KEY_PREVIOUS", &"p".repeat(64)),
        ]))
        .unwrap_or_else(|e| unreachable!("the settings are valid: {e}"));
        let text = format!("{settings:?}");
        assert!(text.contains("Postgres") && text.contains("redis_url: Some"), "{text}");
        assert!(!text.contains("swordfish"), "{text}");
        assert!(!text.contains("hunter2") && !text.contains(&"k".repeat(64)), "{text}");
        assert!(!text.contains(&"p".repeat(64)), "the previous key is redacted too: {text}");
    }
}
