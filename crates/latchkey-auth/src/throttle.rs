//! Throttling of guesses, shared by every instance: counters live in Redis when the site has
//! one, otherwise in the database (`throttle_counters`), under keys that carry a
//! per-deployment prefix, so deployments (and parallel tests) sharing a Redis never see each
//! other's counts.
//!
//! - **Logins.** At most `login_email_ip` failures per (email, client IP) and `login_ip` per
//!   client IP across all accounts (password spraying). Per account, after `delay_after`
//!   consecutive failures each next attempt waits 1 s, doubling, up to `delay_max`; after
//!   `lock_after` (NIST SP 800-63B: 100) password login stops until the owner signs in another
//!   way (a passkey) and the counter is cleared. An account is named by its user id, or, for
//!   an email no account has, by a keyed hash of the email: both behave the same, so the
//!   throttle tells nobody which addresses have accounts.
//! - Wrong second-factor codes and wrong re-authentications count as failures of the account;
//!   a right password does not clear the count until the login completes.
//! - **Other actions** (registration, re-authentication, the second step of a login, guest
//!   sessions) have a number of requests per window and client IP ([`Throttle::request`]).
//!
//! A throttled request is answered before any password is checked. Written here, not with
//! `governor`, because its limiters live in one process and these counts must be shared by
//! every instance; fixed windows are enough for limits this coarse.

use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use latchkey_db::{DbConnection, DbError, Pool};
use latchkey_sessions::redis::RedisStore;
use sha2::Sha256;

use crate::error::AuthError;

/// The table, as `diesel print-schema` writes it. The application's migrations create it.
pub mod schema {
    diesel::table! {
        /// Throttling counters, when there is no Redis.
        throttle_counters (key) {
            /// The counter's key, prefixed per deployment.
            key -> Text,
            /// Events counted in this window.
            count -> Int8,
            /// When the window began.
            started_at -> Timestamp,
            /// The latest event.
            last_at -> Timestamp,
            /// When the counter is forgotten.
            expires_at -> Timestamp,
        }
    }
}

use schema::throttle_counters;

/// How long an account's count of consecutive failures is kept after its last failure.
pub const ACCOUNT_MEMORY: Duration = Duration::from_secs(30 * 86_400);

/// At most `count` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Events allowed in a window.
    pub count: u64,
    /// The window, which begins at its first event.
    pub window: Duration,
}

impl Limit {
    /// `count` events per `window`.
    pub const fn new(count: u64, window: Duration) -> Self {
        Self { count, window }
    }
}

/// The limits (see the module docs); the defaults are the site's.
#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    /// Failed logins per (email, client IP).
    pub login_email_ip: Limit,
    /// Failed logins per client IP, across accounts.
    pub login_ip: Limit,
    /// Consecutive failures of an account after which each attempt waits.
    pub delay_after: u64,
    /// The longest wait between attempts on one account.
    pub delay_max: Duration,
    /// Consecutive failures of an account that stop password login.
    pub lock_after: u64,
    /// Registrations per client IP.
    pub register: Limit,
    /// Re-authentication attempts per client IP.
    pub reauth: Limit,
    /// Second-factor attempts per client IP (set above the five wrong codes a pending login
    /// allows, which come first).
    pub second_factor: Limit,
    /// New guest sessions (a first item in a cart) per client IP.
    pub guest_session: Limit,
    /// Emails with a link (password reset, verification) per address they go to.
    pub email: Limit,
    /// Emails with a link asked for per client IP.
    pub email_ip: Limit,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        Self {
            login_email_ip: Limit::new(5, MINUTE),
            login_ip: Limit::new(100, HOUR),
            delay_after: 5,
            delay_max: Duration::from_secs(15 * 60),
            lock_after: 100,
            register: Limit::new(20, HOUR),
            reauth: Limit::new(20, MINUTE),
            second_factor: Limit::new(30, MINUTE),
            guest_session: Limit::new(100, HOUR),
            email: Limit::new(3, HOUR),
            email_ip: Limit::new(20, HOUR),
        }
    }
}

