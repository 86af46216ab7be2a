//! `Application::build`: settings in, a bound server out. `main` and the tests both start the
//! site only through here.

use std::net::TcpListener;

use actix_files::Files;
use actix_identity::IdentityMiddleware;
use actix_web::dev::Server;
use actix_web::middleware::{DefaultHeaders, Logger};
use actix_web::{web, App, HttpServer};
use actix_web_flash_messages::storage::CookieMessageStore;
use actix_web_flash_messages::FlashMessagesFramework;
use anyhow::Context as _;

use crate::auth::password;
use crate::db::{self, Pool};
use crate::error::{AppError, ErrorPages};
use crate::routes;
use crate::sessions::lifecycle::{Lifecycle, RememberCookie};
use crate::sessions::redis::RedisStore;
use crate::sessions::{self, Store};
use crate::settings::Settings;
use crate::web::keys::Keys;

/// What every request handler can reach, registered once as `web::Data<AppState>`.
pub struct AppState {
    pub settings: Settings,
    pub pool: Pool,
    pub tera: tera::Tera,
    pub keys: Keys,
    /// A bcrypt hash checked when an unknown email logs in, so failures take the same time.
    pub dummy_hash: String,
    /// The Redis store, when sessions live in Redis (for readiness checks).
    pub redis: Option<RedisStore>,
}

/// A bound, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Connects to the database and session store, applies migrations, loads templates and
    /// binds `settings.bind` (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, anyhow::Error> {
        let pool = db::pool(&settings.database_url, settings.database_pool_size, settings.database_timeout)?;
        let applied = {
            let pool = pool.clone();
            let url = settings.database_url.describe();
            tokio::task::spawn_blocking(move || -> Result<Vec<String>, anyhow::Error> {
                let mut conn =
                    pool.get().with_context(|| format!("cannot connect to {url} (DATABASE_URL)"))?;
                db::migrate(&mut conn)
            })
            .await??
        };
        for migration in &applied {
            log::info!("applied migration {migration}");
        }

        let templates = settings.templates_dir.join("**").join("*.html");
        let tera = tera::Tera::new(&templates.to_string_lossy())
            .with_context(|| format!("cannot load templates from {}", settings.templates_dir.display()))?;

        let cost = settings.bcrypt_cost;
        let dummy_hash =
            tokio::task::spawn_blocking(move || password::hash_blocking("latchkey dummy password", cost))
                .await??;

        let store = Store::connect(&settings, &pool).await?;
        let redis = store.redis().cloned();
        if let Some(redis) = &redis {
            // Not fatal: the site starts, answers 503 and recovers once Redis is reachable.
            if let Err(error) = redis.ping().await {
                log::warn!("Redis (REDIS_URL) is not reachable yet: {error:#}");
            }
        }

        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {} (BIND)", settings.bind))?;
        let address = listener.local_addr()?;
        log::info!(
            "latchkey listening on http://{address} ({} mode; database: {}; sessions: {})",
            if settings.is_production() { "production" } else { "development" },
            settings.database_url.describe(),
            store.describe(),
        );

        let production = settings.is_production();
        let lifecycle = Lifecycle {
            touch_interval: settings.sessions.touch_interval(),
            rotate_interval: store.is_server_side().then_some(settings.sessions.rotate_interval),
        };
        let remember = RememberCookie {
            cookie_name: sessions::cookie_name(production),
            lifetime: settings.sessions.remember_duration,
        };
        if store.is_database() {
            spawn_purger(pool.clone(), settings.sessions.purge_interval);
        }
        let static_dir = settings.static_dir.clone();
        let keys = Keys::derive(&settings.secret_key);
        let state = web::Data::new(AppState { settings, pool, tera, keys: keys.clone(), dummy_hash, redis });

        let server = HttpServer::new(move || {
            let flash_store = CookieMessageStore::builder(keys.flash.clone()).build();
            App::new()
                .app_data(state.clone())
                // Innermost first: identity needs the session; errors from both become pages.
                .wrap(IdentityMiddleware::default())
                .wrap(lifecycle.clone())
                .wrap(store.middleware(keys.session.clone(), production))
                .wrap(remember.clone())
                .wrap(FlashMessagesFramework::builder(flash_store).build())
                .wrap(ErrorPages)
                .wrap(security_headers())
                .wrap(Logger::new(r#"%a "%r" %s %b %Dms"#))
                .service(Files::new("/static", &static_dir))
                .configure(routes::config)
                .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(AppError::NotFound) }))
        })
        .listen(listener)?
        .run();

        Ok(Self { port: address.port(), server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Purges expired server-side session state every `interval`, for the life of the server.
fn spawn_purger(pool: Pool, interval: std::time::Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            match sessions::database::purge_expired(&pool).await {
                Ok(0) => {}
                Ok(purged) => log::info!("purged {purged} expired session(s)"),
                Err(error) => log::warn!("purging expired sessions failed: {error}"),
            }
        }
    });
}

/// Headers every response carries: no framing, no sniffing, scripts and styles only from us.
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "same-origin"))
        .add((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ))
}
