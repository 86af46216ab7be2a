//! [`Cache`]: a per-instance cache that never serves what another instance changed: the
//! policy shared by the session-state cache ([`crate::Store`]) and the auth layer's cache of
//! verified logins.
//!
//! The rule that keeps it correct: **whatever changes a cached value tells the cache**
//! ([`Cache::forget`]), which applies the change on this instance before it returns and
//! publishes it on the [`Invalidations`] channel for the others. While the channel is down the
//! cache serves nothing (fail closed), and it starts again from empty when it comes back. A
//! read of the backing store that overlapped an invalidation does not store its (possibly
//! stale) answer ([`Ticket`]). Every entry also ends at its own deadline, at most the time to
//! live after it was stored, which bounds what a lost message could cost.
//!
//! Written here rather than with a cache crate: the map is the easy part (a `HashMap` behind
//! a mutex, held for a lookup and a clone); the part no crate does is the policy around it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::invalidation::{Invalidations, Subscriber};

/// A cache of `V` by string key; cheap to clone. [`Cache::off`] caches nothing.
pub struct Cache<V> {
    on: Option<(Arc<Entries<V>>, Invalidations)>,
}

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Self { on: self.on.clone() }
    }
}

/// The caches' maps, keyed by strings the server made (digests, sealed states), hashed with
/// foldhash rather than SipHash: a 64-character key costs a fraction of SipHash's work on
/// every logged-in request (callgrind), and its seed is random per process all the same.
pub(crate) type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// The cached entries, as a message handler sees them.
pub struct Entries<V> {
    ttl: Duration,
    capacity: usize,
    map: Mutex<Map<Entry<V>>>,
    /// Moves on with every invalidation; a read stores its answer only if it has not moved
    /// since the read began.
    generation: AtomicU64,
    /// When entries past their deadline are next swept out.
    sweep_at: Mutex<Instant>,
}

struct Entry<V> {
    value: V,
    until: Instant,
}

/// A snapshot of the cache's invalidation count, taken before reading the backing store.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

/// Applies a message off the channel to the entries; returns whether the message was this
/// cache's (see [`Subscriber::receive`]).
pub type Receive<V> = fn(&Entries<V>, &str) -> bool;

struct Listener<V> {
    entries: Arc<Entries<V>>,
    receive: Receive<V>,
}

impl<V: Send + 'static> Subscriber for Listener<V> {
    fn receive(&self, message: &str) -> bool {
        (self.receive)(&self.entries, message)
    }

    fn empty(&self) {
        self.entries.change(Map::clear);
    }
}

impl<V: Clone + Send + 'static> Cache<V> {
    /// Caches nothing.
    pub fn off() -> Self {
        Self { on: None }
    }

    /// A cache of at most `capacity` entries, each kept at most `ttl`, that applies messages
    /// off `invalidations` with `receive`.
    pub fn new(ttl: Duration, capacity: usize, invalidations: &Invalidations, receive: Receive<V>) -> Self {
        let entries = Arc::new(Entries {
            ttl,
            capacity,
            map: Mutex::default(),
            generation: AtomicU64::new(0),
            sweep_at: Mutex::new(Instant::now() + ttl),
        });
        invalidations.subscribe(Arc::new(Listener { entries: Arc::clone(&entries), receive }));
        Self { on: Some((entries, invalidations.clone())) }
    }

    /// Whether this is a cache at all (not [`Cache::off`]).
    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// Whether values may be served from the cache right now.
    pub fn is_serving(&self) -> bool {
        self.serving().is_some()
    }

    /// How many entries are cached.
    pub fn len(&self) -> usize {
        self.on.as_ref().map_or(0, |(entries, _)| entries.lock().len())
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value under `key`, if cached, before its deadline and the channel is up.
    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.serving()?;
        let mut map = entries.lock();
        let entry = map.get(key)?;
        if entry.until <= Instant::now() {
            map.remove(key);
            return None;
        }
        Some(entry.value.clone())
    }

    /// Taken before reading the backing store; `None` when nothing may be stored.
    pub fn ticket(&self) -> Option<Ticket> {
        self.serving().map(|entries| Ticket(entries.generation.load(Ordering::Acquire)))
    }

    /// Stores what a read found, to be served for `expires_in` from now (and at most the time
    /// to live), unless an invalidation arrived since `ticket` (the read may predate it) or
    /// the cache is full of entries still live.
    pub fn put(&self, ticket: Ticket, key: &str, value: V, expires_in: Duration) {
        let Some(entries) = self.serving() else { return };
        let mut map = entries.lock();
        if entries.generation.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        let now = Instant::now();
        // Entries past their deadline go once a time to live, and whenever the cache is full:
        // memory follows the sessions of the last time to live, not of the process's life.
        let full = map.len() >= entries.capacity && !map.contains_key(key);
        if full || entries.sweep_due(now) {
            map.retain(|_, entry| entry.until > now);
            if map.len() >= entries.capacity {
                return;
            }
        }
        let until = now + expires_in.min(entries.ttl);
        map.insert(key.to_owned(), Entry { value, until });
    }

    /// Changes the entry under `key` in place, if cached (a change this instance made and
    /// that the others need not hear of).
    pub fn modify(&self, key: &str, change: impl FnOnce(&mut V)) {
        if let Some((entries, _)) = &self.on {
            if let Some(entry) = entries.lock().get_mut(key) {
                change(&mut entry.value);
            }
        }
    }

    /// Something cached changed: applies `change` here, then publishes `message` (which the
    /// other instances' `receive` applies the same way).
    pub async fn forget(&self, change: impl FnOnce(&Entries<V>), message: &str) {
        if let Some((entries, invalidations)) = &self.on {
            change(entries);
            invalidations.publish(message).await;
        }
    }

    fn serving(&self) -> Option<&Arc<Entries<V>>> {
        self.on.as_ref().filter(|(_, invalidations)| invalidations.is_open()).map(|(entries, _)| entries)
    }
}

