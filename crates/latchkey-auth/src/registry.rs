//! The login registry: the `logins` table, one row per login, the server-side truth of who is
//! logged in where. Deleting a row logs that browser out in every session store.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use latchkey_db::DbConnection;

/// The table the registry needs, as `diesel print-schema` writes it. The application's
/// migrations create it, with `user_id` referencing its users (`ON DELETE CASCADE`).
pub mod schema {
    diesel::table! {
        /// One row per login.
        logins (id) {
            /// SHA-256 (hex) of the random token the session carries.
            id -> Text,
            /// The user logged in.
            user_id -> Int4,
            /// When the login began.
            created_at -> Timestamp,
            /// The login's last request, written at most once per touch interval.
            last_seen_at -> Timestamp,
            /// The client's IP address when the login began.
            ip -> Nullable<Text>,
            /// The client's user agent when the login began.
            user_agent -> Nullable<Text>,
            /// Whether "Remember me" was chosen.
            remember -> Bool,
            /// False once session protection saw the IP or user agent change.
            fresh -> Bool,
            /// The user's credential epoch when the password was proved.
            credential_epoch -> Int8,
            /// Bumped every rotate interval where the session id cannot rotate.
            generation -> Int8,
            /// When `generation` last changed.
            rotated_at -> Timestamp,
            /// The last proof of identity: the password at login, or at re-authentication.
            proved_at -> Timestamp,
            /// Whether that proof included a second factor.
            second_factor -> Bool,
        }
    }

    /// The table in SQLite, for applications without migrations of their own (`users` must
    /// exist first).
    pub const SQLITE_DDL: &str = "CREATE TABLE IF NOT EXISTS logins (
        id TEXT PRIMARY KEY NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at TIMESTAMP NOT NULL, last_seen_at TIMESTAMP NOT NULL, ip TEXT, user_agent TEXT,
        remember BOOLEAN NOT NULL DEFAULT FALSE, fresh BOOLEAN NOT NULL DEFAULT TRUE,
        credential_epoch BIGINT NOT NULL DEFAULT 0, generation BIGINT NOT NULL DEFAULT 0,
        rotated_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00',
        proved_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00',
        second_factor BOOLEAN NOT NULL DEFAULT FALSE);
        CREATE INDEX IF NOT EXISTS logins_user_id_idx ON logins (user_id);";
}

use schema::logins;

/// A login. `id` is the SHA-256 (hex) of the token its session carries.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = logins)]
pub struct Login {
    /// SHA-256 (hex) of the token the session carries; see [`token_id`].
    pub id: String,
    /// The user logged in.
    pub user_id: i32,
    /// When the password (or other proof) was given.
    pub created_at: NaiveDateTime,
    /// The login's last request, written at most once per touch interval.
    pub last_seen_at: NaiveDateTime,
    /// The client's IP address when the login began.
    pub ip: Option<String>,
    /// The client's user agent when the login began.
    pub user_agent: Option<String>,
    /// Whether "Remember me" was chosen: no idle timeout, a longer lifetime.
    pub remember: bool,
    /// False once the client's IP or user agent changed (session protection `basic`).
    pub fresh: bool,
    /// The user's credential epoch when the credentials were proved (see
    /// [`AuthUser::credential_epoch`](crate::AuthUser::credential_epoch)).
    pub credential_epoch: i64,
    /// Bumped every rotate interval where the session id cannot rotate.
    pub generation: i64,
    /// When `generation` last changed.
    pub rotated_at: NaiveDateTime,
    /// The last proof of identity: the password at login, or at re-authentication.
    pub proved_at: NaiveDateTime,
    /// Whether that proof included a second factor.
    pub second_factor: bool,
}

/// A user and the login they are logged in through: what a request's [`CurrentUser`] holds,
/// shared with the login cache.
///
/// [`CurrentUser`]: crate::CurrentUser
#[derive(Debug)]
pub struct Authenticated<U> {
    /// The user, as [`AuthUser::load`](crate::AuthUser::load) read it.
    pub user: U,
    /// The login's row in the registry.
    pub login: Login,
}

/// A login about to be recorded.
#[derive(Insertable)]
#[diesel(table_name = logins)]
pub struct NewLogin<'a> {
    /// SHA-256 (hex) of the login's token; see [`token_id`].
    pub id: &'a str,
    /// The user logging in.
    pub user_id: i32,
    /// When the login begins.
    pub created_at: NaiveDateTime,
    /// The login's last request; at first, when it begins.
    pub last_seen_at: NaiveDateTime,
    /// The client's IP address.
    pub ip: Option<&'a str>,
    /// The client's user agent.
    pub user_agent: Option<&'a str>,
    /// Whether "Remember me" was chosen.
    pub remember: bool,
    /// The user's credential epoch at the moment the password was checked.
    pub credential_epoch: i64,
    /// When the current generation began; at first, when the login begins.
    pub rotated_at: NaiveDateTime,
    /// When identity was proved; at first, when the login begins.
    pub proved_at: NaiveDateTime,
    /// Whether the proof included a second factor.
    pub second_factor: bool,
}

impl NewLogin<'_> {
    /// Records the login.
    pub fn insert(&self, conn: &mut DbConnection) -> QueryResult<()> {
        diesel::insert_into(logins::table).values(self).execute(conn).map(drop)
    }
}

/// The registry id of a login token: its SHA-256, hex-encoded.
///
/// ```
/// assert_eq!(latchkey_auth::registry::token_id("abc").len(), 64);
/// ```
pub fn token_id(token: &str) -> String {
    latchkey_sessions::server_side::sha256_hex(token)
}

