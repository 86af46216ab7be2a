//! Second factors: `/account/security` lists them; setting up or removing the authenticator
//! app or a passkey and regenerating recovery codes need a fresh login. (Adding a passkey is
//! a WebAuthn ceremony: see `routes::passkeys`.)

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_flash_messages::FlashMessage;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use tera::Context;

use latchkey_auth::audit::{Event, Record};
use latchkey_auth::csrf::{CsrfForm, NoFields};
use latchkey_auth::guard;
use latchkey_auth::passkeys::StoredPasskey;
use latchkey_auth::second_factor::{self, Answer, TotpFactor};
use latchkey_auth::{Auth, FormPage};
use latchkey_sessions::{SessionKey, TypedSession};

use crate::auth::{FreshLoginRequired, LoginRequired};
use crate::db;
use crate::error::AppError;
use crate::http;
use crate::pages::{see_other, Page};
use crate::state::AppState;

pub fn config(cfg: &mut web::ServiceConfig) {
    let from = |path: &'static str| web::resource(path).app_data(FormPage(SECURITY));
    cfg.route(SECURITY, http::get().to(security))
        .service(from("/account/security/totp").route(web::post().to(begin_totp)))
        .service(from("/account/security/totp/confirm").route(web::post().to(confirm_totp)))
        .service(from("/account/security/totp/disable").route(web::post().to(disable_totp)))
        .service(from("/account/security/passkeys/{id}/delete").route(web::post().to(remove_passkey)))
        .service(
            from(RECOVERY_CODES)
                .route(http::get().to(show_recovery_codes))
                .route(web::post().to(regenerate_recovery_codes)),
        );
}

pub const SECURITY: &str = "/account/security";
pub const RECOVERY_CODES: &str = "/account/security/recovery-codes";
/// The name authenticator apps show beside the account.
const ISSUER: &str = "latchkey";

/// Recovery codes just made, kept in the session until their page shows them once.
const NEW_RECOVERY_CODES: SessionKey<Vec<String>> = SessionKey::new("latchkey.new_recovery_codes");

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

/// A passkey as the security page lists it.
#[derive(serde::Serialize)]
struct PasskeyRow {
    id: i32,
    name: String,
    created_at: String,
    last_used_at: Option<String>,
}

impl From<StoredPasskey> for PasskeyRow {
    fn from(passkey: StoredPasskey) -> Self {
        let when = |at: chrono::NaiveDateTime| at.format("%Y-%m-%d %H:%M UTC").to_string();
        Self {
            id: passkey.id,
            name: passkey.name,
            created_at: when(passkey.created_at),
            last_used_at: passkey.last_used_at.map(when),
        }
    }
}

/// The factors: whether the authenticator app is on, the passkeys (or why passkeys are off),
/// and how many recovery codes are left.
async fn security(
    user: LoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let user_id = user.id;
    let (enabled, passkeys, left) = db::run(&state.pool, move |conn| {
        Ok((
            TotpFactor::is_enabled(conn, user_id)?,
            StoredPasskey::of_user(conn, user_id)?,
            second_factor::recovery_codes_left(conn, user_id)?,
        ))
    })
    .await?;
    let mut context = Context::new();
    context.insert("totp_enabled", &enabled);
    context.insert("has_factor", &(enabled || !passkeys.is_empty()));
    context.insert("passkeys", &passkeys.into_iter().map(PasskeyRow::from).collect::<Vec<_>>());
    context.insert("passkeys_off", &Auth::of(page.request())?.passkeys().off_reason());
    context.insert("recovery_codes_left", &left);
    page.render("account_security.html", context)
}

