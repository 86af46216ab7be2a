//! A per-instance cache of verified logins: a logged-in request usually costs no trip to the
//! database, and never serves a login that has ended.
//!
//! An entry holds a login's row and its user, as the last full check ([`crate::rules::check`])
//! read them. A request served from the cache re-applies every rule that needs no write
//! (timeouts, credential epoch, session protection, generation) to the cached row; anything
//! else (a write is due, the rules say no) goes to the database as before.
//!
//! The rule that keeps it correct: **whatever changes a login or its user tells the cache**
//! ([`LoginCache::forget_user`], [`LoginCache::forget_login`]). The policy (apply here at
//! once, publish for the other instances, serve nothing while the channel is down, never
//! store a read that overlapped a change, a time to live on every entry) is
//! [`latchkey_sessions::cache`]'s, which the session-state cache shares; the channel is
//! [`latchkey_sessions::invalidation`]'s. Messages here are `u:<user id>` and `l:<login id>`.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use latchkey_sessions::cache::{Cache, Entries, Flight, Lookup, Ticket};
use latchkey_sessions::invalidation::{Channel, Invalidations};

use crate::registry::{Authenticated, Login};

/// A cached login and its user: the user's id (what `u:` invalidations match) and an
/// `Authenticated<U>` of the application's user type, shared with the requests it serves, so
/// a request served from the cache copies nothing.
#[derive(Clone)]
struct Cached {
    user_id: i32,
    authenticated: Arc<dyn Any + Send + Sync>,
}

/// The cache; cheap to clone. [`LoginCache::off`] caches nothing.
#[derive(Clone)]
pub struct LoginCache {
    cache: Cache<Cached>,
}

/// Applies `u:<user id>` (every login of the user) and `l:<login id>`; a `u:` that does not
/// parse empties the cache, to be safe.
fn receive(entries: &Entries<Cached>, message: &str) -> bool {
    match message.split_once(':') {
        Some(("u", id)) => match id.parse::<i32>() {
            Ok(user_id) => entries.retain(|cached| cached.user_id != user_id),
            Err(_) => entries.retain(|_| false),
        },
        Some(("l", id)) => entries.remove(id),
        _ => return false,
    }
    true
}

/// The message that forgets every login of `user_id`, which [`receive`] applies.
fn user_message(user_id: i32) -> String {
    format!("u:{user_id}")
}

/// Tells the other instances (and processes: the command line) that `user_id`'s logins or
/// user changed; for a process without a cache of its own.
pub async fn announce_user(channel: &Channel, user_id: i32) {
    channel.publish(&user_message(user_id)).await
}

impl LoginCache {
    /// Caches nothing: every request checks its login in the database.
    pub fn off() -> Self {
        Self { cache: Cache::off() }
    }

    /// A cache of at most `capacity` logins, each kept at most `ttl`, invalidated across
    /// instances through `invalidations`; it serves nothing while that is not open.
    pub fn new(ttl: Duration, capacity: usize, invalidations: &Invalidations) -> Self {
        Self { cache: Cache::new(ttl, capacity, invalidations, receive) }
    }

    /// Whether requests may be served from the cache right now.
    pub fn is_serving(&self) -> bool {
        self.cache.is_serving()
    }

    /// How many logins are cached.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether no login is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// How many login checks found nothing in the cache and read the database, since the
    /// process started.
    pub fn misses(&self) -> u64 {
        self.cache.misses()
    }

    /// The login `id` and its user, if cached, fresh and the channel is up; on a miss, either
    /// after waiting for another request's read of the same login, or with the [`Flight`] this
    /// request leads (see [`Cache::lookup`]).
    pub(crate) async fn lookup<U: Send + Sync + 'static>(
        &self,
        id: &str,
    ) -> (Option<Arc<Authenticated<U>>>, Flight) {
        let Lookup { value, flight } = self.cache.lookup(id).await;
        (value.and_then(|cached| cached.authenticated.downcast().ok()), flight)
    }

    /// Taken before reading the database; `None` when nothing may be stored.
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        self.cache.ticket()
    }

    /// Stores what a check read, unless an invalidation arrived since `ticket` (the read may
    /// predate it) or the cache is full of entries still fresh.
    pub(crate) fn put<U: Send + Sync + 'static>(&self, ticket: Ticket, authenticated: Arc<Authenticated<U>>) {
        let id = authenticated.login.id.clone();
        let cached = Cached { user_id: authenticated.login.user_id, authenticated };
        // The time to live alone bounds the entry: the rules re-check the login's own deadlines.
        self.cache.put(ticket, &id, cached, Duration::MAX);
    }

    /// Records that the login `id` was seen at `now` (its `last_seen_at` is being written):
    /// the entry becomes a copy with the new time, which is returned (the one request in a
    /// touch interval that pays for a copy).
    pub(crate) fn touched<U: Clone + Send + Sync + 'static>(
        &self,
        cached: &Authenticated<U>,
        now: NaiveDateTime,
    ) -> Arc<Authenticated<U>> {
        let login = Login { last_seen_at: now, ..cached.login.clone() };
        let touched = Arc::new(Authenticated { user: cached.user.clone(), login });
        let entry = Arc::clone(&touched);
        self.cache.modify(&touched.login.id, |cached| cached.authenticated = entry);
        touched
    }

    /// Every login of `user_id` or the user changed (a logout everywhere, a new password, a
    /// disabled account, a new email address or role): forgets them here and tells the other
    /// instances.
    pub async fn forget_user(&self, user_id: i32) {
        let forget = |entries: &Entries<Cached>| entries.retain(|cached| cached.user_id != user_id);
        self.cache.forget(forget, &user_message(user_id)).await
    }

    /// The login `id` changed or ended: forgets it here and tells the other instances.
    pub async fn forget_login(&self, id: &str) {
        self.cache.forget(|entries| entries.remove(id), &format!("l:{id}")).await
    }
}
