//! The account area: the account page, "your devices" (every live login, with revocation),
//! password and email change, and deleting the account. Everything that changes how the
//! account is reached, or ends other logins, needs a fresh login (`FreshLoginRequired`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use actix_web_flash_messages::FlashMessage;
use serde::{Deserialize, Serialize};
use tera::Context;

use latchkey_auth::audit::{self, Event, Record};
use latchkey_auth::guard;
use latchkey_auth::password::Password;
use latchkey_auth::registry::Login;
use latchkey_auth::{Auth, FormPage, LoginPolicy, UnconfirmedAllowed};

use crate::auth::{FreshLoginRequired, LoginRequired};
use crate::db;
use crate::error::AppError;
use crate::http;
use crate::http::{describe_user_agent, DATE_FORMAT};
use crate::models::{EmailConfirmation, User};
use crate::pages::{see_other, Page};
use crate::routes::auth::{check_new_password, email_problem, normalise_email, FieldErrors};
use crate::routes::email_confirmation::{limit_mail, ConfirmLink};
use crate::state::AppState;
use latchkey_auth::csrf::{CsrfForm, NoFields};

pub fn config(cfg: &mut web::ServiceConfig) {
    // A POST that needs a fresh login names the page of its form: re-authentication returns
    // there, and the user submits again.
    let from = |path: &'static str, page: &'static str| web::resource(path).app_data(FormPage(page));
    cfg.route("/account", http::get().to(account))
        .route("/account/activity", http::get().to(activity))
        .route("/account/sessions", http::get().to(devices))
        .service(from("/account/sessions/revoke-others", DEVICES).route(web::post().to(revoke_others)))
        .service(from("/account/sessions/{id}/revoke", DEVICES).route(web::post().to(revoke)))
        .service(
            from("/account/password", "/account/password")
                .route(http::get().to(password_form))
                .route(web::post().to(change_password)),
        )
        .service(
            // Open to an unconfirmed address too: the way to correct a mistyped one.
            from("/account/email", "/account/email")
                .app_data(UnconfirmedAllowed)
                .route(http::get().to(email_form))
                .route(web::post().to(change_email)),
        )
        .service(
            from("/account/delete", "/account/delete")
                .route(http::get().to(delete_form))
                .route(web::post().to(delete_account)),
        );
}

const DEVICES: &str = "/account/sessions";

async fn account(
    user: LoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (user_id, email) = (user.id, user.email.clone());
    let now = chrono::Utc::now().naive_utc();
    let pending =
        db::run(&state.pool, move |conn| EmailConfirmation::pending_change(conn, user_id, &email, now))
            .await?;
    let mut context = Context::new();
    context.insert(
        "user",
        &serde_json::json!({
            "email": user.email,
            "email_confirmed": user.email_confirmed_at.is_some(),
            "pending_email": pending,
            "created_at": user.created_at.format("%-d %B %Y").to_string(),
        }),
    );
    page.render("account.html", context)
}

// ---- your activity --------------------------------------------------------------------------

/// How many events the activity page shows.
const ACTIVITY_SHOWN: i64 = 50;

/// One audit event as the activity page shows it.
#[derive(Serialize)]
pub(crate) struct Activity {
    /// The event's name (`authn_login_fail`…), for tools reading the page.
    name: String,
    what: String,
    user_id: Option<i32>,
    detail: Option<String>,
    failure: bool,
    when: String,
    ip: String,
    browser: String,
    os: String,
}

/// Events as the activity pages show them: only those that mean something to an account's
/// owner, or (`everything`, for administrators) every one, the others by their name.
pub(crate) fn activity_rows(events: Vec<audit::StoredEvent>, everything: bool) -> Vec<Activity> {
    events
        .into_iter()
        .filter_map(|event| {
            let what = match event.description() {
                Some(what) => what.to_owned(),
                None if everything => event.event.clone(),
                None => return None,
            };
            let (browser, os) = describe_user_agent(event.user_agent.as_deref());
            Some(Activity {
                what,
                user_id: event.user_id,
                name: event.event,
                failure: event.outcome == "failure",
                detail: event.detail,
                when: event.at.format(DATE_FORMAT).to_string(),
                ip: event.ip.unwrap_or_else(|| "unknown".to_owned()),
                browser,
                os,
            })
        })
        .collect()
}

