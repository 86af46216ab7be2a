//! Starting and ending logins: the `logins` row and the session together.

use actix_identity::{Identity, IdentityExt};
use actix_web::{HttpMessage, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use latchkey_sessions::{keys, ServedInGrace, SessionKey, TypedSession};
use rand::RngCore;

use crate::audit::{Event, Record};
use crate::client::ClientInfo;
use crate::csrf;
use crate::current::{forget, CurrentUser, LoginRequired};
use crate::error::AuthError;
use crate::passkeys::{self, PublicKeyCredential, Purpose, Refusal};
use crate::registry::{token_id, Login, NewLogin};
use crate::second_factor::{self, Answer, PendingLogin};
use crate::state::Auth;
use crate::user::AuthUser;

/// Logs `user` in on this browser (Flask-Login's `login_user`): ends the login the browser
/// had, records a new row (with the application's [`crate::LoginHook`] in the same
/// transaction), stores the login's token through `Identity::login` (which renews the session
/// id: session-fixation defence) and renews the CSRF secret. `remember` picks a persistent
/// cookie and the longer lifetime.
///
/// Pass the user as it was read *before* its password was checked: the login is valid only
/// for the credentials of that moment, so a password change that lands while bcrypt runs
/// ends it.
pub async fn log_in<U: AuthUser>(req: &HttpRequest, user: &U, remember: bool) -> Result<(), AuthError> {
    start_login(req, user, remember, Proof::Password).await
}

/// Replaces the logged-in user's login with a new one, as [`log_in`] does, after a change that
/// ended their logins (a new password): audited as `session_renewed`, not as a sign-in.
pub async fn renew_login<U: AuthUser>(req: &HttpRequest, user: &U, remember: bool) -> Result<(), AuthError> {
    start_login(req, user, remember, Proof::Renewal).await
}

/// How a login was proved, as its audit record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    Password,
    PasswordAndSecondFactor,
    Passkey,
    /// The user was logged in and just proved their password again to change it.
    Renewal,
}

impl Proof {
    fn second_factor(self) -> bool {
        matches!(self, Self::PasswordAndSecondFactor | Self::Passkey)
    }

    /// The audit records of a login begun with this proof.
    fn records(self, req: &HttpRequest, user_id: i32, remember: bool) -> Vec<Record> {
        let how = match self {
            Self::Password => "password",
            Self::PasswordAndSecondFactor => "password and second factor",
            Self::Passkey => "passkey",
            Self::Renewal => {
                return vec![Record::of(req, Event::SessionRenewed).user(user_id).detail("new credentials")];
            }
        };
        let lifetime = if remember { "remembered" } else { "until the browser closes" };
        vec![
            Record::of(req, Event::AuthnLoginSuccess).user(user_id).detail(how),
            Record::of(req, Event::SessionCreated).user(user_id).detail(lifetime),
        ]
    }
}

/// [`log_in`], recording how identity was proved.
async fn start_login<U: AuthUser>(
    req: &HttpRequest,
    user: &U,
    remember: bool,
    proof: Proof,
) -> Result<(), AuthError> {
    if !user.is_active() {
        return Err(AuthError::Inactive);
    }
    end_current(req, false).await?;
    let second_factor = proof.second_factor();
    let auth = Auth::of(req)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let id = token_id(&token);
    let client = ClientInfo::of(req, &auth.policy.trusted_proxies);
    let now = chrono::Utc::now().naive_utc();
    let (user_id, credential_epoch) = (user.id(), user.credential_epoch());
    let hook_work = auth.hook.as_ref().map(|hook| hook.prepare(req));
    let records = proof.records(req, user_id, remember);
    latchkey_db::run(&auth.pool, move |conn| {
        latchkey_db::write_transaction(conn, |conn| {
            for record in records {
                record.insert(conn)?;
            }
            NewLogin {
                id: &id,
                user_id,
                created_at: now,
                last_seen_at: now,
                ip: client.ip.as_deref(),
                user_agent: client.user_agent.as_deref(),
                remember,
                credential_epoch,
                rotated_at: now,
                proved_at: now,
                second_factor,
            }
            .insert(conn)?;
            match hook_work {
                Some(work) => work(conn, user_id),
                None => Ok(()),
            }
        })
    })
    .await?;
    if let Some(hook) = &auth.hook {
        hook.committed(req);
    }
    Identity::login(&req.extensions(), token).map_err(AuthError::internal)?;
    let session = TypedSession::of(req);
    let unix_now = now.and_utc().timestamp();
    // "Remember me" not chosen and the first generation are the defaults, kept by leaving the
    // keys out: the cookie store's cookie carries every byte of the state on every request.
    if remember {
        session.insert(keys::REMEMBER, &true).map_err(AuthError::internal)?;
    } else {
        session.remove(keys::REMEMBER);
    }
    session.remove(keys::LOGIN_GENERATION);
    session.insert(keys::TOUCHED, &unix_now).map_err(AuthError::internal)?;
    // When the session id last rotated (now) matters only where it rotates; where it cannot
    // (the cookie store), the login's generation rotates instead and the key is left out.
    if auth.policy.generation_rotation.is_none() {
        session.insert(keys::ROTATED, &unix_now).map_err(AuthError::internal)?;
    } else {
        session.remove(keys::ROTATED);
    }
    session.remove(PENDING_LOGIN);
    CurrentUser::<U>::forget_cached(req);
    // A new login's cookie must reach the browser, even from a session served in grace.
    req.extensions_mut().remove::<ServedInGrace>();
    csrf::renew(req)
}

