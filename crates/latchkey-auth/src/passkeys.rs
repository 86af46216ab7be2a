//! Passkeys (WebAuthn), through `webauthn-rs`'s safe API: adding one to an account, signing in
//! with one alone (a discoverable credential, which counts as two factors: something held and
//! a PIN or biometric that unlocks it), and using one as the second factor of a password login
//! or of a re-authentication.
//!
//! - The relying party is the host of the site's public origin ([`RelyingParty::for_origin`]).
//!   Browsers refuse passkeys for a bare IP address: then passkeys are off, and the reason is
//!   there to log and to show, but the site still starts.
//! - The state of a ceremony (between the options sent to the browser and the browser's
//!   answer) never leaves the server: it is a row of `passkey_ceremonies`, shared by every
//!   instance, taken once and dead after [`CEREMONY_LIFETIME`], whatever the
//!   session store. The browser holds only a random token naming it, and only its SHA-256 is
//!   stored.
//! - Passkeys are stored as webauthn-rs serialises them (public keys and counters: nothing
//!   secret), with the credential id apart, unique across accounts.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use latchkey_db::DbConnection;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, Uuid, Webauthn,
    WebauthnBuilder,
};
use webauthn_rs_proto::ResidentKeyRequirement;

pub use webauthn_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse,
    Url,
};

use crate::registry::token_id;

/// The tables, as `diesel print-schema` writes them. The application's migrations create
/// them, `passkeys.user_id` referencing its users (`ON DELETE CASCADE`).
pub mod schema {
    diesel::table! {
        /// The passkeys of each user.
        passkeys (id) {
            /// Row id.
            id -> Int4,
            /// The user.
            user_id -> Int4,
            /// The WebAuthn user handle (a UUID), the same for all of a user's passkeys.
            user_handle -> Text,
            /// The credential id, base64url: unique across accounts.
            credential_id -> Text,
            /// The name the user gave it.
            name -> Text,
            /// The passkey as webauthn-rs serialises it (public key, counter).
            passkey -> Text,
            /// When it was added.
            created_at -> Timestamp,
            /// When it last proved a login.
            last_used_at -> Nullable<Timestamp>,
        }
    }

    diesel::table! {
        /// WebAuthn ceremonies under way: each taken once, and dead after five minutes.
        passkey_ceremonies (id) {
            /// SHA-256 (hex) of the token the browser holds.
            id -> Text,
            /// What the ceremony is for (see `Purpose`).
            purpose -> Text,
            /// The user it belongs to; `None` for a sign-in, which finds its user.
            user_id -> Nullable<Int4>,
            /// The ceremony's state, serialised.
            state -> Text,
            /// When it began.
            created_at -> Timestamp,
        }
    }
}

use schema::{passkey_ceremonies, passkeys};

/// How long a ceremony may take, from the options to the browser's answer.
pub const CEREMONY_LIFETIME: TimeDelta = TimeDelta::minutes(5);
/// The longest name a passkey may have.
pub const NAME_MAX: usize = 64;

// ---- the relying party ----------------------------------------------------------------------

/// The site as a WebAuthn relying party, or why passkeys are off.
#[derive(Clone, Debug)]
pub enum RelyingParty {
    /// Passkeys are on, for this relying party.
    On(Arc<Webauthn>),
    /// Passkeys are off, for this reason (for the log and the security page).
    Off(String),
}

