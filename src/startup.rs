//! `Application::build`: settings in, a bound server out. `main` and the tests both start the
//! site only through here. This is where the layers meet: the middleware order and the routes.

use std::net::TcpListener;
use std::sync::Arc;

use actix_files::Files;
use actix_web::dev::Server;
use actix_web::middleware::{from_fn, Logger};
use actix_web::{web, App, HttpMessage, HttpServer};
use actix_web_flash_messages::FlashMessagesFramework;
use anyhow::Context as _;
use latchkey_auth::cache::LoginCache;
use latchkey_auth::csrf;
use latchkey_auth::passkeys::RelyingParty;
use latchkey_auth::password::Hasher;
use latchkey_auth::throttle::Throttle;
use latchkey_auth::{identity_middleware, Auth};
use latchkey_sessions::invalidation::{Channel, Invalidations};
use latchkey_sessions::redis::RedisStore;
use latchkey_sessions::{cookie_name, Backend, Lifecycle, SessionCookie, Store};

use crate::alerts::{Alert, Alerts};
use crate::db::{self, DatabaseUrl, DbError, Pool};
use crate::error::AppError;
use crate::http::{self, SecurityHeaders};
use crate::keys::Keys;
use crate::mail::{self, sender::Started, Mailer};
use crate::metrics::Metrics;
use crate::models::{PasswordReset, User};
use crate::pages::flash::{self, FlashCookieStore};
use crate::pages::{assets, ErrorPages};
use crate::routes;
use crate::settings::{SessionStoreKind, Settings};
use crate::shop::cart::MergeGuestCart;
use crate::state::AppState;