/// Records that the logged-in user just proved their identity again (the password, at the
/// re-authentication page): the login is fresh for another `reauth_window`, session
/// protection compares later requests with this client, and the session id is renewed, as at
/// login, so an id observed before the proof is worth less after it.
///
/// Check the proof before calling this; a failed proof must change nothing. `with_factor`
/// says whether the proof included a second factor.
pub async fn reauthenticate<U: AuthUser>(
    req: &HttpRequest,
    current: &LoginRequired<U>,
    with_factor: bool,
) -> Result<(), AuthError> {
    let auth = Auth::of(req)?;
    let id = current.login().id.clone();
    let now = chrono::Utc::now().naive_utc();
    let client = ClientInfo::of(req, &auth.policy.trusted_proxies);
    let detail = if with_factor { "password and second factor" } else { "password" };
    let records = [
        Record::of(req, Event::AuthnReauthSuccess).user(current.id()).detail(detail),
        Record::of(req, Event::SessionRenewed).user(current.id()),
    ];
    latchkey_db::run(&auth.pool, {
        let id = id.clone();
        move |conn| {
            latchkey_db::write_transaction(conn, |conn| {
                Login::record_proof(conn, &id, now, &client, with_factor)?;
                records.into_iter().try_for_each(|record| record.insert(conn))
            })
        }
    })
    .await?;
    auth.logins.forget_login(&id).await;
    auth.throttle.login_succeeded(current.id(), None).await?;
    TypedSession::of(req).renew();
    CurrentUser::<U>::forget_cached(req);
    // The renewed cookie must reach the browser, even from a session served in grace.
    req.extensions_mut().remove::<ServedInGrace>();
    Ok(())
}

/// Logs this browser out (Flask-Login's `logout_user`): deletes its login row (so a copied
/// cookie is dead too), purges the session and renews the CSRF secret.
pub async fn log_out<U: AuthUser>(req: &HttpRequest) -> Result<(), AuthError> {
    end_current(req, true).await?;
    forget(req);
    TypedSession::of(req).purge();
    CurrentUser::<U>::remember(req, CurrentUser::Anonymous);
    req.extensions_mut().remove::<ServedInGrace>();
    csrf::renew(req)
}

/// Ends every other login of the current user, including any whose password check is still
/// running: the user's credential epoch moves on and only this login follows it. Returns how
/// many rows ended.
pub async fn end_other_logins<U: AuthUser>(
    req: &HttpRequest,
    current: &LoginRequired<U>,
) -> Result<usize, AuthError> {
    let auth = Auth::of(req)?;
    let (user_id, keep) = (current.id(), current.login().id.clone());
    let record = Record::of(req, Event::SessionRevoked).user(user_id);
    let ended = latchkey_db::run(&auth.pool, move |conn| {
        latchkey_db::write_transaction(conn, |conn| {
            let epoch = U::advance_credential_epoch(conn, user_id)?;
            Login::set_credential_epoch(conn, &keep, epoch)?;
            let ended = Login::delete_others(conn, user_id, &keep)?;
            record.detail(format!("every other login ({ended})")).insert(conn)?;
            Ok(ended)
        })
    })
    .await?;
    auth.logins.forget_user(user_id).await;
    CurrentUser::<U>::forget_cached(req);
    Ok(ended)
}

