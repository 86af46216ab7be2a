//! The rules a login lives by: idle and absolute timeouts, remember-me, session protection,
//! the credential epoch and the login generation. [`check`] applies them all on every request.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use diesel::QueryResult;
use latchkey_db::DbConnection;

use crate::client::{Client, ClientInfo};
use crate::registry::Login;
use crate::user::AuthUser;

/// Flask-Login's `session_protection`: what happens when a login's IP or user agent changes.
///
/// ```
/// use latchkey_auth::{LoginPolicy, Protection};
/// assert_eq!(LoginPolicy::default().protection, Protection::Basic);
/// let strict = LoginPolicy { protection: Protection::Strong, ..LoginPolicy::default() };
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Ignore the change.
    Off,
    /// Mark the login not fresh and log it.
    Basic,
    /// End the login.
    Strong,
}

/// Rotation of the login generation, for session stores whose ids cannot rotate.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// The generation moves on this often while the login is used.
    pub interval: Duration,
    /// A session of the previous generation keeps working this long after the move.
    pub grace: Duration,
}

/// How long logins live and how they are guarded.
#[derive(Debug, Clone)]
pub struct LoginPolicy {
    /// An ordinary login ends after this long without a request.
    pub idle_timeout: Duration,
    /// An ordinary login ends this long after it began, however active.
    pub absolute_timeout: Duration,
    /// A remembered login ends this long after it began, however active.
    pub remember_duration: Duration,
    /// `last_seen_at` is written at most this often.
    pub touch_interval: Duration,
    /// `Some` where the session id cannot rotate (the cookie store).
    pub generation_rotation: Option<Rotation>,
    /// What a change of IP address or user agent does to a login.
    pub protection: Protection,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// How long before the idle timeout pages warn.
    pub timeout_warning: Duration,
    /// A login is fresh this long after its last proof of identity ([`LoginPolicy::is_fresh`]).
    pub reauth_window: Duration,
    /// Whether [`crate::LoginRequired`] refuses a user whose email is not confirmed
    /// ([`crate::AuthUser::email_confirmed`]), except on resources marked
    /// [`crate::UnconfirmedAllowed`].
    pub require_confirmed_email: bool,
}

impl Default for LoginPolicy {
    /// 30 minutes idle, 12 hours absolute, 30 days remembered, protection `basic`.
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            remember_duration: Duration::from_secs(30 * 86_400),
            touch_interval: Duration::from_secs(60),
            generation_rotation: None,
            protection: Protection::Basic,
            trusted_proxies: Vec::new(),
            timeout_warning: Duration::from_secs(120),
            reauth_window: Duration::from_secs(15 * 60),
            require_confirmed_email: false,
        }
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

impl LoginPolicy {
    /// When the login ends if nothing more happens: (idle deadline, absolute deadline). A
    /// remembered login has no idle deadline and ends `remember_duration` after it began.
    pub fn deadlines(&self, login: &Login) -> (Option<NaiveDateTime>, NaiveDateTime) {
        if login.remember {
            (None, login.created_at + delta(self.remember_duration))
        } else {
            (
                Some(login.last_seen_at + delta(self.idle_timeout)),
                login.created_at + delta(self.absolute_timeout),
            )
        }
    }

    /// Whether the login may do sensitive things at `now` without proving identity again:
    /// its last proof is younger than `reauth_window`, and session protection has not seen
    /// its client change since (Flask-Login's fresh login).
    pub fn is_fresh(&self, login: &Login, now: NaiveDateTime) -> bool {
        login.fresh && now < login.proved_at + delta(self.reauth_window)
    }

    /// Whether the login's timeouts still allow it at `now`.
    pub fn is_live(&self, login: &Login, now: NaiveDateTime) -> bool {
        let (idle, absolute) = self.deadlines(login);
        now <= absolute && idle.is_none_or(|idle| now <= idle)
    }

    /// How many logins of every user the timeouts have not ended.
    pub fn count_live(&self, conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<i64> {
        Login::count_live(
            conn,
            now,
            delta(self.idle_timeout),
            delta(self.absolute_timeout),
            delta(self.remember_duration),
        )
    }

    /// Deletes every login the timeouts have ended; returns how many.
    pub fn purge_expired(&self, conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
        Login::purge_expired(
            conn,
            now,
            delta(self.idle_timeout),
            delta(self.absolute_timeout),
            delta(self.remember_duration),
        )
    }
}

/// What a login token is worth right now.
pub enum Verdict<U> {
    /// The login holds. `generation` is set when the session must carry a new generation.
    Live {
        /// The login's row, as refreshed by the check.
        login: Login,
        /// The login's user.
        user: U,
        /// The generation the session must carry from now on, if it changed.
        generation: Option<i64>,
        /// The session carries the previous generation, within its grace period: served, but
        /// it must not send its (old) cookie back.
        in_grace: bool,
        /// Session protection (`basic`) saw the client change on this request and marked the
        /// login not fresh.
        flagged: bool,
    },
    /// Past its idle or absolute timeout; the row has been deleted.
    Expired {
        /// The login's user.
        user_id: i32,
    },
    /// Ended by session protection (`strong`) or by a change of the user's credentials; the
    /// row has been deleted.
    Ended {
        /// The login's user.
        user_id: i32,
        /// Whether session protection ended it (rather than a credential change).
        by_protection: bool,
    },
    /// This session carries a generation the login has moved past: a copy of an old cookie.
    Superseded {
        /// The login's user.
        user_id: i32,
    },
    /// No such login (logged out, revoked, or never existed).
    Missing,
}

/// How a check treats `last_seen_at`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Refresh it at most once per touch interval (ordinary requests).
    Throttled,
    /// Refresh it now ("Stay signed in").
    Force,
    /// Leave it (status polling must not extend the login).
    Never,
}