/// The user's own recent security events, newest first: sign-ins (failed ones included),
/// changes to how they sign in, devices signed out.
async fn activity(
    user: LoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let user_id = user.id;
    let events =
        db::run(&state.pool, move |conn| audit::recent_for_user(conn, user_id, ACTIVITY_SHOWN)).await?;
    let shown = activity_rows(events, false);
    let mut context = Context::new();
    context.insert("events", &shown);
    page.render("account_activity.html", context)
}

// ---- your devices ---------------------------------------------------------------------------

/// One login as the devices page shows it.
#[derive(Serialize)]
pub(crate) struct Device {
    id: String,
    browser: String,
    os: String,
    ip: String,
    started: String,
    last_active: String,
    remembered: bool,
    /// Proved recently enough for sensitive actions.
    fresh: bool,
    /// Session protection saw its IP address or browser change.
    changed: bool,
    /// Its last proof of identity included a second factor.
    second_factor: bool,
    current: bool,
}

impl Device {
    /// `user`'s live `logins` as devices, `current` marked: live means within its timeouts,
    /// and proved with the current credentials (a login whose password check raced a password
    /// change is dead, even before its next request says so).
    pub(crate) fn live(
        logins: Vec<Login>,
        user: &User,
        current: &str,
        (policy, now): (&LoginPolicy, chrono::NaiveDateTime),
    ) -> Vec<Device> {
        logins
            .into_iter()
            .filter(|login| policy.is_live(login, now) && login.credential_epoch == user.credential_epoch)
            .map(|login| Device::of(login, current, policy, now))
            .collect()
    }

    fn of(session: Login, current_id: &str, policy: &LoginPolicy, now: chrono::NaiveDateTime) -> Self {
        let (browser, os) = describe_user_agent(session.user_agent.as_deref());
        let fresh = policy.is_fresh(&session, now);
        Self {
            current: session.id == current_id,
            browser,
            os,
            ip: session.ip.unwrap_or_else(|| "unknown".to_owned()),
            started: session.created_at.format(DATE_FORMAT).to_string(),
            last_active: session.last_seen_at.format(DATE_FORMAT).to_string(),
            remembered: session.remember,
            fresh,
            changed: !session.fresh,
            second_factor: session.second_factor,
            id: session.id,
        }
    }
}

async fn devices(
    user: LoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let user_id = user.id;
    let logins = db::run(&state.pool, move |conn| Login::list_for_user(conn, user_id)).await?;
    let policy = Auth::of(page.request())?.policy();
    let now = chrono::Utc::now().naive_utc();
    let current = &user.login().id;
    let devices = Device::live(logins, &user, current, (policy, now));
    let mut context = Context::new();
    context.insert("devices", &devices);
    context.insert("others", &devices.iter().filter(|d| !d.current).count());
    page.render("account_sessions.html", context)
}

async fn revoke(
    _form: CsrfForm<NoFields>,
    user: FreshLoginRequired,
    path: web::Path<String>,
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let id = path.into_inner();
    if id == user.login().id {
        // Ending this very login is logging out; keep one way to do that.
        FlashMessage::info("To end this session, log out.").send();
        return Ok(see_other(DEVICES));
    }
    let user_id = user.id;
    let record = Record::of(&req, Event::SessionRevoked).user(user_id).detail("one other device");
    let ended = db::run(&state.pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            let ended = Login::delete_for_user(conn, user_id, &id)?;
            if ended {
                record.insert(conn)?;
            }
            Ok(ended)
        })
    })
    .await?;
    if !ended {
        return Err(AppError::NotFound);
    }
    Auth::of(&req)?.logins().forget_user(user_id).await;
    log::info!("user {user_id} revoked one of their sessions");
    FlashMessage::success("That session has been logged out.").send();
    Ok(see_other(DEVICES))
}

