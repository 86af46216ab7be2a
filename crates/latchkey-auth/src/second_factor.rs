//! Second factors: TOTP (RFC 6238 authenticator apps), passkeys ([`crate::passkeys`]) and
//! single-use recovery codes, and the password logins that wait for one ([`PendingLogin`]).
//!
//! - A TOTP secret is stored sealed ([`crate::sealing`]), never in plain text, and is active
//!   once confirmed by one valid code. Codes are SHA-1, 6 digits, 30-second steps, accepted
//!   with one step of drift either way, and each step at most once: the last step used is
//!   recorded and a code of that step or an earlier one is refused (no replay).
//! - Recovery codes are 80 random bits each, stored as HMAC-SHA-256 under a key derived from
//!   the application's secret (fast, unlike bcrypt: checking one must not cost ten bcrypt
//!   runs), and each works once. They exist while the user has a factor (TOTP or a passkey).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use latchkey_db::DbConnection;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};

use crate::passkeys::{self, PublicKeyCredential, Purpose, RelyingParty, StoredPasskey};
use crate::sealing::Sealer;

/// The tables, as `diesel print-schema` writes them. The application's migrations create
/// them, each `user_id` referencing its users (`ON DELETE CASCADE`).
pub mod schema {
    diesel::table! {
        /// One authenticator-app secret per user.
        totp_factors (user_id) {
            /// The user.
            user_id -> Int4,
            /// The secret, sealed (see [`crate::sealing`]).
            secret -> Text,
            /// Whether a valid code confirmed it: only then does it guard logins.
            confirmed -> Bool,
            /// The last time step whose code was accepted (-1: none yet).
            last_step -> Int8,
            /// When set-up began.
            created_at -> Timestamp,
        }
    }

    diesel::table! {
        /// Single-use recovery codes, stored as HMACs.
        recovery_codes (id) {
            /// Row id.
            id -> Int4,
            /// The user.
            user_id -> Int4,
            /// HMAC-SHA-256 (hex) of the normalised code.
            code_hash -> Text,
            /// When it was used; `None` while it still works.
            used_at -> Nullable<Timestamp>,
        }
    }

    diesel::table! {
        /// Password logins waiting for their second factor.
        pending_logins (id) {
            /// SHA-256 (hex) of the token the session carries.
            id -> Text,
            /// The user whose password was right.
            user_id -> Int4,
            /// When the password was checked.
            created_at -> Timestamp,
            /// Wrong codes so far.
            attempts -> Int4,
            /// Whether "Remember me" was chosen.
            remember -> Bool,
            /// Where to go once logged in.
            next -> Text,
            /// The user's credential epoch when the password was checked.
            credential_epoch -> Int8,
        }
    }
}

use schema::{pending_logins, recovery_codes, totp_factors};

/// Seconds per TOTP step.
pub const STEP: u64 = 30;
/// How many recovery codes a set holds.
pub const RECOVERY_CODES: usize = 10;
/// How long a password login waits for its second factor.
pub const PENDING_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// Wrong codes a pending login may take; the next one ends it.
pub const MAX_ATTEMPTS: i32 = 5;

/// The keys second factors are kept under: the sealer of TOTP secrets and the HMAC keys of
/// recovery codes (the current first, then the one being rotated out).
#[derive(Clone, Debug)]
pub struct FactorKeys {
    /// Seals TOTP secrets.
    pub sealer: Sealer,
    recovery: Vec<[u8; 32]>,
}

impl FactorKeys {
    /// Keys for sealing TOTP secrets and hashing recovery codes; `previous` ones still open and
    /// match what was made under them.
    pub fn new(sealer: Sealer, recovery: [u8; 32], recovery_previous: Option<[u8; 32]>) -> Self {
        Self { sealer, recovery: std::iter::once(recovery).chain(recovery_previous).collect() }
    }

    fn recovery_hashes(&self, code: &str) -> Vec<String> {
        let normalised = normalise_recovery_code(code);
        self.recovery
            .iter()
            .map(|key| {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
                mac.update(normalised.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            })
            .collect()
    }
}

// ---- TOTP -----------------------------------------------------------------------------------

fn totp(secret: &[u8], issuer: &str, account: &str) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        6,
        1,
        STEP,
        secret.to_vec(),
        Some(issuer.to_owned()),
        account.to_owned(),
    )
}

/// A new random 160-bit TOTP secret.
pub fn new_totp_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// The secret in base32, as people type it into an authenticator app.
pub fn base32(secret: &[u8]) -> String {
    Secret::Raw(secret.to_vec()).to_encoded().to_string()
}