/// Decides whether the login `id`, presented by a session carrying `generation`, is live at
/// `now` for `client`, and refreshes `last_seen_at` as `touch` says.
pub fn check<U: AuthUser>(
    conn: &mut DbConnection,
    id: &str,
    generation: i64,
    now: NaiveDateTime,
    policy: &LoginPolicy,
    client: &ClientInfo,
    touch: Touch,
) -> QueryResult<Verdict<U>> {
    let Some(mut login) = Login::find(conn, id)? else {
        return Ok(Verdict::Missing);
    };
    let Some(user) = U::load(conn, login.user_id)?.filter(AuthUser::is_active) else {
        Login::delete(conn, id)?;
        return Ok(Verdict::Missing);
    };
    if login.credential_epoch != user.credential_epoch() {
        // "Log out everywhere else" may have moved the user and this very login on between
        // the two reads: read the login again before ending it.
        match Login::find(conn, id)? {
            Some(again) if again.credential_epoch == user.credential_epoch() => login = again,
            Some(_) => {
                Login::delete(conn, id)?;
                log::info!("a login of user {} ended: its credentials changed", login.user_id);
                return Ok(Verdict::Ended { user_id: login.user_id, by_protection: false });
            }
            None => return Ok(Verdict::Missing),
        }
    }
    if !policy.is_live(&login, now) {
        Login::delete(conn, id)?;
        log::info!("a login of user {} expired", login.user_id);
        return Ok(Verdict::Expired { user_id: login.user_id });
    }
    let mut flagged = false;
    if login.client_changed(client.view()) {
        match policy.protection {
            Protection::Off => {}
            Protection::Basic if login.fresh => {
                Login::mark_not_fresh(conn, id)?;
                login.fresh = false;
                flagged = true;
                log::warn!("a login of user {} changed IP or user agent: marked not fresh", login.user_id);
            }
            Protection::Basic => {}
            Protection::Strong => {
                Login::delete(conn, id)?;
                log::warn!("a login of user {} changed IP or user agent: ended", login.user_id);
                return Ok(Verdict::Ended { user_id: login.user_id, by_protection: true });
            }
        }
    }
    let (mut carried, mut in_grace) = (None, false);
    if let Some(rotation) = policy.generation_rotation {
        let since_rotation = now - login.rotated_at;
        if generation == login.generation {
            if since_rotation >= delta(rotation.interval) {
                if !Login::advance_generation(conn, id, login.generation, now)? {
                    // A concurrent request of this session moved it first: follow it.
                    let Some(moved) = Login::find(conn, id)? else {
                        return Ok(Verdict::Missing);
                    };
                    login = moved;
                } else {
                    login.generation += 1;
                    login.rotated_at = now;
                }
                carried = Some(login.generation);
            }
        } else if generation == login.generation - 1 && since_rotation < delta(rotation.grace) {
            in_grace = true;
        } else {
            return Ok(Verdict::Superseded { user_id: login.user_id });
        }
    }
    if touch.is_due(&login, now, policy) {
        Login::touch(conn, id, now)?;
        login.last_seen_at = now;
    }
    Ok(Verdict::Live { login, user, generation: carried, in_grace, flagged })
}

impl Touch {
    /// Whether `last_seen_at` is to be written now.
    fn is_due(self, login: &Login, now: NaiveDateTime, policy: &LoginPolicy) -> bool {
        match self {
            Touch::Throttled => now - login.last_seen_at >= delta(policy.touch_interval),
            Touch::Force => true,
            Touch::Never => false,
        }
    }
}

/// A login served from the cache: whether it is in its generation's grace period, and
/// whether its `last_seen_at` is due to be written.
pub(crate) struct CachedLive {
    pub(crate) in_grace: bool,
    pub(crate) touch_due: bool,
}