/// Starts setting up the authenticator app: a new secret, shown as a QR code, in base32 and as
/// its `otpauth://` URI. It guards nothing until a code confirms it.
async fn begin_totp(
    _form: CsrfForm<NoFields>,
    user: FreshLoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let keys = Auth::of(page.request())?.factor_keys()?;
    let secret = second_factor::new_totp_secret();
    let sealed = keys.sealer.seal(&secret);
    let (user_id, now) = (user.id, chrono::Utc::now().naive_utc());
    let begun = db::run(&state.pool, move |conn| TotpFactor::begin(conn, user_id, &sealed, now)).await?;
    if !begun {
        FlashMessage::info("The authenticator app is already set up. Remove it first to set up another.")
            .send();
        return Ok(see_other(SECURITY));
    }
    totp_page(&page, StatusCode::OK, &secret, &user.email, None)
}

/// The set-up page for `secret`.
fn totp_page(
    page: &Page,
    status: StatusCode,
    secret: &[u8],
    email: &str,
    error: Option<&str>,
) -> Result<HttpResponse, AppError> {
    let uri = second_factor::otpauth_uri(secret, ISSUER, email);
    let mut context = Context::new();
    context.insert("secret", &second_factor::base32(secret));
    context.insert("otpauth_uri", &uri);
    context.insert("qr_code", &qr_code_data_uri(&uri)?);
    context.insert("error", &error);
    page.render_with_status(status, "account_totp.html", context)
}

/// The QR code of `text` as an SVG image in a `data:` URI, drawn here: no outside service
/// sees the secret. (An image rather than inline markup: templates stay the only HTML.)
fn qr_code_data_uri(text: &str) -> Result<String, AppError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| AppError::internal(anyhow::anyhow!("QR code: {e}")))?;
    let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).build();
    Ok(format!("data:image/svg+xml;base64,{}", STANDARD.encode(svg)))
}

/// Confirms set-up with one valid code; the recovery codes are made then and shown once.
async fn confirm_totp(
    CsrfForm(form): CsrfForm<CodeForm>,
    user: FreshLoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let keys = Auth::of(page.request())?.factor_keys()?.clone();
    let user_id = user.id;
    let unix = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let codes = second_factor::new_recovery_codes();
    let stored = codes.clone();
    let outcome = db::run(&state.pool, move |conn| {
        if second_factor::confirm_totp(conn, &keys, user_id, &form.code, unix)? {
            second_factor::replace_recovery_codes(conn, &keys, user_id, &stored)?;
            return Ok(Ok(()));
        }
        // Wrong: the set-up page again, with the same secret.
        let factor = TotpFactor::find(conn, user_id)?.filter(|f| !f.confirmed);
        Ok(Err(match factor {
            Some(factor) => factor.open_secret(conn, &keys)?,
            None => None,
        }))
    })
    .await?;
    match outcome {
        Ok(()) => {
            log::info!("user {user_id} turned on the authenticator app");
            let record = Record::of(page.request(), Event::AuthnMfaEnabled).user(user_id);
            guard::record(page.request(), record.detail("authenticator app")).await;
            let what = "An authenticator app was added as a second factor";
            state.mailer.announce(&state.pool, &state.tera, page.request(), &user.email, (what, None)).await;
            keep_for_display(page.request(), &codes)?;
            FlashMessage::success("The authenticator app is on. Keep these recovery codes somewhere safe.")
                .send();
            Ok(see_other(RECOVERY_CODES))
        }
        Err(Some(secret)) => totp_page(
            &page,
            StatusCode::UNPROCESSABLE_ENTITY,
            &secret,
            &user.email,
            Some("That code is not right. Check the time on your phone and try the next code."),
        ),
        Err(None) => {
            FlashMessage::info("Start setting up the authenticator app again.").send();
            Ok(see_other(SECURITY))
        }
    }
}