impl RelyingParty {
    /// The relying party of a site whose public origin is `public_url` (`https://` or, behind
    /// a proxy that ends TLS, `http://`); its id is the URL's host. Off, with the reason, when
    /// the host is an IP address (browsers refuse those) or the URL cannot serve.
    ///
    /// ```
    /// use latchkey_auth::passkeys::RelyingParty;
    /// assert!(RelyingParty::for_origin("http://localhost:8080", "latchkey").webauthn().is_some());
    /// assert!(RelyingParty::for_origin("https://shop.example.com", "latchkey").webauthn().is_some());
    /// let off = RelyingParty::for_origin("http://127.0.0.1:8080", "latchkey");
    /// assert!(off.off_reason().is_some_and(|why| why.contains("IP address")));
    /// ```
    pub fn for_origin(public_url: &str, name: &str) -> RelyingParty {
        let url = match Url::parse(public_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            _ => return Self::Off(format!("PUBLIC_URL ({public_url}) is not an http:// or https:// URL")),
        };
        let domain = match (url.domain(), url.host_str()) {
            (Some(domain), _) => domain.to_owned(),
            (None, Some(_)) => {
                return Self::Off(format!(
                    "PUBLIC_URL ({public_url}) names an IP address, and browsers allow passkeys only for \
                     a domain name (such as localhost): set PUBLIC_URL to the name people use"
                ))
            }
            (None, None) => return Self::Off(format!("PUBLIC_URL ({public_url}) has no host")),
        };
        let origin = url.origin().ascii_serialization();
        let built = Url::parse(&origin)
            .ok()
            .and_then(|origin| WebauthnBuilder::new(&domain, &origin).ok()?.rp_name(name).build().ok());
        match built {
            Some(webauthn) => Self::On(Arc::new(webauthn)),
            None => Self::Off(format!("PUBLIC_URL ({public_url}) cannot serve as a WebAuthn relying party")),
        }
    }

    /// The relying party, when passkeys are on.
    pub fn webauthn(&self) -> Option<&Webauthn> {
        match self {
            Self::On(webauthn) => Some(webauthn),
            Self::Off(_) => None,
        }
    }

    /// Why passkeys are off, when they are.
    pub fn off_reason(&self) -> Option<&str> {
        match self {
            Self::On(_) => None,
            Self::Off(reason) => Some(reason),
        }
    }
}

// ---- why a ceremony failed ------------------------------------------------------------------

/// Why a passkey ceremony did not succeed: each is the browser's or the user's doing, shown to
/// them, and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Passkeys are off on this site.
    #[error("Passkeys are not available on this site.")]
    Off,
    /// No ceremony of that token and purpose: never begun, used already, or too old.
    #[error("That took too long, or was already used. Try again.")]
    Expired,
    /// The account has no passkey to ask for.
    #[error("This account has no passkey.")]
    NoPasskey,
    /// The passkey is not one of this site's (or not the expected account's).
    #[error("That passkey is not registered here.")]
    Unknown,
    /// The browser's answer did not verify.
    #[error("The passkey's answer could not be verified. Try again.")]
    Unverified,
    /// The passkey is registered already.
    #[error("That passkey is already registered.")]
    Duplicate,
}

/// A database result whose success may still be a [`Refusal`].
pub type Checked<T> = QueryResult<Result<T, Refusal>>;

// ---- ceremonies -----------------------------------------------------------------------------

/// What a ceremony is for: its answer is accepted only for the same purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Adding a passkey to the logged-in user's account.
    Register,
    /// Signing in with a passkey alone, from the login page.
    SignIn,
    /// The second step of a password login.
    SecondFactor,
    /// Proving identity again before a sensitive action.
    Reauth,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::SignIn => "sign-in",
            Self::SecondFactor => "second-factor",
            Self::Reauth => "reauth",
        }
    }
}

/// A ceremony's state on the server.
#[derive(Serialize, Deserialize)]
enum State {
    Registration { handle: Uuid, state: PasskeyRegistration },
    Authentication(PasskeyAuthentication),
    Discoverable(DiscoverableAuthentication),
}

