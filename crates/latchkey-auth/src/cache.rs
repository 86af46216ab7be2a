//! A per-instance cache of verified logins: a logged-in request usually costs no trip to the
//! database, and never serves a login that has ended.
//!
//! An entry holds a login's row and its user, as the last full check ([`crate::rules::check`])
//! read them. A request served from the cache re-applies every rule that needs no write
//! (timeouts, credential epoch, session protection, generation) to the cached row; anything
//! else (a write is due, the rules say no) goes to the database as before.
//!
//! The rule that keeps it correct: **whatever changes a login or its user tells the cache**
//! ([`LoginCache::forget_user`], [`LoginCache::forget_login`]). The change is applied on this
//! instance before the call returns, and is published on the invalidation [`Channel`] (Redis
//! pub/sub, or PostgreSQL `LISTEN/NOTIFY`) for the other instances. While an instance's
//! subscription is down it serves nothing from its cache (fail closed), and it empties the
//! cache when the subscription comes back, since messages may have been missed. A check that
//! read the database while an invalidation arrived does not store its (possibly stale) answer.
//! Entries also expire after a time to live, which bounds what a lost message could cost.
//!
//! Written here rather than with a cache crate: the map is the easy part (a `HashMap` behind
//! a mutex, held for a lookup and a clone); the part no crate does is the policy around it
//! (per-user invalidation across instances, and refusing to serve while the channel is down).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::Connection;
use futures_util::StreamExt;
use latchkey_db::Pool;
use latchkey_sessions::redis::RedisStore;

use crate::registry::Login;

/// The Redis channel and PostgreSQL notification channel invalidations travel on.
pub const CHANNEL: &str = "latchkey_logins";

/// How the instances sharing a database tell each other of changed logins and users.
#[derive(Clone)]
pub enum Channel {
    /// SQLite: no messages; a thread watches the database file and empties the cache when
    /// any other connection commits (SQLite's `PRAGMA data_version`), which covers other
    /// processes (the command line, another server on the same file) at the price of also
    /// emptying it for this server's own writes.
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

/// What changed, as it travels on the channel: `u:<user id>`, `l:<login id>`.
enum Change<'a> {
    User(i32),
    Login(&'a str),
}

impl Change<'_> {
    fn encode(&self) -> String {
        match self {
            Change::User(id) => format!("u:{id}"),
            Change::Login(id) => format!("l:{id}"),
        }
    }
}

impl Channel {
    /// Tells the other instances (and processes, such as the CLI) that `user_id`'s logins or
    /// user changed. Errors are logged: the change itself is already committed.
    pub async fn announce_user(&self, user_id: i32) {
        self.publish(&Change::User(user_id)).await
    }

    async fn publish(&self, change: &Change<'_>) {
        let message = change.encode();
        let sent = match self {
            Channel::Sqlite { .. } => return,
            Channel::Redis { store, .. } => store
                .query(async |conn| {
                    redis::cmd("PUBLISH").arg(CHANNEL).arg(&message).query_async::<i64>(conn).await
                })
                .await
                .map(drop),
            Channel::Postgres { pool, .. } => {
                // The message is `u:` or `l:` and digits or hex: nothing to quote.
                let sql = format!("NOTIFY {CHANNEL}, '{message}'");
                latchkey_db::run(pool, move |conn| conn.batch_execute(&sql)).await.map_err(Into::into)
            }
        };
        if let Err(error) = sent {
            // The other instances may keep serving from their caches until the entry's time
            // to live runs out (or their own subscription breaks, which empties them).
            log::error!("could not tell other instances that a login changed: {error:#}");
        }
    }
}

/// The cache; cheap to clone. [`LoginCache::off`] caches nothing.
#[derive(Clone)]
pub struct LoginCache {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, Entry>>,
    /// Moves on with every invalidation; a check stores its answer only if it has not moved
    /// since the check began reading.
    generation: AtomicU64,
    /// Whether the channel's subscription (or watcher) is up.
    open: AtomicBool,
    channel: Channel,
}