/// The `otpauth://totp/…` URI an authenticator app scans.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    totp(secret, issuer, account).get_url()
}

/// The time step of `code` for `secret` at `now` (Unix seconds), one step of drift allowed
/// either way, if it matches. Compared in constant time.
///
/// ```
/// use latchkey_auth::second_factor::{matching_step, STEP};
/// let secret = b"12345678901234567890";
/// // RFC 6238, appendix B: SHA-1 at T = 59 s gives 94287082 (8 digits; 6 digits: 287082).
/// assert_eq!(matching_step(secret, "287082", 59), Some(1));
/// assert_eq!(matching_step(secret, "287082", 59 + STEP), Some(1), "one step late");
/// assert_eq!(matching_step(secret, "287082", 59 + 2 * STEP), None, "two steps late");
/// ```
pub fn matching_step(secret: &[u8], code: &str, now: u64) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let generator = totp(secret, "", "");
    let step = now / STEP;
    [step.saturating_sub(1), step, step + 1].into_iter().find_map(|candidate| {
        let expected = generator.generate(candidate * STEP);
        bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
            .then(|| i64::try_from(candidate).ok())
            .flatten()
    })
}

/// A user's authenticator-app factor.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = totp_factors)]
pub struct TotpFactor {
    /// The user.
    pub user_id: i32,
    /// The sealed secret.
    pub secret: String,
    /// Whether it is active.
    pub confirmed: bool,
    /// The last step accepted.
    pub last_step: i64,
    /// When set-up began.
    pub created_at: NaiveDateTime,
}

impl TotpFactor {
    /// The user's factor, confirmed or not.
    pub fn find(conn: &mut DbConnection, user_id: i32) -> QueryResult<Option<TotpFactor>> {
        totp_factors::table.find(user_id).select(TotpFactor::as_select()).first(conn).optional()
    }

    /// Whether the user has an active second factor.
    pub fn is_enabled(conn: &mut DbConnection, user_id: i32) -> QueryResult<bool> {
        Self::find(conn, user_id).map(|factor| factor.is_some_and(|f| f.confirmed))
    }

    /// Starts set-up with a new sealed secret, replacing an unconfirmed one. Returns false
    /// (and changes nothing) when a confirmed factor exists: remove it first.
    pub fn begin(
        conn: &mut DbConnection,
        user_id: i32,
        sealed: &str,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        latchkey_db::write_transaction(conn, |conn| {
            if Self::is_enabled(conn, user_id)? {
                return Ok(false);
            }
            diesel::delete(totp_factors::table.find(user_id)).execute(conn)?;
            diesel::insert_into(totp_factors::table)
                .values((
                    totp_factors::user_id.eq(user_id),
                    totp_factors::secret.eq(sealed),
                    totp_factors::created_at.eq(now),
                ))
                .execute(conn)
                .map(|_| true)
        })
    }

    /// The plain secret; a secret sealed under the previous key is sealed again under the
    /// current one as it is read.
    pub fn open_secret(&self, conn: &mut DbConnection, keys: &FactorKeys) -> QueryResult<Option<Vec<u8>>> {
        let Some(opened) = keys.sealer.open(&self.secret) else { return Ok(None) };
        if opened.stale {
            diesel::update(totp_factors::table.find(self.user_id))
                .set(totp_factors::secret.eq(keys.sealer.seal(&opened.plain)))
                .execute(conn)?;
        }
        Ok(Some(opened.plain))
    }

    /// Accepts `step` once: true if it is later than every step accepted before (and records
    /// it), false for a replay. With `confirm`, the factor becomes active.
    fn accept_step(conn: &mut DbConnection, user_id: i32, step: i64, confirm: bool) -> QueryResult<bool> {
        let target = totp_factors::table.find(user_id).filter(totp_factors::last_step.lt(step));
        let updated = if confirm {
            diesel::update(target)
                .set((totp_factors::last_step.eq(step), totp_factors::confirmed.eq(true)))
                .execute(conn)?
        } else {
            diesel::update(target.filter(totp_factors::confirmed.eq(true)))
                .set(totp_factors::last_step.eq(step))
                .execute(conn)?
        };
        Ok(updated == 1)
    }

    /// Removes the factor, and the recovery codes with it unless a passkey remains.
    pub fn remove(conn: &mut DbConnection, user_id: i32) -> QueryResult<()> {
        latchkey_db::write_transaction(conn, |conn| {
            diesel::delete(totp_factors::table.find(user_id)).execute(conn)?;
            drop_recovery_codes_unless_factor(conn, user_id)
        })
    }
}