/// Records a ceremony; returns the token the browser sends back with its answer.
fn store_ceremony(
    conn: &mut DbConnection,
    purpose: Purpose,
    user_id: Option<i32>,
    state: &State,
    now: NaiveDateTime,
) -> QueryResult<String> {
    let serialised =
        serde_json::to_string(state).map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    diesel::insert_into(passkey_ceremonies::table)
        .values((
            passkey_ceremonies::id.eq(token_id(&token)),
            passkey_ceremonies::purpose.eq(purpose.as_str()),
            passkey_ceremonies::user_id.eq(user_id),
            passkey_ceremonies::state.eq(serialised),
            passkey_ceremonies::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(token)
}

/// Takes the ceremony `token` names, once: it is deleted whether or not it then succeeds, so a
/// replayed answer finds nothing. `None` when it is gone, too old, or of another purpose.
fn take_ceremony(
    conn: &mut DbConnection,
    token: &str,
    purpose: Purpose,
    now: NaiveDateTime,
) -> QueryResult<Option<(Option<i32>, State)>> {
    let id = token_id(token);
    latchkey_db::write_transaction(conn, |conn| {
        let found = passkey_ceremonies::table
            .find(&id)
            .select((
                passkey_ceremonies::purpose,
                passkey_ceremonies::user_id,
                passkey_ceremonies::state,
                passkey_ceremonies::created_at,
            ))
            .first::<(String, Option<i32>, String, NaiveDateTime)>(conn)
            .optional()?;
        // Of two requests racing with one token, only the one whose delete succeeds goes on.
        let deleted = diesel::delete(passkey_ceremonies::table.find(&id)).execute(conn)?;
        Ok(found
            .filter(|(kind, _, _, created_at)| {
                deleted == 1 && kind == purpose.as_str() && now - *created_at <= CEREMONY_LIFETIME
            })
            .and_then(|(_, user_id, state, _)| Some((user_id, serde_json::from_str(&state).ok()?))))
    })
}

/// Deletes ceremonies older than [`CEREMONY_LIFETIME`]; returns how many.
pub fn purge_expired(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(
        passkey_ceremonies::table.filter(passkey_ceremonies::created_at.lt(now - CEREMONY_LIFETIME)),
    )
    .execute(conn)
}

// ---- stored passkeys ------------------------------------------------------------------------

/// One of a user's passkeys.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = passkeys)]
pub struct StoredPasskey {
    /// Row id.
    pub id: i32,
    /// The user.
    pub user_id: i32,
    /// The WebAuthn user handle.
    pub user_handle: String,
    /// The credential id, base64url.
    pub credential_id: String,
    /// The name the user gave it.
    pub name: String,
    /// The serialised passkey.
    pub passkey: String,
    /// When it was added.
    pub created_at: NaiveDateTime,
    /// When it last proved a login.
    pub last_used_at: Option<NaiveDateTime>,
}

impl StoredPasskey {
    /// The user's passkeys, oldest first.
    pub fn of_user(conn: &mut DbConnection, user_id: i32) -> QueryResult<Vec<StoredPasskey>> {
        passkeys::table
            .filter(passkeys::user_id.eq(user_id))
            .order(passkeys::id.asc())
            .select(StoredPasskey::as_select())
            .load(conn)
    }

    /// Whether the user has a passkey.
    pub fn exists_for(conn: &mut DbConnection, user_id: i32) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(passkeys::table.filter(passkeys::user_id.eq(user_id))))
            .get_result(conn)
    }

    /// Removes every passkey of the user; returns how many.
    pub fn remove_all(conn: &mut DbConnection, user_id: i32) -> QueryResult<usize> {
        diesel::delete(passkeys::table.filter(passkeys::user_id.eq(user_id))).execute(conn)
    }

    /// Removes the user's passkey `id`; false when the user has no such passkey.
    pub fn remove(conn: &mut DbConnection, user_id: i32, id: i32) -> QueryResult<bool> {
        diesel::delete(passkeys::table.filter(passkeys::id.eq(id)).filter(passkeys::user_id.eq(user_id)))
            .execute(conn)
            .map(|deleted| deleted == 1)
    }

    fn by_credential(conn: &mut DbConnection, credential_id: &[u8]) -> QueryResult<Option<StoredPasskey>> {
        passkeys::table
            .filter(passkeys::credential_id.eq(URL_SAFE_NO_PAD.encode(credential_id)))
            .select(StoredPasskey::as_select())
            .first(conn)
            .optional()
    }

    fn parsed(&self) -> Option<Passkey> {
        serde_json::from_str(&self.passkey).ok()
    }
}