/// The condition of a login the timeouts have ended at `now` (a macro: Diesel's expression
/// types are unwieldy to name, and the purge and the count must agree).
macro_rules! ended {
    ($now:expr, $idle:expr, $absolute:expr, $remember:expr) => {
        logins::remember.eq(true).and(logins::created_at.lt($now - $remember)).or(logins::remember
            .eq(false)
            .and(logins::last_seen_at.lt($now - $idle).or(logins::created_at.lt($now - $absolute))))
    };
}

impl Login {
    /// The login with registry id `id`, if it exists (live or not).
    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Login>> {
        logins::table.find(id).select(Login::as_select()).first(conn).optional()
    }

    /// Records a request at `now` as the login's last.
    pub fn touch(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> QueryResult<()> {
        diesel::update(logins::table.find(id)).set(logins::last_seen_at.eq(now)).execute(conn).map(drop)
    }

    /// Whether `client`'s IP address or user agent is not the one this login began with (or
    /// last proved itself from): what session protection watches.
    pub fn client_changed(&self, client: crate::client::Client<'_>) -> bool {
        let ip = self.ip.as_deref().map(|ip| ip.parse::<std::net::IpAddr>().ok());
        ip != client.ip.map(Some) || self.user_agent.as_deref() != client.user_agent
    }

    /// Records a fresh proof of identity at `now` from `client` (re-authentication): the
    /// login is fresh again, and the client that proved it is the one session protection
    /// compares later requests with.
    pub fn record_proof(
        conn: &mut DbConnection,
        id: &str,
        now: NaiveDateTime,
        client: &crate::client::ClientInfo,
        second_factor: bool,
    ) -> QueryResult<()> {
        diesel::update(logins::table.find(id))
            .set((
                logins::proved_at.eq(now),
                logins::second_factor.eq(second_factor),
                logins::fresh.eq(true),
                logins::ip.eq(client.ip.as_deref()),
                logins::user_agent.eq(client.user_agent.as_deref()),
            ))
            .execute(conn)
            .map(drop)
    }

    /// Records that session protection saw the client change.
    pub fn mark_not_fresh(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
        diesel::update(logins::table.find(id)).set(logins::fresh.eq(false)).execute(conn).map(drop)
    }

    /// Moves the login from generation `from` to the next; returns false if another request
    /// moved it first.
    pub fn advance_generation(
        conn: &mut DbConnection,
        id: &str,
        from: i64,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        diesel::update(logins::table.find(id).filter(logins::generation.eq(from)))
            .set((logins::generation.eq(from + 1), logins::rotated_at.eq(now)))
            .execute(conn)
            .map(|n| n > 0)
    }

    /// Records that this login proved the credentials of `epoch`.
    pub fn set_credential_epoch(conn: &mut DbConnection, id: &str, epoch: i64) -> QueryResult<()> {
        diesel::update(logins::table.find(id)).set(logins::credential_epoch.eq(epoch)).execute(conn).map(drop)
    }

    /// Ends one login. Returns whether it existed.
    pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<bool> {
        diesel::delete(logins::table.find(id)).execute(conn).map(|n| n > 0)
    }

    /// Ends one of `user_id`'s logins; another user's id matches nothing.
    pub fn delete_for_user(conn: &mut DbConnection, user_id: i32, id: &str) -> QueryResult<bool> {
        diesel::delete(logins::table.filter(logins::user_id.eq(user_id)).filter(logins::id.eq(id)))
            .execute(conn)
            .map(|n| n > 0)
    }

    /// Ends every login of `user_id` except `keep`; returns how many ended.
    pub fn delete_others(conn: &mut DbConnection, user_id: i32, keep: &str) -> QueryResult<usize> {
        diesel::delete(logins::table.filter(logins::user_id.eq(user_id)).filter(logins::id.ne(keep)))
            .execute(conn)
    }

    /// Every login of `user_id`, most recently active first, live or not (see
    /// [`crate::LoginPolicy::is_live`]).
    pub fn list_for_user(conn: &mut DbConnection, user_id: i32) -> QueryResult<Vec<Login>> {
        logins::table
            .filter(logins::user_id.eq(user_id))
            .order(logins::last_seen_at.desc())
            .select(Login::as_select())
            .load(conn)
    }

    /// Deletes logins that ended at `now` by the timeouts: remembered ones `remember` after
    /// they began; others `idle` after their last request or `absolute` after they began.
    pub fn purge_expired(
        conn: &mut DbConnection,
        now: NaiveDateTime,
        idle: chrono::TimeDelta,
        absolute: chrono::TimeDelta,
        remember: chrono::TimeDelta,
    ) -> QueryResult<usize> {
        diesel::delete(logins::table.filter(ended!(now, idle, absolute, remember))).execute(conn)
    }

    /// How many logins the timeouts have not ended (of every user; for metrics).
    pub fn count_live(
        conn: &mut DbConnection,
        now: NaiveDateTime,
        idle: chrono::TimeDelta,
        absolute: chrono::TimeDelta,
        remember: chrono::TimeDelta,
    ) -> QueryResult<i64> {
        logins::table.filter(diesel::dsl::not(ended!(now, idle, absolute, remember))).count().get_result(conn)
    }

    /// How many logins `user_id` has, live or not.
    pub fn count_for_user(conn: &mut DbConnection, user_id: i32) -> QueryResult<i64> {
        logins::table.filter(logins::user_id.eq(user_id)).count().get_result(conn)
    }
}