/// Whether the user has a second factor: a confirmed authenticator app or a passkey.
pub fn has_any(conn: &mut DbConnection, user_id: i32) -> QueryResult<bool> {
    Ok(TotpFactor::is_enabled(conn, user_id)? || StoredPasskey::exists_for(conn, user_id)?)
}

/// Removes the user's passkey `id`, and the recovery codes with it when it was the last
/// factor. False when the user has no such passkey.
pub fn remove_passkey(conn: &mut DbConnection, user_id: i32, id: i32) -> QueryResult<bool> {
    latchkey_db::write_transaction(conn, |conn| {
        let removed = StoredPasskey::remove(conn, user_id, id)?;
        drop_recovery_codes_unless_factor(conn, user_id)?;
        Ok(removed)
    })
}

/// Removes every second factor of the user, recovery codes included (an administrator's
/// answer to someone who lost both their device and their codes); returns whether there was
/// any.
pub fn remove_all(conn: &mut DbConnection, user_id: i32) -> QueryResult<bool> {
    latchkey_db::write_transaction(conn, |conn| {
        let had = has_any(conn, user_id)?;
        diesel::delete(totp_factors::table.find(user_id)).execute(conn)?;
        StoredPasskey::remove_all(conn, user_id)?;
        diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id))).execute(conn)?;
        Ok(had)
    })
}

/// Recovery codes stand in for a factor: with none left, they go.
fn drop_recovery_codes_unless_factor(conn: &mut DbConnection, user_id: i32) -> QueryResult<()> {
    if !has_any(conn, user_id)? {
        diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id))).execute(conn)?;
    }
    Ok(())
}

/// Confirms the user's factor under set-up with `code`: true when the code is right (the
/// factor is then active), false otherwise (nothing changes).
pub fn confirm_totp(
    conn: &mut DbConnection,
    keys: &FactorKeys,
    user_id: i32,
    code: &str,
    now: u64,
) -> QueryResult<bool> {
    let Some(factor) = TotpFactor::find(conn, user_id)?.filter(|f| !f.confirmed) else { return Ok(false) };
    let Some(secret) = factor.open_secret(conn, keys)? else { return Ok(false) };
    match matching_step(&secret, code, now) {
        Some(step) => TotpFactor::accept_step(conn, user_id, step, true),
        None => Ok(false),
    }
}

/// How a second factor was proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A code from the authenticator app.
    Totp,
    /// A recovery code, now used up.
    RecoveryCode,
    /// A passkey.
    Passkey,
}

/// What a user offers as their second factor.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A TOTP code or a recovery code, as typed.
    Code(String),
    /// A passkey's answer to the ceremony the token names.
    Passkey {
        /// The ceremony's token.
        ceremony: String,
        /// The browser's answer.
        credential: Box<PublicKeyCredential>,
    },
}

impl Answer {
    /// What kind of answer it is, for records: `code` or `passkey` (never the code itself).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Code(_) => "code",
            Self::Passkey { .. } => "passkey",
        }
    }
}

/// Checks `answer` against the user's factors: a TOTP code of an unused step, a recovery code
/// not used before (which this uses up), or one of the user's passkeys answering a ceremony of
/// `purpose` begun for this user. `None` when it does not match.
pub fn verify(
    conn: &mut DbConnection,
    keys: &FactorKeys,
    party: &RelyingParty,
    user_id: i32,
    answer: &Answer,
    purpose: Purpose,
    now: NaiveDateTime,
) -> QueryResult<Option<Proof>> {
    let code = match answer {
        Answer::Code(code) => code,
        Answer::Passkey { ceremony, credential } => {
            let checked = passkeys::finish_authentication(
                conn,
                party,
                purpose,
                ceremony,
                Some(user_id),
                credential,
                now,
            )?;
            return Ok(checked.ok().map(|_| Proof::Passkey));
        }
    };
    if let Some(factor) = TotpFactor::find(conn, user_id)?.filter(|f| f.confirmed) {
        let unix = u64::try_from(now.and_utc().timestamp()).unwrap_or(0);
        if let Some(secret) = factor.open_secret(conn, keys)? {
            if let Some(step) = matching_step(&secret, code, unix) {
                return Ok(TotpFactor::accept_step(conn, user_id, step, false)?.then_some(Proof::Totp));
            }
        }
    }
    Ok(consume_recovery_code(conn, keys, user_id, code, now)?.then_some(Proof::RecoveryCode))
}

// ---- recovery codes -------------------------------------------------------------------------

/// Upper case without separators, as codes are compared.
fn normalise_recovery_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