// ---- registration ---------------------------------------------------------------------------

/// Begins adding a passkey to `user_id`'s account (`user_name`, the email, is what the
/// authenticator shows). Returns the ceremony's token and the options for the browser, which
/// ask for a discoverable credential (so it can sign in alone) and exclude the user's passkeys.
pub fn begin_registration(
    conn: &mut DbConnection,
    party: &RelyingParty,
    user_id: i32,
    user_name: &str,
    now: NaiveDateTime,
) -> Checked<(String, CreationChallengeResponse)> {
    let Some(webauthn) = party.webauthn() else { return Ok(Err(Refusal::Off)) };
    let existing = StoredPasskey::of_user(conn, user_id)?;
    let handle =
        existing.first().and_then(|p| Uuid::parse_str(&p.user_handle).ok()).unwrap_or_else(Uuid::new_v4);
    let exclude = existing.iter().filter_map(StoredPasskey::parsed).map(|p| p.cred_id().clone()).collect();
    let Ok((mut options, state)) =
        webauthn.start_passkey_registration(handle, user_name, user_name, Some(exclude))
    else {
        return Ok(Err(Refusal::Off));
    };
    // webauthn-rs asks for a server-side credential; signing in without an email needs one the
    // authenticator can discover.
    if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
        selection.resident_key = Some(ResidentKeyRequirement::Required);
        selection.require_resident_key = true;
    }
    let token =
        store_ceremony(conn, Purpose::Register, Some(user_id), &State::Registration { handle, state }, now)?;
    Ok(Ok((token, options)))
}

/// Finishes adding a passkey: the browser's `credential` answers the ceremony `token`, which
/// must be `user_id`'s. Returns the new passkey's row id.
pub fn finish_registration(
    conn: &mut DbConnection,
    party: &RelyingParty,
    user_id: i32,
    token: &str,
    name: &str,
    credential: &RegisterPublicKeyCredential,
    now: NaiveDateTime,
) -> Checked<i32> {
    let Some(webauthn) = party.webauthn() else { return Ok(Err(Refusal::Off)) };
    let Some((Some(owner), State::Registration { handle, state })) =
        take_ceremony(conn, token, Purpose::Register, now)?
    else {
        return Ok(Err(Refusal::Expired));
    };
    if owner != user_id {
        return Ok(Err(Refusal::Expired));
    }
    let Ok(passkey) = webauthn.finish_passkey_registration(credential, &state) else {
        return Ok(Err(Refusal::Unverified));
    };
    let credential_id = URL_SAFE_NO_PAD.encode(passkey.cred_id());
    if StoredPasskey::by_credential(conn, passkey.cred_id())?.is_some() {
        return Ok(Err(Refusal::Duplicate));
    }
    let serialised = serde_json::to_string(&passkey)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    let name = clean_name(name, now);
    diesel::insert_into(passkeys::table)
        .values((
            passkeys::user_id.eq(user_id),
            passkeys::user_handle.eq(handle.to_string()),
            passkeys::credential_id.eq(&credential_id),
            passkeys::name.eq(name),
            passkeys::passkey.eq(serialised),
            passkeys::created_at.eq(now),
        ))
        .execute(conn)?;
    passkeys::table
        .filter(passkeys::credential_id.eq(&credential_id))
        .select(passkeys::id)
        .first(conn)
        .map(Ok)
}

/// The name to store: the user's, trimmed to [`NAME_MAX`] characters, or one with the date.
fn clean_name(name: &str, now: NaiveDateTime) -> String {
    let name: String = name.trim().chars().filter(|c| !c.is_control()).take(NAME_MAX).collect();
    if name.is_empty() {
        format!("Passkey added {}", now.format("%Y-%m-%d"))
    } else {
        name
    }
}

