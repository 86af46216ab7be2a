//! Confirming an email address: a link by email (`/email/confirm/{token}`, valid for
//! `EMAIL_CONFIRM_TTL`, 24 hours by default) proves the address reaches the account's owner.
//! New accounts get one; so does the new address of an email change, which applies only once
//! its link is used (the old address is told at both steps).
//!
//! With `REQUIRE_VERIFIED_EMAIL=true`, `LoginRequired` sends a user whose address is not
//! confirmed to `/account/confirm-email`, which says so and sends the link again (throttled
//! per address, `THROTTLE_EMAIL`, and per client, `THROTTLE_EMAIL_IP`).
//!
//! The link's page asks for a press of a button before anything changes: mail scanners that
//! open links must not confirm on the owner's behalf. Like a reset link, its token never
//! reaches a log or a `Referer` (`http::SecurityHeaders`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_flash_messages::FlashMessage;
use tera::Context;

use latchkey_auth::audit::{Event, Record};
use latchkey_auth::csrf::{CsrfForm, NoFields};
use latchkey_auth::guard::{self, limit_request};
use latchkey_auth::throttle::Verdict;
use latchkey_auth::{Auth, UnconfirmedAllowed, CONFIRM_EMAIL_PAGE};
use latchkey_db::DbConnection;

use crate::auth::{CurrentUser, LoginRequired};
use crate::db;
use crate::error::{wait_in_words, AppError};
use crate::http;
use crate::mail::{LinkLetter, Mailer};
use crate::models::{EmailConfirmation, User};
use crate::pages::{see_other, Page};
use crate::state::AppState;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(CONFIRM_EMAIL_PAGE)
            .app_data(UnconfirmedAllowed)
            .route(http::get().to(status))
            .route(web::post().to(resend)),
    )
    .route("/email/confirm/{token}", http::get().to(confirm_form))
    .route("/email/confirm/{token}", web::post().to(confirm));
}

/// Where a confirmation link points, before its token.
const LINK_PATH: &str = "/email/confirm/";

/// How long a link works, in words.
fn valid_for(state: &AppState) -> String {
    wait_in_words(state.settings.mail.confirm_ttl.as_secs())
}

/// A link that confirms an address, and the letter that carries it there, not yet stored
/// (nor tied to an account: a new account's id is known only inside the transaction that
/// creates it).
pub struct ConfirmLink {
    link: LinkLetter,
    email: String,
}

impl ConfirmLink {
    /// A new link confirming `email`: a new account's address, or (`change_from` the
    /// account's current address) the one an account asked to change to.
    pub fn write(state: &AppState, email: &str, change_from: Option<&str>) -> Result<Self, AppError> {
        let mut context = Context::new();
        context.insert("email", email);
        context.insert("old_email", &change_from);
        let path = (LINK_PATH, state.settings.mail.confirm_ttl);
        let link = state.mailer.write_link(&state.tera, ("confirm_email", email), path, context)?;
        Ok(Self { link, email: email.to_owned() })
    }

    /// Stores the link for `user_id` and posts its letter, in the caller's transaction; wake
    /// the mailer once it commits.
    pub fn post(&self, conn: &mut DbConnection, mailer: &Mailer, user_id: i32) -> diesel::QueryResult<()> {
        let LinkLetter { token, letter, now, expires_at } = &self.link;
        EmailConfirmation::issue(conn, token, (user_id, &self.email), *now, *expires_at)?;
        mailer.post(conn, letter, *now)
    }
}

/// Whether another mail about an account may go to `email` now (`THROTTLE_EMAIL`, per
/// address): a page that sends mail must not become a way to flood someone's inbox.
pub async fn may_mail(req: &HttpRequest, email: &str) -> Result<bool, AppError> {
    let throttle = Auth::of(req)?.throttle();
    let verdict = throttle.request("confirm-email", throttle.policy().email, email).await?;
    Ok(matches!(verdict, Verdict::Allowed))
}

/// Refuses (429) a request that would mail `email` too soon after others: per address
/// (`THROTTLE_EMAIL`) and per client (`THROTTLE_EMAIL_IP`).
pub async fn limit_mail(req: &HttpRequest, email: &str, user_id: i32) -> Result<(), AppError> {
    limit_request(req, "confirm-email-ip", |policy| policy.email_ip).await?;
    let throttle = Auth::of(req)?.throttle();
    let verdict = throttle.request("confirm-email", throttle.policy().email, email).await?;
    Ok(guard::enforce(req, verdict, "confirm-email", Some(user_id)).await?)
}

// ---- "confirm your email" -------------------------------------------------------------------