async fn revoke_others(
    _form: CsrfForm<NoFields>,
    user: FreshLoginRequired,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, AppError> {
    let user_id = user.id;
    let ended = latchkey_auth::end_other_logins(&req, &user.as_login_required()).await?;
    log::info!("user {user_id} logged out {ended} other session(s)");
    FlashMessage::success(match ended {
        0 => "There were no other sessions.".to_owned(),
        1 => "Logged out 1 other session.".to_owned(),
        n => format!("Logged out {n} other sessions."),
    })
    .send();
    Ok(see_other(DEVICES))
}

// ---- password change ------------------------------------------------------------------------

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current_password: Password,
    #[serde(default)]
    new_password: Password,
    #[serde(default)]
    new_password_confirm: Password,
}

fn password_context(errors: &FieldErrors, min_length: usize) -> Context {
    let mut context = Context::new();
    context.insert("errors", errors);
    context.insert("password_min_length", &min_length);
    context
}

async fn password_form(
    _user: FreshLoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    page.render(
        "account_password.html",
        password_context(&FieldErrors::new(), state.settings.password_min_length),
    )
}

/// Changes the password, ends every other login of the user, and replaces this one (new
/// token, new session id): a privilege change.
async fn change_password(
    CsrfForm(form): CsrfForm<PasswordForm>,
    user: FreshLoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let hasher = Auth::of(page.request())?.hasher();
    let min_length = state.settings.password_min_length;
    let mut errors = FieldErrors::new();
    check_new_password(
        &mut errors,
        (&form.new_password, &form.new_password_confirm),
        ("new_password", "new_password_confirm"),
        min_length,
        &user.email,
    );
    let stored = Some(user.password_hash.clone());
    if !hasher.verify(form.current_password, stored).await? {
        errors.entry("current_password").or_default().push("Your current password is not correct.".into());
        let event = Event::AuthnPasswordChangeFail;
        guard::proof_failed(page.request(), user.id, event, "wrong current password").await?;
    }
    if !errors.is_empty() {
        return page.render_with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "account_password.html",
            password_context(&errors, min_length),
        );
    }

    let hash = hasher.hash(form.new_password).await?;
    let user_id = user.id;
    let now = chrono::Utc::now().naive_utc();
    let record = Record::of(page.request(), Event::AuthnPasswordChange).user(user_id);
    let notice =
        state.mailer.notice(&state.tera, page.request(), &user.email, "Your password was changed", None)?;
    let mailer = state.mailer.clone();
    // The new hash moves the credential epoch on: every login made with the old password
    // ends, even one whose password check is still running. Their rows go too.
    let (updated, ended) = db::run(&state.pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            let updated = User::set_password_hash(conn, user_id, &hash, now)?;
            let ended = Login::delete_others(conn, user_id, "")?;
            record.detail(format!("{} other login(s) ended", ended.saturating_sub(1))).insert(conn)?;
            mailer.post(conn, &notice, now)?;
            Ok((updated, ended))
        })
    })
    .await?;
    Auth::of(page.request())?.logins().forget_user(user_id).await;
    state.mailer.wake();
    latchkey_auth::renew_login(page.request(), &updated, user.login().remember).await?;
    log::info!("user {user_id} changed their password; {} other session(s) ended", ended.saturating_sub(1));
    FlashMessage::success("Your password has been changed. Every other session has been logged out.").send();
    Ok(see_other("/account"))
}

// ---- email change ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct EmailForm {
    #[serde(default)]
    new_email: String,
}