// ---- authentication -------------------------------------------------------------------------

/// Begins an authentication: for `Some(user)`, with that user's passkeys (a second factor, a
/// re-authentication); for `None`, with whatever discoverable passkey the browser offers (a
/// sign-in, which conditional mediation can offer in the email field's autofill).
pub fn begin_authentication(
    conn: &mut DbConnection,
    party: &RelyingParty,
    purpose: Purpose,
    user_id: Option<i32>,
    now: NaiveDateTime,
) -> Checked<(String, RequestChallengeResponse)> {
    let Some(webauthn) = party.webauthn() else { return Ok(Err(Refusal::Off)) };
    let started = match user_id {
        Some(user_id) => {
            let keys: Vec<Passkey> =
                StoredPasskey::of_user(conn, user_id)?.iter().filter_map(StoredPasskey::parsed).collect();
            if keys.is_empty() {
                return Ok(Err(Refusal::NoPasskey));
            }
            webauthn.start_passkey_authentication(&keys).map(|(o, s)| (o, State::Authentication(s)))
        }
        None => webauthn.start_discoverable_authentication().map(|(o, s)| (o, State::Discoverable(s))),
    };
    let Ok((options, state)) = started else { return Ok(Err(Refusal::Off)) };
    let token = store_ceremony(conn, purpose, user_id, &state, now)?;
    Ok(Ok((token, options)))
}

/// Finishes an authentication of `purpose`: the browser's `credential` answers the ceremony
/// `token`. With `expected_user`, the ceremony and the passkey must be that user's. Returns
/// the user the passkey belongs to; its counter and last use are recorded.
pub fn finish_authentication(
    conn: &mut DbConnection,
    party: &RelyingParty,
    purpose: Purpose,
    token: &str,
    expected_user: Option<i32>,
    credential: &PublicKeyCredential,
    now: NaiveDateTime,
) -> Checked<i32> {
    let Some(webauthn) = party.webauthn() else { return Ok(Err(Refusal::Off)) };
    let Some((owner, state)) = take_ceremony(conn, token, purpose, now)? else {
        return Ok(Err(Refusal::Expired));
    };
    if expected_user.is_some() && owner != expected_user {
        return Ok(Err(Refusal::Expired));
    }
    let Some(stored) = StoredPasskey::by_credential(conn, credential.get_credential_id())? else {
        return Ok(Err(Refusal::Unknown));
    };
    if expected_user.is_some_and(|user| user != stored.user_id) {
        return Ok(Err(Refusal::Unknown));
    }
    let Some(mut passkey) = stored.parsed() else { return Ok(Err(Refusal::Unknown)) };
    let verified = match state {
        State::Authentication(state) => webauthn.finish_passkey_authentication(credential, &state),
        State::Discoverable(state) => {
            // The user handle the authenticator returns must be the account's.
            match webauthn.identify_discoverable_authentication(credential) {
                Ok((handle, _)) if handle.to_string() == stored.user_handle => {
                    webauthn.finish_discoverable_authentication_v2(credential, state, &passkey)
                }
                _ => return Ok(Err(Refusal::Unknown)),
            }
        }
        State::Registration { .. } => return Ok(Err(Refusal::Expired)),
    };
    let Ok(result) = verified else { return Ok(Err(Refusal::Unverified)) };
    // The counter and backup state move on; a passkey whose counter went back was refused above.
    let updated = passkey.update_credential(&result).unwrap_or(false);
    let serialised = if updated { serde_json::to_string(&passkey).ok() } else { None };
    diesel::update(passkeys::table.find(stored.id))
        .set((passkeys::last_used_at.eq(Some(now)), serialised.map(|s| passkeys::passkey.eq(s))))
        .execute(conn)?;
    Ok(Ok(stored.user_id))
}