/// Where the user's address stands: confirmed or not, and a change waiting for its link.
async fn status(
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
    context.insert("email", &user.email);
    context.insert("confirmed", &user.email_confirmed_at.is_some());
    context.insert("pending", &pending);
    context.insert("required", &state.settings.sessions.require_verified_email);
    context.insert("valid_for", &valid_for(&state));
    page.render("account_confirm_email.html", context)
}

/// Sends a new link to the user's address, unless it is confirmed already.
async fn resend(
    _form: CsrfForm<NoFields>,
    user: LoginRequired,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    if user.email_confirmed_at.is_some() {
        FlashMessage::info("Your email address is already confirmed.").send();
        return Ok(see_other("/account"));
    }
    limit_mail(&req, &user.email, user.id).await?;
    let link = ConfirmLink::write(&state, &user.email, None)?;
    let (mailer, user_id) = (state.mailer.clone(), user.id);
    db::run(&state.pool, move |conn| link.post(conn, &mailer, user_id)).await?;
    state.mailer.wake();
    FlashMessage::success(format!("A new link is on its way to {}.", user.email)).send();
    Ok(see_other(CONFIRM_EMAIL_PAGE))
}

// ---- the link -------------------------------------------------------------------------------

/// The page of a link that does not work (expired, used, or another link used since).
fn gone(page: &Page, state: &AppState) -> Result<HttpResponse, AppError> {
    let mut context = Context::new();
    context.insert("valid_for", &valid_for(state));
    page.render_with_status(StatusCode::GONE, "email_confirm_gone.html", context)
}

/// Shows the address the link confirms and a button to confirm it.
async fn confirm_form(
    page: Page,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let lookup = token.clone();
    let now = chrono::Utc::now().naive_utc();
    let Some((link, user)) =
        db::run(&state.pool, move |conn| EmailConfirmation::find(conn, &lookup, now)).await?
    else {
        return gone(&page, &state);
    };
    let mut context = Context::new();
    context.insert("token", &token.into_inner());
    context.insert("email", &link.email);
    context.insert("change", &(link.email != user.email));
    context.insert("old_email", &user.email);
    page.render("email_confirm.html", context)
}

/// Confirms the link's address: the account's own, or the new one of a change, which applies
/// now (a taken address answers 409 and changes nothing) and is announced to the old address.
/// Every other link of the account stops working.
async fn confirm(
    _form: CsrfForm<NoFields>,
    page: Page,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let token = token.into_inner();
    let now = chrono::Utc::now().naive_utc();
    let lookup = token.clone();
    let Some((link, user)) =
        db::run(&state.pool, move |conn| EmailConfirmation::find(conn, &lookup, now)).await?
    else {
        return gone(&page, &state);
    };
    let change = link.email != user.email;
    let (record, notice) = if change {
        let what = "Your email address was changed";
        let notice =
            state.mailer.notice(&state.tera, page.request(), &user.email, what, Some(&link.email))?;
        let record = Record::of(page.request(), Event::UserUpdated)
            .detail("email address changed: the new address confirmed it");
        (record, Some(notice))
    } else {
        (Record::of(page.request(), Event::UserEmailConfirmed), None)
    };
    let (user_id, mailer) = (user.id, state.mailer.clone());
    let applied = db::run(&state.pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            // Taken inside the transaction: of two requests racing with one link, one wins.
            let Some((link, _)) = EmailConfirmation::take(conn, &token, now)? else { return Ok(None) };
            User::confirm_email(conn, user_id, &link.email, now)?;
            record.user(user_id).insert(conn)?;
            if let Some(notice) = &notice {
                mailer.post(conn, notice, now)?;
            }
            Ok(Some(link.email))
        })
    })
    .await
    .map_err(AppError::from);
    if let Ok(Some(_)) = applied {
        Auth::of(page.request())?.logins().forget_user(user_id).await;
    }
    let email = match applied {
        Ok(Some(email)) => email,
        Ok(None) => return gone(&page, &state),
        Err(AppError::UniqueViolation(_)) => {
            let mut context = Context::new();
            context.insert("taken", &true);
            context.insert("valid_for", &valid_for(&state));
            return page.render_with_status(StatusCode::CONFLICT, "email_confirm_gone.html", context);
        }
        Err(other) => return Err(other),
    };
    if change {
        state.mailer.wake();
        log::info!("user {user_id} changed their email address");
        FlashMessage::success(format!("Your email address is now {email}.")).send();
    } else {
        log::info!("user {user_id} confirmed their email address");
        FlashMessage::success(format!("Thank you: {email} is confirmed.")).send();
    }
    let current = CurrentUser::resolve(page.request()).await?;
    if current.user().is_some_and(|user| user.id == user_id) {
        Ok(see_other("/account"))
    } else {
        FlashMessage::info("Log in to continue.").send();
        Ok(see_other("/login"))
    }
}