/// Turns the authenticator app off, with its recovery codes, after one valid code.
async fn disable_totp(
    CsrfForm(form): CsrfForm<CodeForm>,
    user: FreshLoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let answer = Answer::Code(form.code);
    if latchkey_auth::verify_second_factor(page.request(), user.id, answer).await?.is_none() {
        guard::proof_failed(page.request(), user.id, Event::AuthnMfaFail, "code").await?;
        FlashMessage::error("That code is not right: the authenticator app is still on.").send();
        return Ok(see_other(SECURITY));
    }
    let user_id = user.id;
    db::run(&state.pool, move |conn| TotpFactor::remove(conn, user_id)).await?;
    log::info!("user {user_id} turned off the authenticator app");
    let record = Record::of(page.request(), Event::AuthnMfaDisabled).user(user_id);
    guard::record(page.request(), record.detail("authenticator app")).await;
    let what = "The authenticator app was removed from your second factors";
    state.mailer.announce(&state.pool, &state.tera, page.request(), &user.email, (what, None)).await;
    FlashMessage::success("The authenticator app is off, and the recovery codes with it.").send();
    Ok(see_other(SECURITY))
}

/// A new set of recovery codes; the old set stops working.
async fn regenerate_recovery_codes(
    _form: CsrfForm<NoFields>,
    user: FreshLoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let keys = Auth::of(page.request())?.factor_keys()?.clone();
    let user_id = user.id;
    let codes = second_factor::new_recovery_codes();
    let stored = codes.clone();
    let replaced = db::run(&state.pool, move |conn| {
        if !second_factor::has_any(conn, user_id)? {
            return Ok(false);
        }
        second_factor::replace_recovery_codes(conn, &keys, user_id, &stored).map(|()| true)
    })
    .await?;
    if !replaced {
        FlashMessage::info("Set up the authenticator app or a passkey first.").send();
        return Ok(see_other(SECURITY));
    }
    log::info!("user {user_id} made new recovery codes");
    guard::record(page.request(), Record::of(page.request(), Event::AuthnRecoveryCodesRenewed).user(user_id))
        .await;
    let what = "New recovery codes were made; the old ones no longer work";
    state.mailer.announce(&state.pool, &state.tera, page.request(), &user.email, (what, None)).await;
    keep_for_display(page.request(), &codes)?;
    Ok(see_other(RECOVERY_CODES))
}

/// Keeps recovery codes just made for their page, which shows them once.
pub fn keep_for_display(req: &HttpRequest, codes: &[String]) -> Result<(), AppError> {
    TypedSession::of(req).insert(NEW_RECOVERY_CODES, &codes.to_vec()).map_err(AppError::internal)
}

/// Removes one of the user's passkeys (and the recovery codes, when it was the last factor).
async fn remove_passkey(
    _form: CsrfForm<NoFields>,
    user: FreshLoginRequired,
    path: web::Path<i32>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (user_id, id) = (user.id, path.into_inner());
    if !db::run(&state.pool, move |conn| second_factor::remove_passkey(conn, user_id, id)).await? {
        return Err(AppError::NotFound);
    }
    log::info!("user {user_id} removed a passkey");
    guard::record(&req, Record::of(&req, Event::AuthnMfaDisabled).user(user_id).detail("passkey")).await;
    state.mailer.announce(&state.pool, &state.tera, &req, &user.email, ("A passkey was removed", None)).await;
    FlashMessage::success("The passkey is removed.").send();
    Ok(see_other(SECURITY))
}

/// Shows recovery codes just made, once (and as a text file to download).
async fn show_recovery_codes(_user: LoginRequired, page: Page) -> Result<HttpResponse, AppError> {
    let session = TypedSession::of(page.request());
    let Some(codes) = session.get(NEW_RECOVERY_CODES) else {
        FlashMessage::info("Recovery codes are shown only once. Make new ones if you need them.").send();
        return Ok(see_other(SECURITY));
    };
    session.remove(NEW_RECOVERY_CODES);
    let text = format!("latchkey recovery codes (each works once)\n\n{}\n", codes.join("\n"));
    let mut context = Context::new();
    context.insert("codes", &codes);
    context.insert("download", &format!("data:text/plain;charset=utf-8;base64,{}", STANDARD.encode(text)));
    page.render("account_recovery_codes.html", context)
}