/// Deletes the login row this browser's session names, if any; `logout` records it as a
/// logout (rather than a login replaced by the next).
async fn end_current(req: &HttpRequest, logout: bool) -> Result<(), AuthError> {
    let Some(token) = req.get_identity().ok().and_then(|identity| identity.id().ok()) else {
        return Ok(());
    };
    let auth = Auth::of(req)?;
    let id = token_id(&token);
    let record = logout.then(|| Record::of(req, Event::SessionLogout));
    latchkey_db::run(&auth.pool, {
        let id = id.clone();
        move |conn| {
            let ended = Login::find(conn, &id)?;
            Login::delete(conn, &id)?;
            match (ended, record) {
                (Some(login), Some(record)) => record.user(login.user_id).insert(conn),
                _ => Ok(()),
            }
        }
    })
    .await?;
    auth.logins.forget_login(&id).await;
    Ok(())
}

// ---- the second step of a login with a second factor ----------------------------------------

/// The session key of this browser's pending login token.
const PENDING_LOGIN: SessionKey<String> = SessionKey::new("latchkey.pending_login");

/// Whether `user` has an active second factor (the authenticator app or a passkey), which a
/// password login must add.
pub async fn has_second_factor<U: AuthUser>(req: &HttpRequest, user: &U) -> Result<bool, AuthError> {
    let auth = Auth::of(req)?;
    let user_id = user.id();
    Ok(latchkey_db::run(&auth.pool, move |conn| second_factor::has_any(conn, user_id)).await?)
}

/// After the right password of a user with a second factor: records a pending login for this
/// browser (on the server, with its count of wrong codes) instead of logging in. The browser
/// is not logged in until [`complete_second_factor`] accepts a code, within
/// [`second_factor::PENDING_LIFETIME`]. Pass the user as read before the password was checked.
pub async fn begin_second_factor<U: AuthUser>(
    req: &HttpRequest,
    user: &U,
    remember: bool,
    next: &str,
) -> Result<(), AuthError> {
    if !user.is_active() {
        return Err(AuthError::Inactive);
    }
    let auth = Auth::of(req)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let id = token_id(&token);
    let (user_id, epoch, next) = (user.id(), user.credential_epoch(), next.to_owned());
    let now = chrono::Utc::now().naive_utc();
    latchkey_db::run(&auth.pool, move |conn| {
        PendingLogin::insert(conn, &id, user_id, now, remember, &next, epoch)
    })
    .await?;
    TypedSession::of(req).insert(PENDING_LOGIN, &token).map_err(AuthError::internal)
}

/// This browser's pending login, while it lives.
pub async fn pending_login(req: &HttpRequest) -> Result<Option<PendingLogin>, AuthError> {
    let Some(token) = TypedSession::of(req).get(PENDING_LOGIN) else { return Ok(None) };
    let auth = Auth::of(req)?;
    let (id, now) = (token_id(&token), chrono::Utc::now().naive_utc());
    let pending = latchkey_db::run(&auth.pool, move |conn| PendingLogin::find_live(conn, &id, now)).await?;
    if pending.is_none() {
        TypedSession::of(req).remove(PENDING_LOGIN);
    }
    Ok(pending)
}

/// What a second-factor code did to a pending login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactorOutcome {
    /// The code was right: the browser is logged in; go to `next` (unchecked: pass it through
    /// [`crate::next::target`]).
    LoggedIn {
        /// Where the login form said to go.
        next: String,
    },
    /// The code was wrong; this many more may be tried.
    Wrong {
        /// Wrong codes still allowed before the pending login ends.
        attempts_left: i32,
    },
    /// There is no pending login (none, expired, or its credentials changed), or this code was
    /// the last wrong one allowed: log in again.
    StartOver {
        /// Whether it ended because of too many wrong codes.
        too_many_attempts: bool,
    },
}

