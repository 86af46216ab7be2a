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
//! A miss reads the backing store once per key, not once per request ([`Cache::lookup`]): when
//! an entry ends or the cache empties, every request of a busy session misses at once, and
//! each would otherwise take a thread of the blocking pool for the same read. One request
//! reads; the others wait for it, then look again and go on as if they had just looked: what
//! they find, each judges by its own request (a login's cached row is checked against each
//! request's own client), so only the read is shared, never a verdict.
//!
//! Written here rather than with a cache crate: the map is the easy part (a `HashMap` behind
//! a mutex, held for a lookup and a clone); the part no crate does is the policy around it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::invalidation::{Invalidations, Subscriber};

/// A cache of `V` by string key; cheap to clone. [`Cache::off`] caches nothing.
pub struct Cache<V> {
    on: Option<(Arc<Entries<V>>, Invalidations)>,
    /// Lookups that found nothing, so the caller read the backing store (see [`Cache::misses`]).
    misses: Arc<AtomicU64>,
}

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Self { on: self.on.clone(), misses: Arc::clone(&self.misses) }
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
    /// The reads of the backing store in progress, by key.
    flights: Arc<Flights>,
}

/// The reads in progress: each key's semaphore has no permits and is closed when its read
/// ends, which wakes every request waiting on it.
type Flights = Mutex<Map<Arc<Semaphore>>>;

/// What [`Cache::lookup`] found.
pub struct Lookup<V> {
    /// The value cached under the key, if any.
    pub value: Option<V>,
    /// Held by the one request that reads the key from the backing store, until it has stored
    /// what it read (or dropped, to give up): the others wait for it meanwhile.
    pub flight: Flight,
}

/// The read of one key that this request leads; dropping it wakes the requests waiting for
/// that read. Empty for a request that leads none.
#[must_use = "the read this request leads ends when the flight is dropped"]
pub struct Flight(Option<Lead>);

struct Lead {
    flights: Arc<Flights>,
    key: String,
    done: Arc<Semaphore>,
}

impl Drop for Lead {
    fn drop(&mut self) {
        let mut flights = lock(&self.flights);
        if flights.get(&self.key).is_some_and(|done| Arc::ptr_eq(done, &self.done)) {
            flights.remove(&self.key);
        }
        drop(flights);
        self.done.close();
    }
}

impl Flight {
    /// No read led.
    pub fn none() -> Self {
        Self(None)
    }

    /// Whether this request leads a read (the others of its key wait for it).
    pub fn leads(&self) -> bool {
        self.0.is_some()
    }
}

/// A mutex's guard, whether or not a panic poisoned it: the caches' maps stay whole (a panic
/// while one was held left at worst a stale entry, which the next invalidation or deadline
/// removes).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        Self { on: None, misses: Arc::default() }
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
            flights: Arc::default(),
        });
        invalidations.subscribe(Arc::new(Listener { entries: Arc::clone(&entries), receive }));
        Self { on: Some((entries, invalidations.clone())), misses: Arc::default() }
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

    /// The value under `key`, as [`Cache::get`] finds it; on a miss while another request of
    /// this instance is reading `key` from the backing store, waits for that read to end and
    /// looks again. A request that finds nothing and finds no read in progress leads the
    /// read: it holds the returned [`Flight`] until it has stored what it read.
    pub async fn lookup(&self, key: &str) -> Lookup<V> {
        if let Some(value) = self.get(key) {
            return Lookup { value: Some(value), flight: Flight::none() };
        }
        let Some(entries) = self.serving() else { return self.missed(Flight::none()) };
        let in_flight = {
            let mut flights = lock(&entries.flights);
            match flights.get(key) {
                Some(done) => Arc::clone(done),
                None => {
                    // A read may have stored its value and ended since the look above.
                    if let Some(value) = self.get(key) {
                        return Lookup { value: Some(value), flight: Flight::none() };
                    }
                    let done = Arc::new(Semaphore::new(0));
                    flights.insert(key.to_owned(), Arc::clone(&done));
                    let flights = Arc::clone(&entries.flights);
                    return self.missed(Flight(Some(Lead { flights, key: key.to_owned(), done })));
                }
            }
        };
        // No permit is ever added: this returns when the leader closes the semaphore.
        let _closed = in_flight.acquire().await;
        match self.get(key) {
            Some(value) => Lookup { value: Some(value), flight: Flight::none() },
            None => self.missed(Flight::none()),
        }
    }

    /// How many lookups found nothing, so that their caller read the backing store, since the
    /// process started (a request that waited for another's read and then found the value is
    /// not one of them).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    fn missed(&self, flight: Flight) -> Lookup<V> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        Lookup { value: None, flight }
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
        lock(&self.map)
    }

    /// Whether a sweep is due at `now`; if so, the next one is a time to live later.
    fn sweep_due(&self, now: Instant) -> bool {
        let mut at = lock(&self.sweep_at);
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

    /// `requests` lookups of one missing key at once; the one that leads reads for a while,
    /// then stores 7 if `store`. Returns what each found, and whether it led.
    async fn burst(cache: &Cache<u32>, requests: usize, store: bool) -> Vec<(Option<u32>, bool)> {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..requests {
            let cache = cache.clone();
            tasks.spawn(async move {
                let Lookup { value, flight } = cache.lookup("k").await;
                let leads = flight.leads();
                if leads {
                    let ticket = cache.ticket().expect("serving");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if store {
                        cache.put(ticket, "k", 7, Duration::from_secs(60));
                    }
                }
                (value, leads)
            });
        }
        tasks.join_all().await
    }

    #[tokio::test]
    async fn one_request_reads_a_missing_key_while_the_others_wait_for_it() {
        let (cache, _dir) = open_cache(Duration::from_secs(60), 10).await;
        let found = burst(&cache, 16, true).await;
        let leaders = found.iter().filter(|(_, leads)| *leads).count();
        assert_eq!(leaders, 1, "one read");
        assert!(
            found.iter().all(|(value, leads)| *leads || *value == Some(7)),
            "the others found what it stored: {found:?}"
        );
        assert_eq!(cache.misses(), 1);
        let again = cache.lookup("k").await;
        assert_eq!((again.value, again.flight.leads(), cache.misses()), (Some(7), false, 1));
    }

    #[tokio::test]
    async fn when_the_read_stores_nothing_the_waiting_requests_read_for_themselves() {
        let (cache, _dir) = open_cache(Duration::from_secs(60), 10).await;
        let found = burst(&cache, 4, false).await;
        assert!(found.iter().all(|(value, _)| value.is_none()));
        assert_eq!(found.iter().filter(|(_, leads)| *leads).count(), 1, "they do not lead again");
        assert_eq!(cache.misses(), 4, "each read the store");
        assert!(cache.lookup("k").await.flight.leads(), "the next miss leads a read of its own");
    }

    #[test]
    fn an_unopened_cache_serves_nothing() {
        let cache: Cache<u32> = Cache::off();
        assert!(cache.ticket().is_none() && !cache.is_serving() && cache.get("a").is_none());
    }
}
