//! Passkey ceremonies, for `static/passkeys.js`: each purpose has an `options` endpoint, which
//! begins a ceremony on the server and answers the browser's WebAuthn options with a token
//! naming it, and an answer endpoint, which takes the token and the browser's credential. Both
//! are JSON with the CSRF token in a header; answers say where to go next (`redirect`), or what
//! went wrong (`error`).
//!
//! - Adding a passkey: `/account/security/passkeys/options`, `/account/security/passkeys`
//!   (fresh login required).
//! - Signing in with a passkey alone: `/login/passkey/options`, `/login/passkey`.
//! - The second step of a password login: `/login/mfa/passkey/options`, `/login/mfa/passkey`.
//! - Re-authentication: `/reauth/passkey/options`, `/reauth/passkey`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_flash_messages::FlashMessage;
use serde::{Deserialize, Serialize};

use latchkey_auth::audit::{Event, Record};
use latchkey_auth::csrf::CsrfHeader;
use latchkey_auth::guard;
use latchkey_auth::guard::limit_request;
use latchkey_auth::passkeys::{self, PublicKeyCredential, Purpose, Refusal, RegisterPublicKeyCredential};
use latchkey_auth::second_factor::{self, Answer};
use latchkey_auth::{next, Auth, FormPage, SecondFactorOutcome};

use crate::auth::{FreshLoginRequired, LoginRequired};
use crate::db;
use crate::error::AppError;
use crate::models::User;
use crate::routes::security::{keep_for_display, RECOVERY_CODES, SECURITY};
use crate::state::AppState;

pub fn config(cfg: &mut web::ServiceConfig) {
    // A WebAuthn answer is a few kilobytes; a malformed one is a 400 like any bad form.
    let json = web::JsonConfig::default()
        .limit(latchkey_auth::csrf::FORM_LIMIT)
        .error_handler(|_, _| AppError::BadRequest("The passkey's answer is malformed.").into());
    let resource = |path: &'static str| web::resource(path).app_data(json.clone());
    cfg.service(
        resource("/account/security/passkeys/options")
            .app_data(FormPage(SECURITY))
            .route(web::post().to(registration_options)),
    )
    .service(
        resource("/account/security/passkeys").app_data(FormPage(SECURITY)).route(web::post().to(register)),
    )
    .service(resource("/login/passkey/options").route(web::post().to(sign_in_options)))
    .service(resource("/login/passkey").route(web::post().to(sign_in)))
    .service(resource("/login/mfa/passkey/options").route(web::post().to(second_factor_options)))
    .service(resource("/login/mfa/passkey").route(web::post().to(second_factor)))
    .service(resource("/reauth/passkey/options").route(web::post().to(reauth_options)))
    .service(resource("/reauth/passkey").route(web::post().to(reauth)));
}

/// The options of a ceremony, with the token that names it on the server.
#[derive(Serialize)]
struct Options<T> {
    ceremony: String,
    options: T,
}

/// Where the browser goes next, or what went wrong.
#[derive(Serialize, Default)]
struct Outcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn go_to(location: &str) -> HttpResponse {
    json(StatusCode::OK, Outcome { redirect: Some(location.to_owned()), error: None })
}

fn json(status: StatusCode, body: impl Serialize) -> HttpResponse {
    HttpResponse::build(status).insert_header(("Cache-Control", "no-store")).json(body)
}

/// A refused ceremony: the status that fits, and the reason in words.
fn refused(refusal: Refusal) -> HttpResponse {
    let status = match refusal {
        Refusal::Off => StatusCode::NOT_FOUND,
        Refusal::Expired => StatusCode::BAD_REQUEST,
        Refusal::NoPasskey | Refusal::Duplicate => StatusCode::UNPROCESSABLE_ENTITY,
        Refusal::Unknown | Refusal::Unverified => StatusCode::UNAUTHORIZED,
    };
    json(status, Outcome { redirect: None, error: Some(refusal.to_string()) })
}