/// A bound, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Connects to the database and session store, applies migrations, loads templates and
    /// finds the static files, then binds `settings.bind` (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, anyhow::Error> {
        Self::build_on(settings, None).await
    }

    /// [`Application::build`] on a `listener` already bound (then `settings.bind` is not
    /// used): its port is known before the settings are made, so `PUBLIC_URL` can name it.
    pub async fn build_on(settings: Settings, listener: Option<TcpListener>) -> Result<Self, anyhow::Error> {
        let tera = assets::templates(settings.templates_dir.as_deref())?;
        let static_dir = assets::static_dir(settings.static_dir.as_deref())?;
        let pool = db::pool(&settings.database_url, settings.database_pool_size, settings.database_timeout)?;
        for migration in db::migrate_url(&settings.database_url).await? {
            log::info!("applied migration {migration}");
        }

        let store = connect_store(&settings, &pool)?;
        // The Redis of REDIS_URL, whatever the session store: throttling counters live there too.
        let redis = match (store.backend(), &settings.redis_url) {
            (Backend::Redis(redis), _) => Some(redis.clone()),
            (_, Some(url)) => Some(
                RedisStore::new(url.expose(), settings.redis_timeout, settings.sessions.rotate_grace)
                    .map_err(|e| anyhow::anyhow!("invalid REDIS_URL: {e}"))?,
            ),
            (_, None) => None,
        };
        if let Some(redis) = &redis {
            // Not fatal: the site starts, answers 503 and recovers once Redis is reachable.
            if let Err(error) = redis.ping().await {
                log::warn!("Redis (REDIS_URL) is not reachable yet: {error:#}");
            }
        }

        let listener = match listener {
            Some(listener) => listener,
            None => TcpListener::bind(&settings.bind)
                .with_context(|| format!("cannot listen on {} (BIND)", settings.bind))?,
        };
        let address = listener.local_addr()?;
        let production = settings.is_production();
        let shutdown_timeout = settings.shutdown_timeout;
        // Said once everything below is ready (the password hasher's first hash included), so
        // that whoever waits for this line can send requests at once.
        let listening = format!(
            "latchkey listening on http://{address} ({} mode; database: {}; sessions: {}; static files: {})",
            if production { "production" } else { "development" },
            settings.database_url.describe(),
            store.describe(),
            static_dir.display(),
        );

        let keys = Keys::derive(&settings.secret_key);
        let previous_keys = settings.secret_key_previous.as_ref().map(Keys::derive);
        let rekey = keys.rekey(previous_keys.as_ref(), production);
        if rekey.is_active() {
            log::info!("SECRET_KEY_PREVIOUS is set: cookies and CSRF tokens of the previous key are accepted and re-issued");
        }
        let lifetimes = settings.sessions.lifetimes();
        let policy = settings.login_policy();
        let metrics = Metrics::new(settings.metrics_allow.clone(), settings.metrics_token.clone());
        let hasher = Hasher::with_threads(settings.bcrypt_cost, settings.hash_threads, settings.hash_queue)
            .await?
            .with_observer(metrics.hash_observer());
        let passkeys = RelyingParty::for_origin(&settings.public_url, "latchkey");
        match passkeys.off_reason() {
            None => log::info!("passkeys are on for {}", settings.public_url),
            Some(reason) => log::warn!("passkeys are off: {reason}"),
        }
        let throttle = match (&settings.throttle, &redis) {
            (None, _) => {
                log::warn!("THROTTLE=off: nothing limits password guessing; use it for benchmarks only");
                Throttle::off()
            }
            (Some(policy), Some(redis)) => {
                Throttle::in_redis(redis.clone(), policy.clone(), &keys.throttle_prefix(), &keys.throttle)
            }
            (Some(policy), None) => {
                Throttle::in_database(pool.clone(), policy.clone(), &keys.throttle_prefix(), &keys.throttle)
            }
        };
        spawn_purger(pool.clone(), settings.clone());
        let mailer = Mailer::new(keys.outbox(previous_keys.as_ref()), &settings.public_url);
        let alerts = Alerts::spawn(pool.clone(), settings.alerts.clone(), (mailer.clone(), tera.clone()));
        match mail::sender::spawn(pool.clone(), mailer.clone(), &settings.mail, production)? {
            Started::Smtp => log::info!("mail is sent through SMTP_URL"),
            Started::Files(dir) => {
                log::info!("SMTP_URL is not set: mail is written to {} as .eml files", dir.display())
            }
            Started::Held => {
                log::warn!("SMTP_URL is not set: mail waits in the outbox table until an instance with SMTP_URL sends it")
            }
        }
        let (login_cache, store) = match settings.login_cache_ttl {
            Some(ttl) => {
                let invalidations =
                    Invalidations::start(invalidation_channel(&settings, &pool, redis.clone()));
                let logins = LoginCache::new(ttl, CACHE_CAPACITY, &invalidations);
                (logins, store.with_cache(ttl, CACHE_CAPACITY, &invalidations))
            }
            None => (LoginCache::off(), store),
        };
        let auth = web::Data::new(
            Auth::new(pool.clone(), policy, hasher, keys.csrf.clone(), production)
                .with_login_cache(login_cache)
                .with_previous_csrf_key(previous_keys.as_ref().map(|previous| previous.csrf.clone()))
                .with_second_factors(keys.factors(previous_keys.as_ref()))
                .with_passkeys(passkeys)
                .with_throttle(throttle)
                .with_login_hook(MergeGuestCart)
                .with_event_observer({
                    let (metrics, alerts) = (metrics.clone(), alerts.clone());
                    Arc::new(move |event, record| {
                        metrics.observe_event(event);
                        alerts.observe(event, record);
                    })
                })
                .with_lock_hook(Arc::new(routes::password_reset::tell_owner_of_lock)),
        );
        let lifecycle = Lifecycle::new(&lifetimes, store.rotates_ids());
        let remember = SessionCookie::new(&lifetimes, production);
        let headers = SecurityHeaders { production, session_cookie: cookie_name(production) };
        let sessions = store.clone();
        let state =
            web::Data::new(AppState { settings, pool, tera, keys: keys.clone(), redis, mailer, sessions });

        let server = HttpServer::new(move || {
            let flashes = FlashCookieStore::new(keys.flash.clone(), production);
            // Probes and static files answer without a session, so they never wait on (or fail
            // with) the session store; every page goes through the session layers.
            let pages = web::scope("")
                // Innermost first: identity needs the session.
                .wrap(identity_middleware())
                .wrap(lifecycle.clone())
                .wrap(store.middleware(keys.session.clone(), production))
                .wrap(remember.clone())
                .wrap(from_fn(csrf::send_cookie))
                .wrap(from_fn(flash::expiry_notice))
                .wrap(FlashMessagesFramework::builder(flashes).build())
                .configure(routes::config)
                .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(AppError::NotFound) }));
            App::new()
                .app_data(state.clone())
                .app_data(auth.clone())
                .app_data(web::Data::new(metrics.clone()))
                // Errors from every layer become pages; every response gets the headers.
                .wrap(from_fn(http::refuse_unsupported))
                .wrap(ErrorPages)
                .wrap(from_fn(move |req, next| headers.apply(req, next)))
                // Outside every layer that reads a cookie: they see cookies of the current key.
                .wrap(rekey.clone())
                .wrap(access_log())
                .wrap(from_fn({
                    let metrics = metrics.clone();
                    move |req, next| metrics.clone().track(req, next)
                }))
                // Outermost: every log line and audit record of the request carries its id.
                .wrap(from_fn(latchkey_auth::guard::request_id))
                .configure(routes::health::config)
                .configure(crate::metrics::config)
                .service(Files::new("/static", &static_dir))
                .service(pages)
        })
        .listen(listener)?
        // SIGTERM (Docker's stop signal) stops accepting and lets requests in flight, a login in
        // the middle of its bcrypt included, finish for this long; SIGINT stops at once.
        .shutdown_timeout(shutdown_timeout.as_secs().max(1))
        .run();

        log::info!("{listening}");
        Ok(Self { port: address.port(), server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until stopped: SIGTERM drains requests in flight for up to `SHUTDOWN_TIMEOUT`.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await?;
        log::info!("latchkey stopped");
        Ok(())
    }
}

/// At most this many logins, and this many sessions' state, are cached per instance (about
/// 1 KiB each); entries past their time to live are swept out once a time to live.
const CACHE_CAPACITY: usize = 100_000;