/// A new set of recovery codes: 80 random bits each, in base32 as `XXXX-XXXX-XXXX-XXXX`.
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            rand::rng().fill_bytes(&mut bytes);
            let encoded = base32(&bytes);
            encoded
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// Replaces the user's recovery codes with `codes` (stored as HMACs): the old set stops working.
pub fn replace_recovery_codes(
    conn: &mut DbConnection,
    keys: &FactorKeys,
    user_id: i32,
    codes: &[String],
) -> QueryResult<()> {
    latchkey_db::write_transaction(conn, |conn| {
        diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id))).execute(conn)?;
        for code in codes {
            let hash = keys.recovery_hashes(code).swap_remove(0);
            diesel::insert_into(recovery_codes::table)
                .values((recovery_codes::user_id.eq(user_id), recovery_codes::code_hash.eq(hash)))
                .execute(conn)?;
        }
        Ok(())
    })
}

/// How many unused recovery codes the user has.
pub fn recovery_codes_left(conn: &mut DbConnection, user_id: i32) -> QueryResult<i64> {
    recovery_codes::table
        .filter(recovery_codes::user_id.eq(user_id).and(recovery_codes::used_at.is_null()))
        .count()
        .get_result(conn)
}

/// Uses up `code` if it is one of the user's unused codes; true if it was.
fn consume_recovery_code(
    conn: &mut DbConnection,
    keys: &FactorKeys,
    user_id: i32,
    code: &str,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    if normalise_recovery_code(code).len() != 16 {
        return Ok(false);
    }
    let hashes = keys.recovery_hashes(code);
    let used = diesel::update(
        recovery_codes::table
            .filter(recovery_codes::user_id.eq(user_id))
            .filter(recovery_codes::code_hash.eq_any(hashes))
            .filter(recovery_codes::used_at.is_null()),
    )
    .set(recovery_codes::used_at.eq(now))
    .execute(conn)?;
    Ok(used > 0)
}

// ---- pending logins -------------------------------------------------------------------------

/// A password login waiting for its second factor.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = pending_logins)]
pub struct PendingLogin {
    /// SHA-256 (hex) of the token the session carries.
    pub id: String,
    /// The user whose password was right.
    pub user_id: i32,
    /// When the password was checked.
    pub created_at: NaiveDateTime,
    /// Wrong codes so far.
    pub attempts: i32,
    /// Whether "Remember me" was chosen.
    pub remember: bool,
    /// Where to go once logged in.
    pub next: String,
    /// The user's credential epoch when the password was checked.
    pub credential_epoch: i64,
}

impl PendingLogin {
    /// Records a pending login.
    pub fn insert(
        conn: &mut DbConnection,
        id: &str,
        user_id: i32,
        now: NaiveDateTime,
        remember: bool,
        next: &str,
        credential_epoch: i64,
    ) -> QueryResult<()> {
        diesel::insert_into(pending_logins::table)
            .values((
                pending_logins::id.eq(id),
                pending_logins::user_id.eq(user_id),
                pending_logins::created_at.eq(now),
                pending_logins::remember.eq(remember),
                pending_logins::next.eq(next),
                pending_logins::credential_epoch.eq(credential_epoch),
            ))
            .execute(conn)
            .map(drop)
    }

    /// The pending login `id`, unless it is gone or older than [`PENDING_LIFETIME`] (then it
    /// is deleted).
    pub fn find_live(
        conn: &mut DbConnection,
        id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<PendingLogin>> {
        let found =
            pending_logins::table.find(id).select(PendingLogin::as_select()).first(conn).optional()?;
        match found {
            Some(pending) if now - pending.created_at > PENDING_LIFETIME => {
                Self::delete(conn, id)?;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Counts a wrong code; returns the count.
    pub fn record_failure(conn: &mut DbConnection, id: &str) -> QueryResult<i32> {
        diesel::update(pending_logins::table.find(id))
            .set(pending_logins::attempts.eq(pending_logins::attempts + 1))
            .execute(conn)?;
        pending_logins::table
            .find(id)
            .select(pending_logins::attempts)
            .first(conn)
            .optional()
            .map(|a| a.unwrap_or(MAX_ATTEMPTS))
    }

    /// Ends the pending login.
    pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
        diesel::delete(pending_logins::table.find(id)).execute(conn).map(drop)
    }

    /// Deletes pending logins older than [`PENDING_LIFETIME`]; returns how many.
    pub fn purge_expired(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(pending_logins::table.filter(pending_logins::created_at.lt(now - PENDING_LIFETIME)))
            .execute(conn)
    }
}