/// Whether an attempt may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Not before this long.
    Wait(Duration),
    /// Password login is stopped for this account until it is unlocked.
    Locked,
}

/// A counter as read: events, and when its window began and its last event was (Unix ms).
#[derive(Debug, Clone, Copy)]
struct Count {
    count: u64,
    started_ms: i64,
    last_ms: i64,
}

/// Where counters live.
#[derive(Clone)]
enum Counters {
    Redis(RedisStore),
    Database(Pool),
    Off,
}

/// What failed while counting: the store did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// The database did not answer.
    #[error("throttle counters (database)")]
    Database(#[from] DbError),
    /// Redis did not answer.
    #[error("throttle counters (Redis)")]
    Redis(#[source] anyhow::Error),
}

/// The shared throttle; see the module docs.
#[derive(Clone)]
pub struct Throttle {
    counters: Counters,
    policy: ThrottlePolicy,
    prefix: String,
    key: Vec<u8>,
}

/// A subject of counting: an account or a client address.
#[derive(Debug, Clone, Copy)]
pub enum Account<'a> {
    /// An existing account.
    User(i32),
    /// An email no account has (the count stands in for it, so that throttling looks the same).
    Email(&'a str),
}

impl Throttle {
    /// Counters in Redis, keyed under `prefix` (per deployment); `key` keys the hashes of
    /// emails and addresses in the keys.
    pub fn in_redis(redis: RedisStore, policy: ThrottlePolicy, prefix: &str, key: &[u8]) -> Self {
        Self::new(Counters::Redis(redis), policy, prefix, key)
    }

    /// Counters in the database's `throttle_counters`.
    pub fn in_database(pool: Pool, policy: ThrottlePolicy, prefix: &str, key: &[u8]) -> Self {
        Self::new(Counters::Database(pool), policy, prefix, key)
    }

    /// No throttling at all: for benchmarks only.
    pub fn off() -> Self {
        Self::new(Counters::Off, ThrottlePolicy::default(), "", b"")
    }

    fn new(counters: Counters, policy: ThrottlePolicy, prefix: &str, key: &[u8]) -> Self {
        Self { counters, policy, prefix: prefix.to_owned(), key: key.to_vec() }
    }

    /// Whether throttling is on.
    pub fn is_on(&self) -> bool {
        !matches!(self.counters, Counters::Off)
    }

    /// The limits.
    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// A counter's key: the prefix, its kind and a keyed hash of what it counts (no email or
    /// address is stored as such).
    fn key(&self, kind: &str, parts: &[&str]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        let digest = hex::encode(&mac.finalize().into_bytes()[..16]);
        format!("{}{kind}:{digest}", self.prefix)
    }

    fn account_key(&self, account: Account<'_>) -> String {
        match account {
            Account::User(id) => self.key("account", &["user", &id.to_string()]),
            Account::Email(email) => self.key("account", &["email", email]),
        }
    }

    fn email_ip_key(&self, email: &str, ip: &str) -> String {
        self.key("login-email-ip", &[email, ip])
    }

    fn ip_key(&self, ip: &str) -> String {
        self.key("login-ip", &[ip])
    }

    // ---- logins ---------------------------------------------------------------------------

    /// Whether a password login for `account` (typed as `email`) from `ip` may be tried now.
    pub async fn check_login(
        &self,
        account: Account<'_>,
        email: &str,
        ip: &str,
    ) -> Result<Verdict, ThrottleError> {
        if !self.is_on() {
            return Ok(Verdict::Allowed);
        }
        let now = now_ms();
        let account = self.peek(&self.account_key(account)).await?;
        if let Some(count) = account {
            if count.count >= self.policy.lock_after {
                return Ok(Verdict::Locked);
            }
            if let Some(wait) = self.account_delay(count, now) {
                return Ok(Verdict::Wait(wait));
            }
        }
        for (key, limit) in [
            (self.email_ip_key(email, ip), self.policy.login_email_ip),
            (self.ip_key(ip), self.policy.login_ip),
        ] {
            if let Some(wait) = self.peek(&key).await?.and_then(|count| window_wait(count, limit, now)) {
                return Ok(Verdict::Wait(wait));
            }
        }
        Ok(Verdict::Allowed)
    }

    /// How long an account with `count` consecutive failures waits after its last one.
    fn account_delay(&self, count: Count, now: i64) -> Option<Duration> {
        let over = count.count.checked_sub(self.policy.delay_after)?;
        let delay = Duration::from_secs(
            1u64.checked_shl(u32::try_from(over).unwrap_or(u32::MAX)).unwrap_or(u64::MAX),
        )
        .min(self.policy.delay_max);
        remaining(count.last_ms, delay, now)
    }

    /// Counts a wrong password for `account` (typed as `email`) from `ip`. True when this
    /// failure locked the account.
    pub async fn login_failed(
        &self,
        account: Account<'_>,
        email: &str,
        ip: &str,
    ) -> Result<bool, ThrottleError> {
        if !self.is_on() {
            return Ok(false);
        }
        let count = self.hit(&self.account_key(account), None).await?;
        self.hit(&self.email_ip_key(email, ip), Some(self.policy.login_email_ip.window)).await?;
        self.hit(&self.ip_key(ip), Some(self.policy.login_ip.window)).await?;
        Ok(count.count == self.policy.lock_after)
    }

    /// Counts a wrong second factor or re-authentication of an existing account. True when
    /// this failure locked the account.
    pub async fn account_failed(&self, user_id: i32) -> Result<bool, ThrottleError> {
        if !self.is_on() {
            return Ok(false);
        }
        let count = self.hit(&self.account_key(Account::User(user_id)), None).await?;
        Ok(count.count == self.policy.lock_after)
    }

    /// A completed login (or proof of identity): the account's consecutive failures, and those
    /// of this email from this address, start again from zero. Unlocks a locked account.
    pub async fn login_succeeded(
        &self,
        user_id: i32,
        email_ip: Option<(&str, &str)>,
    ) -> Result<(), ThrottleError> {
        if !self.is_on() {
            return Ok(());
        }
        let mut keys = vec![self.account_key(Account::User(user_id))];
        keys.extend(email_ip.map(|(email, ip)| self.email_ip_key(email, ip)));
        self.clear(&keys).await
    }

    /// Whether another proof of identity may be tried for `user_id` now (re-authentication):
    /// the account's own wait and lock, without the per-address counts of a login form.
    pub async fn check_account(&self, user_id: i32) -> Result<Verdict, ThrottleError> {
        if !self.is_on() {
            return Ok(Verdict::Allowed);
        }
        let Some(count) = self.peek(&self.account_key(Account::User(user_id))).await? else {
            return Ok(Verdict::Allowed);
        };
        if count.count >= self.policy.lock_after {
            return Ok(Verdict::Locked);
        }
        Ok(self.account_delay(count, now_ms()).map_or(Verdict::Allowed, Verdict::Wait))
    }

    // ---- requests per address -------------------------------------------------------------

    /// Counts a request for `action` from `ip` against `limit`; `Wait` once it is over.
    pub async fn request(&self, action: &str, limit: Limit, ip: &str) -> Result<Verdict, ThrottleError> {
        if !self.is_on() {
            return Ok(Verdict::Allowed);
        }
        let count = self.hit(&self.key(action, &[ip]), Some(limit.window)).await?;
        // This request is one of the count: the limit's own last one still goes through.
        let over = Count { count: count.count.saturating_sub(1), ..count };
        Ok(window_wait(over, limit, now_ms()).map_or(Verdict::Allowed, Verdict::Wait))
    }

    // ---- the counters ---------------------------------------------------------------------

    /// Counts one event under `key`, in a fixed `window` from its first event, or (`None`) as
    /// one of an account's consecutive failures, kept [`ACCOUNT_MEMORY`] after the last.
    async fn hit(&self, key: &str, window: Option<Duration>) -> Result<Count, ThrottleError> {
        let now = now_ms();
        match &self.counters {
            Counters::Off => Ok(Count { count: 0, started_ms: now, last_ms: now }),
            Counters::Redis(redis) => {
                // One atomic step: a window that has passed starts again at this event.
                const HIT: &str = "local started = tonumber(redis.call('HGET', KEYS[1], 'started') or '0') \
                    local now, window, memory = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]) \
                    if started > 0 and window > 0 and now >= started + window then \
                      redis.call('DEL', KEYS[1]); started = 0 end \
                    if started == 0 then started = now; redis.call('HSET', KEYS[1], 'started', now) end \
                    local count = redis.call('HINCRBY', KEYS[1], 'count', 1) \
                    redis.call('HSET', KEYS[1], 'last', now) \
                    if window > 0 then redis.call('PEXPIREAT', KEYS[1], started + window) \
                    else redis.call('PEXPIRE', KEYS[1], memory) end \
                    return {count, started, now}";
                let window_ms = window.map_or(0, millis);
                let (count, started_ms, last_ms): (u64, i64, i64) = redis
                    .query(async |conn| {
                        redis::cmd("EVAL")
                            .arg(HIT)
                            .arg(1)
                            .arg(key)
                            .arg(now)
                            .arg(window_ms)
                            .arg(millis(ACCOUNT_MEMORY))
                            .query_async(conn)
                            .await
                    })
                    .await
                    .map_err(ThrottleError::Redis)?;
                Ok(Count { count, started_ms, last_ms })
            }
            Counters::Database(pool) => {
                let key = key.to_owned();
                let at = from_ms(now);
                let expires = at + to_delta(window.unwrap_or(ACCOUNT_MEMORY));
                let row =
                    latchkey_db::run(pool, move |conn| hit_row(conn, &key, at, expires, window.is_none()))
                        .await?;
                Ok(row)
            }
        }
    }

    async fn peek(&self, key: &str) -> Result<Option<Count>, ThrottleError> {
        match &self.counters {
            Counters::Off => Ok(None),
            Counters::Redis(redis) => {
                let (count, started, last): (Option<u64>, Option<i64>, Option<i64>) = redis
                    .query(async |conn| {
                        redis::cmd("HMGET")
                            .arg(key)
                            .arg("count")
                            .arg("started")
                            .arg("last")
                            .query_async(conn)
                            .await
                    })
                    .await
                    .map_err(ThrottleError::Redis)?;
                Ok(count.map(|count| Count {
                    count,
                    started_ms: started.unwrap_or(0),
                    last_ms: last.unwrap_or(0),
                }))
            }
            Counters::Database(pool) => {
                let (key, now) = (key.to_owned(), Utc::now().naive_utc());
                Ok(latchkey_db::run(pool, move |conn| read_row(conn, &key, now)).await?)
            }
        }
    }

    async fn clear(&self, keys: &[String]) -> Result<(), ThrottleError> {
        match &self.counters {
            Counters::Off => Ok(()),
            Counters::Redis(redis) => redis
                .query(async |conn| redis::cmd("DEL").arg(keys).query_async::<i64>(conn).await)
                .await
                .map(drop)
                .map_err(ThrottleError::Redis),
            Counters::Database(pool) => {
                let keys = keys.to_vec();
                latchkey_db::run(pool, move |conn| {
                    diesel::delete(throttle_counters::table.filter(throttle_counters::key.eq_any(keys)))
                        .execute(conn)
                })
                .await?;
                Ok(())
            }
        }
    }
}

/// How long until a window with `count` events is open again, if it is over `limit`.
fn window_wait(count: Count, limit: Limit, now: i64) -> Option<Duration> {
    if count.count < limit.count {
        return None;
    }
    remaining(count.started_ms, limit.window, now)
}

/// What is left of `span` begun at `since` (Unix ms), if anything; at least a second.
fn remaining(since: i64, span: Duration, now: i64) -> Option<Duration> {
    let end = since.saturating_add(i64::try_from(span.as_millis()).unwrap_or(i64::MAX));
    let left = u64::try_from(end.saturating_sub(now)).ok().filter(|left| *left > 0)?;
    Some(Duration::from_millis(left).max(Duration::from_secs(1)))
}

fn hit_row(
    conn: &mut DbConnection,
    key: &str,
    now: NaiveDateTime,
    expires: NaiveDateTime,
    extend: bool,
) -> QueryResult<Count> {
    use diesel::result::{DatabaseErrorKind, Error};
    use throttle_counters::dsl as t;
    // A window that has passed starts again at this event.
    diesel::delete(t::throttle_counters.filter(t::key.eq(key)).filter(t::expires_at.le(now)))
        .execute(conn)?;
    // Statement by statement, not in a transaction: of two first events racing, the one whose
    // insert is refused counts itself with the update. (diesel's upsert is not available on a
    // connection that may be either backend.)
    let increment = |conn: &mut DbConnection| {
        let target = t::throttle_counters.filter(t::key.eq(key));
        if extend {
            diesel::update(target)
                .set((t::count.eq(t::count + 1), t::last_at.eq(now), t::expires_at.eq(expires)))
                .execute(conn)
        } else {
            diesel::update(target).set((t::count.eq(t::count + 1), t::last_at.eq(now))).execute(conn)
        }
    };
    if increment(conn)? == 0 {
        let inserted = diesel::insert_into(t::throttle_counters)
            .values((
                t::key.eq(key),
                t::count.eq(1i64),
                t::started_at.eq(now),
                t::last_at.eq(now),
                t::expires_at.eq(expires),
            ))
            .execute(conn);
        match inserted {
            Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                increment(conn)?;
            }
            other => {
                other?;
            }
        }
    }
    read_row(conn, key, now)
        .map(|row| row.unwrap_or(Count { count: 1, started_ms: ms(now), last_ms: ms(now) }))
}