/// Checks `answer` (a TOTP code, a recovery code, or a passkey answering a ceremony of
/// [`Purpose::SecondFactor`]) for this browser's pending login. Only a right answer creates the
/// login (with remember-me as chosen at the password step), which renews the session id; a
/// wrong one counts toward the pending login's limit, whatever its kind.
pub async fn complete_second_factor<U: AuthUser>(
    req: &HttpRequest,
    answer: Answer,
) -> Result<SecondFactorOutcome, AuthError> {
    let start_over = |too_many_attempts| {
        TypedSession::of(req).remove(PENDING_LOGIN);
        Ok(SecondFactorOutcome::StartOver { too_many_attempts })
    };
    let Some(pending) = pending_login(req).await? else { return start_over(false) };
    let auth = Auth::of(req)?;
    let user_id = pending.user_id;
    let keys = auth.factor_keys()?.clone();
    let party = auth.passkeys.clone();
    let now = chrono::Utc::now().naive_utc();
    let id = pending.id.clone();
    let kind = answer.kind();
    let checked = latchkey_db::run(&auth.pool, move |conn| {
        let user =
            U::load(conn, pending.user_id)?.filter(|u| u.credential_epoch() == pending.credential_epoch);
        let Some(user) = user else {
            PendingLogin::delete(conn, &pending.id)?;
            return Ok(Err(None));
        };
        let proof =
            second_factor::verify(conn, &keys, &party, pending.user_id, &answer, Purpose::SecondFactor, now)?;
        if proof.is_some() {
            PendingLogin::delete(conn, &pending.id)?;
            return Ok(Ok((user, pending)));
        }
        let attempts = PendingLogin::record_failure(conn, &pending.id)?;
        if attempts >= second_factor::MAX_ATTEMPTS {
            PendingLogin::delete(conn, &pending.id)?;
        }
        // Wrong: how many more may be tried (none: it has ended).
        Ok(Err(Some((second_factor::MAX_ATTEMPTS - attempts).max(0))))
    })
    .await?;
    match checked {
        Ok((user, pending)) => {
            start_login(req, &user, pending.remember, Proof::PasswordAndSecondFactor).await?;
            // Only now is the login complete: the account's failures start again from zero.
            auth.throttle.login_succeeded(user.id(), None).await?;
            Ok(SecondFactorOutcome::LoggedIn { next: pending.next })
        }
        Err(Some(attempts_left)) => {
            log::info!("a wrong second-factor code for pending login {}", id.get(..8).unwrap_or_default());
            crate::guard::proof_failed(req, user_id, Event::AuthnMfaFail, kind).await?;
            if attempts_left == 0 {
                return start_over(true);
            }
            Ok(SecondFactorOutcome::Wrong { attempts_left })
        }
        Err(None) => start_over(false),
    }
}

/// Checks `answer` against the logged-in user's second factor: a TOTP code of an unused step,
/// an unused recovery code (which this uses up), or a passkey answering a ceremony of
/// [`Purpose::Reauth`] begun for this user.
pub async fn verify_second_factor(
    req: &HttpRequest,
    user_id: i32,
    answer: Answer,
) -> Result<Option<second_factor::Proof>, AuthError> {
    let auth = Auth::of(req)?;
    let keys = auth.factor_keys()?.clone();
    let party = auth.passkeys.clone();
    let now = chrono::Utc::now().naive_utc();
    Ok(latchkey_db::run(&auth.pool, move |conn| {
        second_factor::verify(conn, &keys, &party, user_id, &answer, Purpose::Reauth, now)
    })
    .await?)
}

// ---- signing in with a passkey alone --------------------------------------------------------

/// Signs this browser in with a passkey alone: `credential` answers the ceremony of
/// [`Purpose::SignIn`] that `ceremony` names, and the account is the passkey's. A passkey
/// needs its user's verification (PIN or biometric), so the login counts as two factors. A
/// refusal changes nothing.
pub async fn sign_in_with_passkey<U: AuthUser>(
    req: &HttpRequest,
    ceremony: String,
    credential: PublicKeyCredential,
    remember: bool,
) -> Result<Result<i32, Refusal>, AuthError> {
    let auth = Auth::of(req)?;
    let party = auth.passkeys.clone();
    let now = chrono::Utc::now().naive_utc();
    let found = latchkey_db::run(&auth.pool, move |conn| {
        let user_id = match passkeys::finish_authentication(
            conn,
            &party,
            Purpose::SignIn,
            &ceremony,
            None,
            &credential,
            now,
        )? {
            Ok(user_id) => user_id,
            Err(refusal) => return Ok(Err(refusal)),
        };
        Ok(U::load(conn, user_id)?.ok_or(Refusal::Unknown))
    })
    .await?;
    match found {
        Ok(user) => {
            // This also ends a password login still waiting for its second factor.
            start_login(req, &user, remember, Proof::Passkey).await?;
            // A passkey unlocks an account whose password login failures locked it.
            auth.throttle.login_succeeded(user.id(), None).await?;
            Ok(Ok(user.id()))
        }
        Err(refusal) => {
            let record = Record::of(req, Event::AuthnLoginFail).detail(format!("passkey refused: {refusal}"));
            crate::guard::record(req, record).await;
            Ok(Err(refusal))
        }
    }
}
