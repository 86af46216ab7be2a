//! Forgotten passwords: a link by email (`/password/forgot`), and the page it opens
//! (`/password/reset/{token}`), which sets a new password, ends every login of the account
//! and lifts a failure lock, without logging anyone in. The token never leaves the link:
//! `http::SecurityHeaders` sends `Referrer-Policy: no-referrer` and `no-store` on its pages,
//! and the access log redacts it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_flash_messages::FlashMessage;
use chrono::{NaiveDateTime, Utc};
use serde::Deserialize;
use tera::Context;

use latchkey_auth::audit::{Event, Record};
use latchkey_auth::csrf::CsrfForm;
use latchkey_auth::guard::limit_request;
use latchkey_auth::password::Password;
use latchkey_auth::registry::Login;
use latchkey_auth::throttle::Verdict;
use latchkey_auth::Auth;
use latchkey_db::DbConnection;

use crate::db;
use crate::error::{wait_in_words, AppError};
use crate::http;
use crate::mail::{LinkLetter, Mailer};
use crate::models::{PasswordReset, User};
use crate::pages::{see_other, Page};
use crate::routes::auth::{check_new_password, email_problem, normalise_email, FieldErrors};
use crate::state::AppState;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/password/forgot", http::get().to(forgot_form))
        .route("/password/forgot", web::post().to(forgot))
        .route("/password/reset/{token}", http::get().to(reset_form))
        .route("/password/reset/{token}", web::post().to(reset));
}

/// How long a link works, in words.
fn valid_for(state: &AppState) -> String {
    wait_in_words(state.settings.mail.reset_ttl.as_secs())
}

/// Tells the owner of `user_id` by email that failures just locked password login for their
/// account, and how to get back in (a reset; `Auth::with_lock_hook`). The mail is posted
/// in a task of its own, after the answer.
pub fn tell_owner_of_lock(req: &HttpRequest, user_id: i32) {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else { return };
    let req = req.clone();
    actix_web::rt::spawn(async move {
        let user = match db::run(&state.pool, move |conn| User::find(conn, user_id)).await {
            Ok(Some(user)) => user,
            Ok(None) => return,
            Err(error) => {
                log::warn!("lock notice for user {user_id} not sent: {}", latchkey_auth::cause_chain(&error));
                return;
            }
        };
        let what = "Password sign-in to your account was locked after too many failed attempts";
        let how = "reset your password by email, or sign in with a passkey, to unlock it";
        state.mailer.announce(&state.pool, &state.tera, &req, &user.email, (what, Some(how))).await;
    });
}

// ---- asking for a link ----------------------------------------------------------------------

#[derive(Deserialize)]
struct ForgotForm {
    #[serde(default)]
    email: String,
}

fn forgot_context(state: &AppState, email: &str, errors: &FieldErrors) -> Context {
    let mut context = Context::new();
    context.insert("form", &serde_json::json!({ "email": email }));
    context.insert("errors", errors);
    context.insert("valid_for", &valid_for(state));
    context
}

async fn forgot_form(page: Page, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    page.render("password_forgot.html", forgot_context(&state, "", &FieldErrors::new()))
}

/// Answers the same page, in the same time, whether or not the address has an account: the
/// lookup, the link and the email happen after the answer, in a task of their own.
async fn forgot(
    CsrfForm(form): CsrfForm<ForgotForm>,
    page: Page,
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
) -> Result<HttpResponse, AppError> {
    let email = normalise_email(&form.email);
    if let Some(problem) = email_problem(&email) {
        let errors = FieldErrors::from([("email", vec![problem.to_owned()])]);
        let context = forgot_context(&state, &email, &errors);
        return page.render_with_status(StatusCode::UNPROCESSABLE_ENTITY, "password_forgot.html", context);
    }
    limit_request(page.request(), "password-reset", |policy| policy.email_ip).await?;

    let request = page.request().clone();
    let address = email.clone();
    actix_web::rt::spawn(async move {
        if let Err(error) = send_link(&request, &state, &auth, &address).await {
            log::warn!("password reset: no link sent: {}", latchkey_auth::cause_chain(&error));
        }
    });

    let mut context = Context::new();
    context.insert("email", &email);
    context.insert("valid_for", &valid_for(AppState::of(page.request())?));
    page.render("password_forgot_sent.html", context)
}

/// Makes a link for the account of `email`, if there is one and the address has not had too
/// many links lately (`THROTTLE_EMAIL`, counted for addresses with and without an account).
async fn send_link(req: &HttpRequest, state: &AppState, auth: &Auth, email: &str) -> Result<(), AppError> {
    let throttle = auth.throttle();
    if let Verdict::Wait(_) = throttle.request("password-reset-email", throttle.policy().email, email).await?
    {
        log::info!("password reset: too many links for one address lately; none sent");
        return Ok(());
    }
    let lookup = email.to_owned();
    let Some(user) = db::run(&state.pool, move |conn| User::find_by_email(conn, &lookup)).await? else {
        return Ok(());
    };
    let link = ResetLink::write(state, &user, false)?;
    let record = Record::of(req, Event::AuthnPasswordResetRequest).user(user.id);
    let mailer = state.mailer.clone();
    db::run(&state.pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            link.post(conn, &mailer, &user)?;
            record.insert(conn)
        })
    })
    .await?;
    state.mailer.wake();
    Ok(())
}

