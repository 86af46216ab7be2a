//! The channel on which instances sharing a database tell each other that cached data changed,
//! for the caches that keep it per instance: session state here ([`crate::cache`]), verified
//! logins in the auth layer.
//!
//! A change is applied by the instance that made it before its response goes out, and
//! published ([`Invalidations::publish`]) for the others: on Redis pub/sub when Redis is
//! configured, else PostgreSQL `NOTIFY`; on SQLite alone a watcher empties every cache when
//! another connection or process commits. One subscription per process delivers every message
//! to every [`Subscriber`]. While it is down the caches serve nothing ([`Invalidations::is_open`]
//! is false: fail closed), and they start again from empty when it comes back, since messages
//! may have been missed.
//!
//! Written here rather than with a crate: no crate ties Redis pub/sub, PostgreSQL
//! `LISTEN/NOTIFY` and SQLite's `data_version` to one open/closed signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::Connection;
use futures_util::StreamExt;
use latchkey_db::Pool;

use crate::redis::RedisStore;

/// The Redis channel and PostgreSQL notification channel invalidations travel on.
pub const CHANNEL: &str = "latchkey_changes";

/// How the instances sharing a database tell each other of changes.
#[derive(Clone)]
pub enum Channel {
    /// SQLite: no messages; a thread watches the database file and empties the caches when
    /// any other connection commits (SQLite's `PRAGMA data_version`), which covers other
    /// processes (the command line, another server on the same file) at the price of also
    /// emptying them for this server's own writes.
    Sqlite {
        /// The database file.
        path: String,
    },
    /// Redis pub/sub, through the shared [`RedisStore`] (publishing) and a subscription of
    /// its own to `url`.
    Redis {
        /// Publishes.
        store: RedisStore,
        /// The subscription's connection string.
        url: String,
    },
    /// PostgreSQL `NOTIFY` through `pool`, and `LISTEN` on a connection of its own to `url`.
    Postgres {
        /// Publishes.
        pool: Pool,
        /// The listening connection's database URL.
        url: String,
    },
}

impl Channel {
    /// Tells the other instances (and processes) of a change. `message` is a subscriber's
    /// prefix, a colon and letters, digits or hex (nothing to quote). Errors are logged: the
    /// change itself is already made; the others' caches drop it when their entries expire.
    pub async fn publish(&self, message: &str) {
        let sent = match self {
            Channel::Sqlite { .. } => return,
            Channel::Redis { store, .. } => store
                .query(async |conn| {
                    redis::cmd("PUBLISH").arg(CHANNEL).arg(message).query_async::<i64>(conn).await
                })
                .await
                .map(drop),
            Channel::Postgres { pool, .. } => {
                let sql = format!("NOTIFY {CHANNEL}, '{message}'");
                latchkey_db::run(pool, move |conn| conn.batch_execute(&sql)).await.map_err(Into::into)
            }
        };
        if let Err(error) = sent {
            log::error!("could not tell other instances of a change ({message}): {error:#}");
        }
    }
}

/// A cache that listens on the channel.
pub trait Subscriber: Send + Sync {
    /// Applies a message; returns whether it was this subscriber's (its prefix).
    fn receive(&self, message: &str) -> bool;
    /// Forgets everything (the channel opened or closed, or a message nobody knows).
    fn empty(&self);
}

/// The channel's subscription, shared by every cache of the process; cheap to clone.
#[derive(Clone)]
pub struct Invalidations {
    hub: Arc<Hub>,
}

struct Hub {
    channel: Channel,
    /// Whether the subscription (or watcher) is up.
    open: AtomicBool,
    subscribers: RwLock<Vec<Arc<dyn Subscriber>>>,
}

impl Invalidations {
    /// Starts the channel's subscription or watcher (call it inside the runtime). Nothing is
    /// open until it is up.
    pub fn start(channel: Channel) -> Self {
        let hub = Arc::new(Hub {
            channel: channel.clone(),
            open: AtomicBool::new(false),
            subscribers: RwLock::default(),
        });
        let watcher = Arc::clone(&hub);
        let spawned = match channel {
            Channel::Redis { url, .. } => {
                tokio::spawn(subscribe_redis(watcher, url));
                Ok(())
            }
            Channel::Postgres { url, .. } => std::thread::Builder::new()
                .name("invalidation-listen".into())
                .spawn(move || watch(&watcher, "PostgreSQL listener", || listen_postgres(&watcher, &url)))
                .map(drop),
            Channel::Sqlite { path } => std::thread::Builder::new()
                .name("invalidation-watch".into())
                .spawn(move || watch(&watcher, "SQLite watcher", || watch_sqlite(&watcher, &path)))
                .map(drop),
        };
        if let Err(error) = spawned {
            log::error!("the caches stay off: cannot start the invalidation watcher: {error}");
        }
        Self { hub }
    }