/// Begins an authentication of `purpose` (for `user`'s passkeys, or any discoverable one).
async fn authentication_options(
    req: &HttpRequest,
    state: &AppState,
    purpose: Purpose,
    user: Option<i32>,
) -> Result<HttpResponse, AppError> {
    // Each ceremony is a row on the server: bound how many one address may begin.
    limit_request(req, "passkey-ceremony", |policy| policy.second_factor).await?;
    let party = Auth::of(req)?.passkeys().clone();
    let now = chrono::Utc::now().naive_utc();
    let begun =
        db::run(&state.pool, move |conn| passkeys::begin_authentication(conn, &party, purpose, user, now))
            .await?;
    Ok(options(begun))
}

/// The answer to an `options` request: the ceremony's token and the browser's options.
fn options<T: Serialize>(begun: Result<(String, T), Refusal>) -> HttpResponse {
    match begun {
        Ok((ceremony, options)) => json(StatusCode::OK, Options { ceremony, options }),
        Err(refusal) => refused(refusal),
    }
}

// ---- adding a passkey -----------------------------------------------------------------------

async fn registration_options(
    _csrf: CsrfHeader,
    user: FreshLoginRequired,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let party = Auth::of(&req)?.passkeys().clone();
    let (user_id, email, now) = (user.id, user.email.clone(), chrono::Utc::now().naive_utc());
    let begun =
        db::run(&state.pool, move |conn| passkeys::begin_registration(conn, &party, user_id, &email, now))
            .await?;
    Ok(options(begun))
}

#[derive(Deserialize)]
struct Registration {
    ceremony: String,
    #[serde(default)]
    name: String,
    credential: RegisterPublicKeyCredential,
}

/// Stores the new passkey. The first factor of an account comes with recovery codes, shown
/// once.
async fn register(
    _csrf: CsrfHeader,
    user: FreshLoginRequired,
    req: HttpRequest,
    state: web::Data<AppState>,
    answer: web::Json<Registration>,
) -> Result<HttpResponse, AppError> {
    let auth = Auth::of(&req)?;
    let (party, keys) = (auth.passkeys().clone(), auth.factor_keys()?.clone());
    let (user_id, now) = (user.id, chrono::Utc::now().naive_utc());
    let codes = second_factor::new_recovery_codes();
    let stored = codes.clone();
    let Registration { ceremony, name, credential } = answer.into_inner();
    let added = db::run(&state.pool, move |conn| {
        let added = passkeys::finish_registration(conn, &party, user_id, &ceremony, &name, &credential, now)?;
        let new_codes = added.is_ok() && second_factor::recovery_codes_left(conn, user_id)? == 0;
        if new_codes {
            second_factor::replace_recovery_codes(conn, &keys, user_id, &stored)?;
        }
        Ok(added.map(|_| new_codes))
    })
    .await?;
    match added {
        Ok(new_codes) => {
            log::info!("user {user_id} added a passkey");
            guard::record(&req, Record::of(&req, Event::AuthnMfaEnabled).user(user_id).detail("passkey"))
                .await;
            state
                .mailer
                .announce(&state.pool, &state.tera, &req, &user.email, ("A passkey was added", None))
                .await;
            if new_codes {
                keep_for_display(&req, &codes)?;
                FlashMessage::success("Your passkey is added. Keep these recovery codes somewhere safe.")
                    .send();
                return Ok(go_to(RECOVERY_CODES));
            }
            FlashMessage::success("Your passkey is added.").send();
            Ok(go_to(SECURITY))
        }
        Err(refusal) => {
            log::info!("user {user_id}: a passkey was not added ({refusal:?})");
            Ok(refused(refusal))
        }
    }
}

// ---- signing in with a passkey alone --------------------------------------------------------

async fn sign_in_options(
    _csrf: CsrfHeader,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    authentication_options(&req, &state, Purpose::SignIn, None).await
}

#[derive(Deserialize)]
struct SignIn {
    ceremony: String,
    credential: PublicKeyCredential,
    #[serde(default)]
    remember: bool,
    #[serde(default)]
    next: String,
}