/// A reset link's token and the letter that carries it, not yet stored.
pub struct ResetLink(LinkLetter);

impl ResetLink {
    /// A new link for `user`, and its letter; `by_admin` says an administrator asked for it.
    pub fn write(state: &AppState, user: &User, by_admin: bool) -> Result<Self, AppError> {
        let mut context = Context::new();
        context.insert("email", &user.email);
        context.insert("by_admin", &by_admin);
        let link = ("/password/reset/", state.settings.mail.reset_ttl);
        Ok(Self(state.mailer.write_link(&state.tera, ("password_reset", &user.email), link, context)?))
    }

    /// Stores the link and posts its letter, in the caller's transaction; wake the mailer
    /// once it commits.
    pub fn post(&self, conn: &mut DbConnection, mailer: &Mailer, user: &User) -> diesel::QueryResult<()> {
        let LinkLetter { token, letter, now, expires_at } = &self.0;
        PasswordReset::issue(conn, token, user, *now, *expires_at)?;
        mailer.post(conn, letter, *now)
    }
}

// ---- using it -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    new_password: Password,
    #[serde(default)]
    new_password_confirm: Password,
}

/// The page for a link that does not work (expired, used, or the password changed since).
fn gone(page: &Page, state: &AppState) -> Result<HttpResponse, AppError> {
    let mut context = Context::new();
    context.insert("valid_for", &valid_for(state));
    page.render_with_status(StatusCode::GONE, "password_reset_gone.html", context)
}

fn reset_context(state: &AppState, token: &str, email: &str, errors: &FieldErrors) -> Context {
    let mut context = Context::new();
    context.insert("token", token);
    context.insert("email", email);
    context.insert("errors", errors);
    context.insert("password_min_length", &state.settings.password_min_length);
    context
}

async fn user_for(state: &AppState, token: &str, now: NaiveDateTime) -> Result<Option<User>, AppError> {
    let token = token.to_owned();
    Ok(db::run(&state.pool, move |conn| PasswordReset::user_for(conn, &token, now)).await?)
}

async fn reset_form(
    page: Page,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let Some(user) = user_for(&state, &token, Utc::now().naive_utc()).await? else {
        return gone(&page, &state);
    };
    let context = reset_context(&state, &token, &user.email, &FieldErrors::new());
    page.render("password_reset.html", context)
}

/// Sets the new password: the link is used up, every login of the account ends (the
/// credential epoch moves on), the account's failure count and lock are lifted, and the owner
/// is told by email. Nobody is logged in: the new password is proved at `/login`.
async fn reset(
    CsrfForm(form): CsrfForm<ResetForm>,
    page: Page,
    token: web::Path<String>,
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
) -> Result<HttpResponse, AppError> {
    let token = token.into_inner();
    let Some(user) = user_for(&state, &token, Utc::now().naive_utc()).await? else {
        return gone(&page, &state);
    };
    let mut errors = FieldErrors::new();
    check_new_password(
        &mut errors,
        (&form.new_password, &form.new_password_confirm),
        ("new_password", "new_password_confirm"),
        state.settings.password_min_length,
        &user.email,
    );
    if !errors.is_empty() {
        let context = reset_context(&state, &token, &user.email, &errors);
        return page.render_with_status(StatusCode::UNPROCESSABLE_ENTITY, "password_reset.html", context);
    }

    let hash = auth.hasher().hash(form.new_password).await?;
    let now = Utc::now().naive_utc();
    let notice =
        state.mailer.notice(&state.tera, page.request(), &user.email, "Your password was reset", None)?;
    let record = Record::of(page.request(), Event::AuthnPasswordChange).user(user.id);
    let mailer = state.mailer.clone();
    let reset = db::run(&state.pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            // Taken inside the transaction: of two requests racing with one link, one wins.
            let Some(user) = PasswordReset::take(conn, &token, now)? else { return Ok(None) };
            User::set_password_hash(conn, user.id, &hash, now)?;
            let ended = Login::delete_others(conn, user.id, "")?;
            record.detail(format!("reset by email; {ended} login(s) ended")).insert(conn)?;
            mailer.post(conn, &notice, now)?;
            Ok(Some(user.id))
        })
    })
    .await?;
    let Some(user_id) = reset else { return gone(&page, &state) };
    auth.logins().forget_user(user_id).await;
    state.mailer.wake();
    // The owner's email route out of a lock. The password is already changed: a throttle
    // store that is down leaves the count to expire by itself rather than failing the reset.
    if let Err(error) = auth.throttle().login_succeeded(user_id, None).await {
        log::warn!("password reset of user {user_id}: failure count not cleared: {error}");
    }
    log::info!("user {user_id} reset their password by email");
    FlashMessage::success(
        "Your password has been reset, and every device logged out. Log in with the new password.",
    )
    .send();
    Ok(see_other("/login"))
}