/// [`check`]'s verdict on a cached `login` and `user` when it needs no write but perhaps the
/// touch (which the caller makes off the request's path). `None` sends the request to the
/// database: the login ended, or session protection or the generation must write, or the
/// cached `last_seen_at` (possibly older than another instance's) says the idle timeout
/// passed, which only the database can confirm.
pub(crate) fn check_cached<U: AuthUser>(
    login: &Login,
    user: &U,
    generation: i64,
    now: NaiveDateTime,
    policy: &LoginPolicy,
    client: Client<'_>,
    touch: Touch,
) -> Option<CachedLive> {
    if touch == Touch::Force
        || !user.is_active()
        || login.credential_epoch != user.credential_epoch()
        || !policy.is_live(login, now)
    {
        return None;
    }
    let protection_acts = match policy.protection {
        Protection::Off => false,
        Protection::Basic => login.fresh,
        Protection::Strong => true,
    };
    if protection_acts && login.client_changed(client) {
        return None;
    }
    let mut in_grace = false;
    if let Some(rotation) = policy.generation_rotation {
        let since_rotation = now - login.rotated_at;
        if generation == login.generation {
            if since_rotation >= delta(rotation.interval) {
                return None;
            }
        } else if generation == login.generation - 1 && since_rotation < delta(rotation.grace) {
            in_grace = true;
        } else {
            return None;
        }
    }
    Some(CachedLive { in_grace, touch_due: touch.is_due(login, now, policy) })
}

/// Seconds left before the login ends, as the idle-timeout warning reads them.
#[derive(Debug, serde::Serialize)]
pub struct LoginStatus {
    /// Whether there is a live login.
    pub authenticated: bool,
    /// `None` for a remembered login, which has no idle timeout.
    pub idle_expires_in: Option<i64>,
    /// Seconds until the absolute (or remembered) deadline; `None` when anonymous.
    pub absolute_expires_in: Option<i64>,
    /// How long before the idle timeout the page warns, in seconds.
    pub warn_before: i64,
}

impl LoginStatus {
    /// The status of `login` (`None`: anonymous) under `policy`, as of now.
    ///
    /// ```
    /// use latchkey_auth::{LoginPolicy, LoginStatus};
    /// let status = LoginStatus::of(None, &LoginPolicy::default());
    /// assert!(!status.authenticated && status.idle_expires_in.is_none());
    /// assert_eq!(status.warn_before, 120);
    /// ```
    pub fn of(login: Option<&Login>, policy: &LoginPolicy) -> Self {
        let warn_before = i64::try_from(policy.timeout_warning.as_secs()).unwrap_or(i64::MAX);
        let Some(login) = login else {
            return Self {
                authenticated: false,
                idle_expires_in: None,
                absolute_expires_in: None,
                warn_before,
            };
        };
        let now = chrono::Utc::now().naive_utc();
        let (idle, absolute) = policy.deadlines(login);
        // Rounded up: a login with 2.9 s left has not got 2 s left.
        let seconds_until =
            |deadline: NaiveDateTime| ((deadline - now).num_milliseconds().max(0) + 999) / 1000;
        Self {
            authenticated: true,
            idle_expires_in: idle.map(seconds_until),
            absolute_expires_in: Some(seconds_until(absolute)),
            warn_before,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(remember: bool, created: i64, last_seen: i64) -> Login {
        let at = |s: i64| chrono::DateTime::from_timestamp(s, 0).map(|t| t.naive_utc()).unwrap_or_default();
        Login {
            id: String::new(),
            user_id: 1,
            created_at: at(created),
            last_seen_at: at(last_seen),
            ip: None,
            user_agent: None,
            remember,
            fresh: true,
            credential_epoch: 0,
            generation: 0,
            rotated_at: at(created),
            proved_at: at(created),
            second_factor: false,
        }
    }

    fn at(s: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(s, 0).map(|t| t.naive_utc()).unwrap_or_default()
    }

    #[test]
    fn an_ordinary_login_ends_at_the_first_deadline() {
        let policy = LoginPolicy {
            idle_timeout: Duration::from_secs(10),
            absolute_timeout: Duration::from_secs(100),
            ..LoginPolicy::default()
        };
        assert!(policy.is_live(&login(false, 0, 0), at(10)));
        assert!(!policy.is_live(&login(false, 0, 0), at(11)), "idle");
        assert!(policy.is_live(&login(false, 0, 95), at(100)));
        assert!(!policy.is_live(&login(false, 0, 95), at(101)), "absolute, however active");
    }

    #[test]
    fn a_remembered_login_ends_remember_duration_after_it_began_however_active() {
        let policy = LoginPolicy { remember_duration: Duration::from_secs(50), ..LoginPolicy::default() };
        assert!(policy.is_live(&login(true, 0, 0), at(49)), "no idle timeout");
        assert!(!policy.is_live(&login(true, 0, 49), at(51)));
        assert_eq!(policy.deadlines(&login(true, 0, 49)), (None, at(50)));
    }
}