struct Entry {
    login: Login,
    user: Arc<dyn Any + Send + Sync>,
    stored: Instant,
}

/// A snapshot of the cache's invalidation count, taken before a check reads the database.
#[derive(Clone, Copy)]
pub(crate) struct Ticket(u64);

impl LoginCache {
    /// Caches nothing: every request checks its login in the database.
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// A cache of at most `capacity` logins, each kept at most `ttl`, invalidated across
    /// instances through `channel`. It starts the channel's subscription or watcher (call it
    /// inside the runtime) and serves nothing until that is up.
    pub fn new(ttl: Duration, capacity: usize, channel: Channel) -> Self {
        let inner = Arc::new(Inner {
            ttl,
            capacity,
            entries: Mutex::default(),
            generation: AtomicU64::new(0),
            open: AtomicBool::new(false),
            channel: channel.clone(),
        });
        let watcher = Arc::clone(&inner);
        let spawned = match channel {
            Channel::Redis { url, .. } => {
                tokio::spawn(subscribe_redis(watcher, url));
                Ok(())
            }
            Channel::Postgres { url, .. } => std::thread::Builder::new()
                .name("login-cache-listen".into())
                .spawn(move || watch(&watcher, "PostgreSQL listener", || listen_postgres(&watcher, &url)))
                .map(drop),
            Channel::Sqlite { path } => std::thread::Builder::new()
                .name("login-cache-watch".into())
                .spawn(move || watch(&watcher, "SQLite watcher", || watch_sqlite(&watcher, &path)))
                .map(drop),
        };
        if let Err(error) = spawned {
            log::error!("the login cache stays off: cannot start its watcher: {error}");
        }
        Self { inner: Some(inner) }
    }

    /// Whether requests may be served from the cache right now.
    pub fn is_serving(&self) -> bool {
        self.inner.as_ref().is_some_and(|inner| inner.open.load(Ordering::Acquire))
    }