async fn sign_in(
    _csrf: CsrfHeader,
    req: HttpRequest,
    answer: web::Json<SignIn>,
) -> Result<HttpResponse, AppError> {
    let SignIn { ceremony, credential, remember, next } = answer.into_inner();
    match latchkey_auth::sign_in_with_passkey::<User>(&req, ceremony, credential, remember).await? {
        Ok(user_id) => {
            log::info!("user {user_id} logged in with a passkey");
            FlashMessage::success("You are logged in.").send();
            Ok(go_to(next::target(&next)))
        }
        Err(refusal) => {
            log::info!("a passkey sign-in was refused ({refusal:?})");
            Ok(refused(refusal))
        }
    }
}

// ---- the second step of a password login ----------------------------------------------------

async fn second_factor_options(
    _csrf: CsrfHeader,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let Some(pending) = latchkey_auth::pending_login(&req).await? else {
        return Ok(json(
            StatusCode::BAD_REQUEST,
            Outcome { redirect: Some("/login".into()), error: Some("Log in again.".into()) },
        ));
    };
    authentication_options(&req, &state, Purpose::SecondFactor, Some(pending.user_id)).await
}

#[derive(Deserialize)]
struct FactorAnswer {
    ceremony: String,
    credential: PublicKeyCredential,
    #[serde(default)]
    next: String,
}

impl FactorAnswer {
    fn into_answer(self) -> (Answer, String) {
        (Answer::Passkey { ceremony: self.ceremony, credential: Box::new(self.credential) }, self.next)
    }
}

/// A passkey answers like a code: right logs in, wrong counts toward the pending login's limit.
async fn second_factor(
    _csrf: CsrfHeader,
    req: HttpRequest,
    answer: web::Json<FactorAnswer>,
) -> Result<HttpResponse, AppError> {
    limit_request(&req, "second-factor", |policy| policy.second_factor).await?;
    let (answer, _) = answer.into_inner().into_answer();
    Ok(match latchkey_auth::complete_second_factor::<User>(&req, answer).await? {
        SecondFactorOutcome::LoggedIn { next } => {
            log::info!("a login completed with a passkey as its second factor");
            FlashMessage::success("You are logged in.").send();
            go_to(next::target(&next))
        }
        SecondFactorOutcome::Wrong { attempts_left } => json(
            StatusCode::UNAUTHORIZED,
            Outcome {
                redirect: None,
                error: Some(format!("That passkey was not accepted. {attempts_left} more tries allowed.")),
            },
        ),
        SecondFactorOutcome::StartOver { .. } => {
            FlashMessage::warning("Log in again.").send();
            go_to("/login")
        }
    })
}

// ---- re-authentication ----------------------------------------------------------------------

async fn reauth_options(
    _csrf: CsrfHeader,
    user: LoginRequired,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    authentication_options(&req, &state, Purpose::Reauth, Some(user.id)).await
}

/// A passkey alone proves identity again: it is something held, unlocked by a PIN or biometric.
async fn reauth(
    _csrf: CsrfHeader,
    user: LoginRequired,
    req: HttpRequest,
    answer: web::Json<FactorAnswer>,
) -> Result<HttpResponse, AppError> {
    let auth = Auth::of(&req)?;
    limit_request(&req, "reauth", |policy| policy.reauth).await?;
    guard::enforce(&req, auth.throttle().check_account(user.id).await?, "reauth", Some(user.id)).await?;
    let (answer, next) = answer.into_inner().into_answer();
    if latchkey_auth::verify_second_factor(&req, user.id, answer).await?.is_none() {
        log::info!("user {}: failed re-authentication with a passkey", user.id);
        guard::proof_failed(&req, user.id, Event::AuthnReauthFail, "passkey").await?;
        return Ok(refused(Refusal::Unverified));
    }
    latchkey_auth::reauthenticate(&req, &user, true).await?;
    log::info!("user {} re-authenticated with a passkey", user.id);
    FlashMessage::success("Thank you: you can go on.").send();
    Ok(go_to(next::target(&next)))
}