    /// Adds a cache that receives every message from now on.
    pub fn subscribe(&self, subscriber: Arc<dyn Subscriber>) {
        if let Ok(mut subscribers) = self.hub.subscribers.write() {
            subscribers.push(subscriber);
        }
    }

    /// Whether the subscription is up, so that caches may serve.
    pub fn is_open(&self) -> bool {
        self.hub.open.load(Ordering::Acquire)
    }

    /// Publishes a change for the other instances (the caller has applied it here).
    pub async fn publish(&self, message: &str) {
        self.hub.channel.publish(message).await
    }
}

impl Hub {
    fn each(&self, apply: impl Fn(&dyn Subscriber)) {
        // A panic while the lock was held left the list whole.
        let subscribers = self.subscribers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        subscribers.iter().for_each(|subscriber| apply(subscriber.as_ref()));
    }

    fn empty(&self) {
        self.each(|subscriber| subscriber.empty());
    }

    /// A message off the channel; one no subscriber knows empties every cache, to be safe.
    fn receive(&self, message: &str) {
        let subscribers = self.subscribers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut known = false;
        for subscriber in subscribers.iter() {
            known |= subscriber.receive(message);
        }
        if !known {
            log::warn!("unknown message on the invalidation channel: emptied the caches");
            subscribers.iter().for_each(|subscriber| subscriber.empty());
        }
    }

    /// The subscription is up: serve from empty caches (messages sent while it was down are
    /// lost).
    fn opened(&self) {
        self.empty();
        self.open.store(true, Ordering::Release);
        log::info!("the caches are serving: the invalidation channel is up");
    }

    /// The subscription is down: stop serving at once, and forget everything.
    fn closed(&self) {
        if self.open.swap(false, Ordering::AcqRel) {
            log::warn!("the caches stopped serving: the invalidation channel is down");
        }
        self.empty();
    }
}

/// How long a broken subscription waits before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// Keeps a Redis subscription to [`CHANNEL`] up for as long as the process runs.
async fn subscribe_redis(hub: Arc<Hub>, url: String) {
    loop {
        match subscribe_redis_once(&hub, &url).await {
            Ok(()) => log::warn!("the invalidation channel's Redis subscription ended"),
            Err(error) => log::warn!("the invalidation channel's Redis subscription failed: {error}"),
        }
        hub.closed();
        tokio::time::sleep(RETRY).await;
    }
}

async fn subscribe_redis_once(hub: &Hub, url: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    hub.opened();
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        match message.get_payload::<String>() {
            Ok(payload) => hub.receive(&payload),
            Err(_) => hub.empty(),
        }
    }
    Ok(())
}

/// How often the PostgreSQL listener and the SQLite watcher look for news (diesel offers no
/// blocking wait), and how often the listener checks that its connection is alive.
const POLL: Duration = Duration::from_millis(5);
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Keeps a blocking watcher (`once`, which returns only on failure) up for as long as the
/// process runs, on a thread of its own: diesel's connections are blocking.
fn watch(hub: &Hub, what: &str, once: impl Fn() -> Result<(), anyhow::Error>) {
    loop {
        if let Err(error) = once() {
            log::warn!("the invalidation channel's {what} failed: {error}");
        }
        hub.closed();
        std::thread::sleep(RETRY);
    }
}

fn listen_postgres(hub: &Hub, url: &str) -> Result<(), anyhow::Error> {
    let mut conn = diesel::PgConnection::establish(url)?;
    conn.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    hub.opened();
    let mut checked = Instant::now();
    loop {
        for notification in conn.notifications_iter() {
            hub.receive(&notification?.payload);
        }
        if checked.elapsed() >= HEARTBEAT {
            conn.batch_execute("SELECT 1")?;
            checked = Instant::now();
        }
        std::thread::sleep(POLL);
    }
}

#[derive(diesel::QueryableByName)]
struct DataVersion {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    data_version: i64,
}

fn data_version(conn: &mut diesel::SqliteConnection) -> diesel::QueryResult<i64> {
    use diesel::RunQueryDsl;
    diesel::sql_query("PRAGMA data_version").get_result::<DataVersion>(conn).map(|v| v.data_version)
}

fn watch_sqlite(hub: &Hub, path: &str) -> Result<(), anyhow::Error> {
    let mut conn = diesel::SqliteConnection::establish(path)?;
    let mut seen = data_version(&mut conn)?;
    hub.opened();
    loop {
        std::thread::sleep(POLL);
        let version = data_version(&mut conn)?;
        if version != seen {
            hub.empty();
            seen = version;
        }
    }
}