/// How instances tell each other that a login, a user or session state changed: Redis pub/sub when `REDIS_URL`
/// is set (through `redis`, or a connection of its own), PostgreSQL `LISTEN/NOTIFY` on
/// PostgreSQL, and on SQLite alone a watch on the database file's commits.
pub fn invalidation_channel(settings: &Settings, pool: &Pool, redis: Option<RedisStore>) -> Channel {
    let redis = redis.or_else(|| {
        let url = settings.redis_url.as_ref()?;
        RedisStore::new(url.expose(), settings.redis_timeout, settings.sessions.rotate_grace).ok()
    });
    match (redis, &settings.redis_url, &settings.database_url) {
        (Some(store), Some(url), _) => Channel::Redis { store, url: url.expose().to_owned() },
        (_, _, DatabaseUrl::Postgres(url)) => Channel::Postgres { pool: pool.clone(), url: url.clone() },
        (_, _, DatabaseUrl::Sqlite(path)) => Channel::Sqlite { path: path.to_string_lossy().into_owned() },
    }
}

/// The session store named by the settings.
fn connect_store(settings: &Settings, pool: &Pool) -> Result<Store, anyhow::Error> {
    let backend = match (settings.session_store, &settings.redis_url) {
        (SessionStoreKind::Cookie, _) => Backend::Cookie,
        (SessionStoreKind::Database, _) => Backend::Database(
            latchkey_sessions::database::DatabaseStore::new(pool.clone(), settings.sessions.rotate_grace),
        ),
        (SessionStoreKind::Redis, Some(url)) => Backend::Redis(
            RedisStore::new(url.expose(), settings.redis_timeout, settings.sessions.rotate_grace)
                .map_err(|e| anyhow::anyhow!("invalid REDIS_URL: {e}"))?,
        ),
        (SessionStoreKind::Redis, None) => anyhow::bail!("REDIS_URL is required when SESSION_STORE=redis"),
    };
    Ok(Store::new(backend, settings.sessions.lifetimes()))
}

/// Every `SESSION_PURGE_INTERVAL`, for the life of the server, purges ended logins, expired
/// session state and audit events past `AUDIT_RETENTION`.
fn spawn_purger(pool: Pool, settings: Settings) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(settings.sessions.purge_interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            match purge(&pool, &settings).await {
                Ok(Purged { logins: 0, sessions: 0, audit_events: 0 }) => {}
                Ok(purged) => log::info!("purged {purged}"),
                Err(error) => log::warn!("purging failed: {}", latchkey_auth::cause_chain(&error)),
            }
        }
    });
}

/// The access log: one line a request, with the request id its audit events carry (set by
/// `audit::request_id`, which runs outside it). Paths that carry a token (a password-reset
/// link) are logged without it.
fn access_log() -> Logger {
    Logger::new(r#"%a "%{request_line}xi" %s %b %Dms %{request_id}xi"#)
        .custom_request_replace("request_line", |req| {
            let path = http::redact_token_path(req.path());
            let query = if req.query_string().is_empty() {
                String::new()
            } else {
                format!("?{}", req.query_string())
            };
            format!("{} {path}{query} {:?}", req.method(), req.version())
        })
        .custom_request_replace("request_id", |req| {
            req.extensions()
                .get::<latchkey_auth::audit::RequestId>()
                .map(|id| id.0.clone())
                .unwrap_or_default()
        })
}

/// What a purge deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Ended logins, stale pending logins, expired ceremonies, throttle counters and
    /// password-reset links.
    pub logins: usize,
    /// Expired session state (the database store only).
    pub sessions: usize,
    /// Audit events and alerts older than `AUDIT_RETENTION`.
    pub audit_events: usize,
}

impl std::fmt::Display for Purged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ended login(s), {} expired session(s) and {} old audit event(s)",
            self.logins, self.sessions, self.audit_events
        )
    }
}

/// Deletes logins the timeouts have ended, expired session state when sessions live in the
/// database, and audit events past their retention.
pub async fn purge(pool: &Pool, settings: &Settings) -> Result<Purged, DbError> {
    let policy = settings.login_policy();
    let sessions_in_database = settings.session_store == SessionStoreKind::Database;
    let now = chrono::Utc::now().naive_utc();
    let audit_cutoff =
        now - chrono::TimeDelta::from_std(settings.audit_retention).unwrap_or(chrono::TimeDelta::MAX);
    db::run(pool, move |conn| {
        let logins = policy.purge_expired(conn, now)?
            + User::purge_stale_logins(conn)?
            + latchkey_auth::second_factor::PendingLogin::purge_expired(conn, now)?
            + latchkey_auth::passkeys::purge_expired(conn, now)?
            + latchkey_auth::throttle::purge_expired(conn, now)?
            + PasswordReset::purge_expired(conn, now)?
            + crate::models::EmailConfirmation::purge_expired(conn, now)?;
        let sessions =
            if sessions_in_database { latchkey_sessions::database::purge_expired_now(conn, now)? } else { 0 };
        let audit_events = latchkey_auth::audit::purge_older_than(conn, audit_cutoff)?
            + Alert::purge_older_than(conn, audit_cutoff)?;
        Ok(Purged { logins, sessions, audit_events })
    })
    .await
}