impl<V> Entries<V> {
    fn lock(&self) -> MutexGuard<'_, Map<Entry<V>>> {
        // A panic while the lock was held left at worst a stale entry, which the next
        // invalidation or deadline removes; the map itself is whole.
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a sweep is due at `now`; if so, the next one is a time to live later.
    fn sweep_due(&self, now: Instant) -> bool {
        let mut at = self.sweep_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = now >= *at;
        if due {
            *at = now + self.ttl;
        }
        due
    }

    /// Applies an invalidation: reads in flight will not store what they found.
    fn change(&self, apply: impl FnOnce(&mut Map<Entry<V>>)) {
        let mut map = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        apply(&mut map);
    }

    /// Forgets the entry under `key`.
    pub fn remove(&self, key: &str) {
        self.change(|map| {
            map.remove(key);
        });
    }

    /// Forgets every entry whose value `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&V) -> bool) {
        self.change(|map| map.retain(|_, entry| keep(&entry.value)));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail by panicking")]
    use super::*;

    fn receive(entries: &Entries<u32>, message: &str) -> bool {
        match message.strip_prefix("t:") {
            Some(key) => {
                entries.remove(key);
                true
            }
            None => false,
        }
    }

    /// A cache whose channel is up: SQLite's watcher opens once it has read the file.
    async fn open_cache(ttl: Duration, capacity: usize) -> (Cache<u32>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite").to_string_lossy().into_owned();
        let invalidations = Invalidations::start(crate::invalidation::Channel::Sqlite { path });
        let cache = Cache::new(ttl, capacity, &invalidations, receive);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cache.is_serving() {
            assert!(Instant::now() < deadline, "the watcher never opened");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (cache, dir)
    }

    #[tokio::test]
    async fn a_read_that_overlapped_an_invalidation_is_not_stored() {
        let (cache, _dir) = open_cache(Duration::from_secs(60), 10).await;
        let far = Duration::from_secs(60);
        let ticket = cache.ticket().expect("serving");
        cache.forget(|entries| entries.remove("a"), "t:a").await;
        cache.put(ticket, "a", 1, far);
        assert_eq!(cache.get("a"), None);
        let ticket = cache.ticket().expect("serving");
        cache.put(ticket, "a", 2, far);
        assert_eq!(cache.get("a"), Some(2));
    }

    #[tokio::test]
    async fn entries_end_at_their_deadline_and_the_time_to_live() {
        let (cache, _dir) = open_cache(Duration::from_millis(50), 10).await;
        let ticket = cache.ticket().expect("serving");
        cache.put(ticket, "soon", 1, Duration::from_millis(10));
        cache.put(ticket, "later", 2, Duration::from_secs(60));
        assert_eq!((cache.get("soon"), cache.get("later")), (Some(1), Some(2)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!((cache.get("soon"), cache.get("later")), (None, Some(2)));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(cache.get("later"), None, "the time to live bounds every entry");
    }

    #[tokio::test]
    async fn entries_past_their_deadline_are_swept_out() {
        let (cache, _dir) = open_cache(Duration::from_millis(30), 10).await;
        let ticket = cache.ticket().expect("serving");
        for key in ["a", "b", "c"] {
            cache.put(ticket, key, 1, Duration::from_secs(60));
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        cache.put(ticket, "d", 1, Duration::from_secs(60));
        assert_eq!(cache.len(), 1, "only the entry just stored is left");
    }

    #[tokio::test]
    async fn a_full_cache_stores_nothing_more() {
        let (cache, _dir) = open_cache(Duration::from_secs(60), 1).await;
        let far = Duration::from_secs(60);
        let ticket = cache.ticket().expect("serving");
        cache.put(ticket, "a", 1, far);
        cache.put(ticket, "b", 2, far);
        assert_eq!((cache.get("a"), cache.get("b"), cache.len()), (Some(1), None, 1));
    }

    #[test]
    fn an_unopened_cache_serves_nothing() {
        let cache: Cache<u32> = Cache::off();
        assert!(cache.ticket().is_none() && !cache.is_serving() && cache.get("a").is_none());
    }
}