fn read_row(conn: &mut DbConnection, key: &str, now: NaiveDateTime) -> QueryResult<Option<Count>> {
    use throttle_counters::dsl as t;
    let row: Option<(i64, NaiveDateTime, NaiveDateTime)> = t::throttle_counters
        .filter(t::key.eq(key))
        .filter(t::expires_at.gt(now))
        .select((t::count, t::started_at, t::last_at))
        .first(conn)
        .optional()?;
    Ok(row.map(|(count, started, last)| Count {
        count: u64::try_from(count).unwrap_or(0),
        started_ms: ms(started),
        last_ms: ms(last),
    }))
}

/// Deletes counters past their expiry (when they live in the database); returns how many.
pub fn purge_expired(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(throttle_counters::table.filter(throttle_counters::expires_at.le(now))).execute(conn)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms(at: NaiveDateTime) -> i64 {
    at.and_utc().timestamp_millis()
}

fn from_ms(ms: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().naive_utc()
}

fn to_delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl From<ThrottleError> for AuthError {
    fn from(error: ThrottleError) -> Self {
        match error {
            ThrottleError::Database(error) => Self::Database(error),
            redis @ ThrottleError::Redis(_) => Self::Unavailable(redis.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_over_its_limit_waits_until_it_ends() {
        let limit = Limit::new(5, Duration::from_secs(60));
        let count = |count| Count { count, started_ms: 1_000_000, last_ms: 1_000_000 };
        assert_eq!(window_wait(count(4), limit, 1_000_000), None);
        assert_eq!(window_wait(count(5), limit, 1_030_000), Some(Duration::from_secs(30)));
        assert_eq!(window_wait(count(5), limit, 1_060_000), None, "the window has passed");
    }

    #[test]
    fn an_accounts_wait_doubles_from_one_second_up_to_the_cap() {
        let throttle = Throttle::off();
        let after =
            |count| throttle.account_delay(Count { count, started_ms: 0, last_ms: 1_000_000 }, 1_000_000);
        assert_eq!(after(4), None);
        assert_eq!(after(5), Some(Duration::from_secs(1)));
        assert_eq!(after(6), Some(Duration::from_secs(2)));
        assert_eq!(after(9), Some(Duration::from_secs(16)));
        assert_eq!(after(30), Some(Duration::from_secs(15 * 60)), "capped");
        assert_eq!(after(200), Some(Duration::from_secs(15 * 60)), "no overflow");
    }
}