fn email_context(email: &str, new_email: &str, errors: &FieldErrors) -> Context {
    let mut context = Context::new();
    context.insert("email", email);
    context.insert("form", &serde_json::json!({ "new_email": new_email }));
    context.insert("errors", errors);
    context
}

async fn email_form(user: FreshLoginRequired, page: Page) -> Result<HttpResponse, AppError> {
    page.render("account_email.html", email_context(&user.email, "", &FieldErrors::new()))
}

/// Asks to change the address the account logs in with: a link goes to the new address, and
/// the change applies when it is used (`routes::email_confirmation`); the old address is told
/// now and again then. A taken or invalid address answers 422; mailing one address (or from
/// one client) too often, 429.
async fn change_email(
    CsrfForm(form): CsrfForm<EmailForm>,
    user: FreshLoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let new_email = normalise_email(&form.new_email);
    let invalid = |message: &str| {
        let errors = FieldErrors::from([("new_email", vec![message.to_owned()])]);
        page.render_with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "account_email.html",
            email_context(&user.email, &new_email, &errors),
        )
    };
    if let Some(problem) = email_problem(&new_email) {
        return invalid(problem);
    }
    if new_email == user.email {
        return invalid("That is already your email address.");
    }
    let lookup = new_email.clone();
    if db::run(&state.pool, move |conn| User::find_by_email(conn, &lookup)).await?.is_some() {
        return invalid("An account with this email already exists.");
    }
    limit_mail(page.request(), &new_email, user.id).await?;

    let user_id = user.id;
    let now = chrono::Utc::now().naive_utc();
    let link = ConfirmLink::write(&state, &new_email, Some(&user.email))?;
    let record = Record::of(page.request(), Event::UserEmailChangeRequest).user(user_id);
    // The old address is told, so a hijacker cannot move the account's mail away unseen.
    let what = "A change of your email address was asked for";
    let detail = format!("to {new_email}, once that address confirms it");
    let notice = state.mailer.notice(&state.tera, page.request(), &user.email, what, Some(&detail))?;
    let mailer = state.mailer.clone();
    db::run(&state.pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            link.post(conn, &mailer, user_id)?;
            mailer.post(conn, &notice, now)?;
            record.insert(conn)
        })
    })
    .await?;
    state.mailer.wake();
    log::info!("user {user_id} asked to change their email address");
    FlashMessage::success(format!(
        "We sent a link to {new_email}. Your address changes when you follow it, within {}.",
        crate::error::wait_in_words(state.settings.mail.confirm_ttl.as_secs())
    ))
    .send();
    Ok(see_other("/account"))
}

// ---- delete the account ---------------------------------------------------------------------

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

fn delete_context(email: &str, error: Option<&str>) -> Context {
    let mut context = Context::new();
    context.insert("email", email);
    context.insert("error", &error);
    context
}

/// The confirmation page: what goes, and a field to type `delete` into.
async fn delete_form(user: FreshLoginRequired, page: Page) -> Result<HttpResponse, AppError> {
    page.render("account_delete.html", delete_context(&user.email, None))
}

/// Deletes the user, with every login and the cart, then logs this browser out.
async fn delete_account(
    CsrfForm(form): CsrfForm<DeleteForm>,
    user: FreshLoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    if form.confirm.trim() != "delete" {
        return page.render_with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "account_delete.html",
            delete_context(&user.email, Some("Type delete to confirm.")),
        );
    }
    let user_id = user.id;
    let record = Record::of(page.request(), Event::UserDeleted).user(user_id);
    db::run(&state.pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            User::delete(conn, user_id)?;
            record.insert(conn)
        })
    })
    .await?;
    Auth::of(page.request())?.logins().forget_user(user_id).await;
    latchkey_auth::log_out::<User>(page.request()).await?;
    log::info!("user {user_id} deleted their account");
    FlashMessage::success("Your account has been deleted.").send();
    Ok(see_other("/"))
}