    /// How many logins are cached.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |inner| inner.lock().len())
    }

    /// Whether no login is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The login `id` and its user, if cached, fresh and the channel is up.
    pub(crate) fn get<U: Clone + Send + Sync + 'static>(&self, id: &str) -> Option<(Login, U)> {
        let inner = self.serving()?;
        let mut entries = inner.lock();
        let entry = entries.get(id)?;
        if entry.stored.elapsed() > inner.ttl {
            entries.remove(id);
            return None;
        }
        let user = entry.user.downcast_ref::<U>()?.clone();
        Some((entry.login.clone(), user))
    }

    /// Taken before reading the database; `None` when nothing may be stored.
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        self.serving().map(|inner| Ticket(inner.generation.load(Ordering::Acquire)))
    }

    /// Stores what a check read, unless an invalidation arrived since `ticket` (the read may
    /// predate it) or the cache is full of entries still fresh.
    pub(crate) fn put<U: Clone + Send + Sync + 'static>(&self, ticket: Ticket, login: &Login, user: &U) {
        let Some(inner) = self.serving() else { return };
        let mut entries = inner.lock();
        if inner.generation.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if entries.len() >= inner.capacity && !entries.contains_key(&login.id) {
            entries.retain(|_, entry| entry.stored.elapsed() <= inner.ttl);
            if entries.len() >= inner.capacity {
                return;
            }
        }
        let entry = Entry { login: login.clone(), user: Arc::new(user.clone()), stored: Instant::now() };
        entries.insert(login.id.clone(), entry);
    }

    /// Records that the login `id` was seen at `now` (its `last_seen_at` is being written).
    pub(crate) fn touched(&self, id: &str, now: NaiveDateTime) {
        if let Some(inner) = &self.inner {
            if let Some(entry) = inner.lock().get_mut(id) {
                entry.login.last_seen_at = now;
            }
        }
    }

    /// Every login of `user_id` or the user changed (a logout everywhere, a new password, a
    /// disabled account, a new email address or role): forgets them here and tells the other
    /// instances.
    pub async fn forget_user(&self, user_id: i32) {
        self.forget(&Change::User(user_id)).await
    }

    /// The login `id` changed or ended: forgets it here and tells the other instances.
    pub async fn forget_login(&self, id: &str) {
        self.forget(&Change::Login(id)).await
    }

    async fn forget(&self, change: &Change<'_>) {
        if let Some(inner) = &self.inner {
            inner.apply(change);
            inner.channel.publish(change).await;
        }
    }

    fn serving(&self) -> Option<&Arc<Inner>> {
        self.inner.as_ref().filter(|inner| inner.open.load(Ordering::Acquire))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while the lock was held left at worst a stale entry, which the next
        // invalidation or expiry removes; the map itself is whole.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a change from this instance or the channel.
    fn apply(&self, change: &Change<'_>) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        match change {
            Change::User(user_id) => entries.retain(|_, entry| entry.login.user_id != *user_id),
            Change::Login(id) => {
                entries.remove(*id);
            }
        }
    }

    /// Applies a message off the channel; an unknown one empties the cache, to be safe.
    fn receive(&self, message: &str) {
        match message.split_once(':') {
            Some(("u", id)) => match id.parse() {
                Ok(id) => self.apply(&Change::User(id)),
                Err(_) => self.empty(),
            },
            Some(("l", id)) => self.apply(&Change::Login(id)),
            _ => {
                log::warn!("unknown message on the login cache's channel: emptied the cache");
                self.empty();
            }
        }
    }

    fn empty(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// The subscription is up: start serving from an empty cache (messages sent while it was
    /// down are lost).
    fn opened(&self) {
        self.empty();
        self.open.store(true, Ordering::Release);
        log::info!("the login cache is serving: its invalidation channel is up");
    }

    /// The subscription is down: stop serving at once, and forget everything.
    fn closed(&self) {
        if self.open.swap(false, Ordering::AcqRel) {
            log::warn!("the login cache stopped serving: its invalidation channel is down");
        }
        self.empty();
    }
}

/// How long a broken subscription waits before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// Keeps a Redis subscription to [`CHANNEL`] up for as long as the process runs.
async fn subscribe_redis(inner: Arc<Inner>, url: String) {
    loop {
        match subscribe_redis_once(&inner, &url).await {
            Ok(()) => log::warn!("the login cache's Redis subscription ended"),
            Err(error) => log::warn!("the login cache's Redis subscription failed: {error}"),
        }
        inner.closed();
        tokio::time::sleep(RETRY).await;
    }
}

async fn subscribe_redis_once(inner: &Inner, url: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    inner.opened();
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        match message.get_payload::<String>() {
            Ok(payload) => inner.receive(&payload),
            Err(_) => inner.empty(),
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
fn watch(inner: &Inner, what: &str, once: impl Fn() -> Result<(), anyhow::Error>) {
    loop {
        if let Err(error) = once() {
            log::warn!("the login cache's {what} failed: {error}");
        }
        inner.closed();
        std::thread::sleep(RETRY);
    }
}

fn listen_postgres(inner: &Inner, url: &str) -> Result<(), anyhow::Error> {
    let mut conn = diesel::PgConnection::establish(url)?;
    conn.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    inner.opened();
    let mut checked = Instant::now();
    loop {
        for notification in conn.notifications_iter() {
            inner.receive(&notification?.payload);
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

fn watch_sqlite(inner: &Inner, path: &str) -> Result<(), anyhow::Error> {
    let mut conn = diesel::SqliteConnection::establish(path)?;
    let mut seen = data_version(&mut conn)?;
    inner.opened();
    loop {
        std::thread::sleep(POLL);
        let version = data_version(&mut conn)?;
        if version != seen {
            inner.empty();
            seen = version;
        }
    }
}
