//! The admin area (`AdminRequired`: an administrator with a fresh login): find users, see an
//! account's logins, factors and recent events, and act on it — disable or enable it, force
//! a password reset, remove its second factors, lift a failure lock, end its logins. Every
//! action is audited under the account it concerns, naming the administrator.

use actix_web::{web, HttpResponse};
use actix_web_flash_messages::FlashMessage;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tera::Context;

use latchkey_auth::audit::{self, Event, Record};
use latchkey_auth::csrf::{CsrfForm, NoFields};
use latchkey_auth::guard;
use latchkey_auth::password::Password;
use latchkey_auth::registry::Login;
use latchkey_auth::second_factor;
use latchkey_auth::throttle::Verdict;
use latchkey_auth::{Auth, FormPage};
use latchkey_db::DbConnection;

use crate::alerts::Alert;
use crate::auth::AdminRequired;
use crate::db;
use crate::error::AppError;
use crate::http;
use crate::models::User;
use crate::pages::{see_other, Page};
use crate::routes::account::{activity_rows, Device};
use crate::routes::password_reset::ResetLink;
use crate::state::AppState;

/// The page every admin form is on, for `/reauth?next=` (the action is not replayed).
const ADMIN: &str = "/admin";
/// How many users and events a page lists.
const SHOWN: i64 = 50;
/// How many alerts the overview lists.
const ALERTS_SHOWN: i64 = 20;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin", http::get().to(overview))
        .route("/admin/users/{id}", http::get().to(user_page))
        .service(
            web::scope("/admin/users/{id}")
                .app_data(FormPage(ADMIN))
                .route("/disable", web::post().to(disable))
                .route("/enable", web::post().to(enable))
                .route("/reset-password", web::post().to(reset_password))
                .route("/reset-factors", web::post().to(reset_factors))
                .route("/unlock", web::post().to(unlock))
                .route("/logins/{login}/revoke", web::post().to(revoke_login)),
        );
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    q: String,
}

/// A user as the admin pages list them.
#[derive(Serialize)]
struct Account {
    id: i32,
    email: String,
    created: String,
    is_admin: bool,
    disabled: bool,
}

impl From<&User> for Account {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            email: user.email.clone(),
            created: user.created_at.format("%-d %B %Y").to_string(),
            is_admin: user.is_admin,
            disabled: user.disabled_at.is_some(),
        }
    }
}

/// Users (all, newest first, or those whose email holds `q`), the latest alerts, and the
/// latest events of every account.
async fn overview(
    _admin: AdminRequired,
    page: Page,
    query: web::Query<Search>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let q = query.into_inner().q.trim().to_owned();
    let fragment = q.clone();
    let (users, events, alerts) = db::run(&state.pool, move |conn| {
        Ok((
            User::search(conn, &fragment, SHOWN)?,
            audit::recent(conn, SHOWN)?,
            Alert::recent(conn, ALERTS_SHOWN)?,
        ))
    })
    .await?;
    let mut context = Context::new();
    context.insert("q", &q);
    context.insert("users", &users.iter().map(Account::from).collect::<Vec<_>>());
    context.insert("events", &activity_rows(events, true));
    let alerts: Vec<_> = alerts
        .into_iter()
        .map(|alert| {
            serde_json::json!({
                "when": alert.at.format("%-d %B %Y, %H:%M:%S UTC").to_string(),
                "rule": alert.rule,
                "detail": alert.detail,
                "user_id": alert.user_id,
                "ip": alert.ip,
            })
        })
        .collect();
    context.insert("alerts", &alerts);
    page.render("admin.html", context)
}

/// One account: its state, factors, live logins and latest events, with the actions.
async fn user_page(
    admin: AdminRequired,
    page: Page,
    path: web::Path<i32>,
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
) -> Result<HttpResponse, AppError> {
    let id = path.into_inner();
    let (user, logins, events, factors) = db::run(&state.pool, move |conn| {
        let user = User::find(conn, id)?.ok_or(diesel::result::Error::NotFound)?;
        let factors = second_factor::has_any(conn, id)?;
        Ok((user, Login::list_for_user(conn, id)?, audit::recent_for_user(conn, id, SHOWN)?, factors))
    })
    .await?;
    let locked = matches!(auth.throttle().check_account(id).await?, Verdict::Locked);
    let now = Utc::now().naive_utc();
    let policy = auth.policy();
    let devices = Device::live(logins, &user, &admin.0.login().id, (policy, now));
    let mut context = Context::new();
    context.insert("account", &Account::from(&user));
    context.insert("is_self", &(user.id == admin.id));
    context.insert("has_factors", &factors);
    context.insert("locked", &locked);
    context.insert("devices", &devices);
    context.insert("events", &activity_rows(events, true));
    page.render("admin_user.html", context)
}

/// Records `event` about account `id`, by `admin`.
fn record(page: &Page, event: Event, id: i32, admin: &AdminRequired, what: &str) -> Record {
    Record::of(page.request(), event).user(id).detail(format!("{what} by administrator #{}", admin.id))
}

/// Makes `change` to account `id` and records `event` (`what` was done) in one transaction.
/// A change that finds nothing to act on (`NotFound`) records nothing and is a 404.
async fn audited<T: Send + 'static>(
    (state, page, admin): (&AppState, &Page, &AdminRequired),
    id: i32,
    (event, what): (Event, &str),
    change: impl FnOnce(&mut DbConnection) -> diesel::QueryResult<T> + Send + 'static,
) -> Result<T, AppError> {
    let record = record(page, event, id, admin, what);
    let changed = db::run(&state.pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            let changed = change(conn)?;
            record.insert(conn)?;
            Ok(changed)
        })
    })
    .await?;
    // Every change here is to the account or its logins: no instance may serve the old ones.
    Auth::of(page.request())?.logins().forget_user(id).await;
    log::info!("administrator {}: {what}, user {id}", admin.id);
    Ok(changed)
}

/// Back to the account's page with `message`.
fn done(id: i32, message: String) -> Result<HttpResponse, AppError> {
    FlashMessage::success(message).send();
    Ok(see_other(&format!("/admin/users/{id}")))
}

/// Finds account `id`, or a 404.
async fn account(state: &AppState, id: i32) -> Result<User, AppError> {
    db::run(&state.pool, move |conn| User::find(conn, id)).await?.ok_or(AppError::NotFound)
}

/// Disables the account: it cannot log in, and every login of it ends at once.
async fn disable(
    _form: CsrfForm<NoFields>,
    admin: AdminRequired,
    page: Page,
    path: web::Path<i32>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let user = account(&state, path.into_inner()).await?;
    if user.id == admin.id {
        return Err(AppError::BadRequest("You cannot disable your own account."));
    }
    let (id, now) = (user.id, Utc::now().naive_utc());
    let ended = audited((&state, &page, &admin), id, (Event::AdminUserDisabled, "disabled"), move |conn| {
        User::set_disabled(conn, id, Some(now))?;
        Login::delete_others(conn, id, "")
    })
    .await?;
    done(id, format!("{} is disabled; {ended} login(s) ended.", user.email))
}

async fn enable(
    _form: CsrfForm<NoFields>,
    admin: AdminRequired,
    page: Page,
    path: web::Path<i32>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let user = account(&state, path.into_inner()).await?;
    let id = user.id;
    let enabled = (Event::AdminUserEnabled, "enabled");
    audited((&state, &page, &admin), id, enabled, move |conn| User::set_disabled(conn, id, None)).await?;
    done(id, format!("{} can log in again.", user.email))
}

/// Forces a new password: the old one stops working (replaced by a random one nobody
/// knows), every login ends, and the owner is mailed a reset link.
async fn reset_password(
    _form: CsrfForm<NoFields>,
    admin: AdminRequired,
    page: Page,
    path: web::Path<i32>,
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
) -> Result<HttpResponse, AppError> {
    let user = account(&state, path.into_inner()).await?;
    // A real bcrypt hash of a random password: a login attempt costs what any other does.
    let random = Password::new(crate::models::new_link_token());
    let hash = auth.hasher().hash(random).await?;
    let link = ResetLink::write(&state, &user, true)?;
    let (id, now, mailer) = (user.id, Utc::now().naive_utc(), state.mailer.clone());
    let required = (Event::AdminPasswordReset, "new password required");
    audited((&state, &page, &admin), id, required, move |conn| {
        let user = User::set_password_hash(conn, id, &hash, now)?;
        Login::delete_others(conn, id, "")?;
        link.post(conn, &mailer, &user)
    })
    .await?;
    state.mailer.wake();
    done(id, format!("{}'s password no longer works; a reset link is on its way to them.", user.email))
}

/// Removes every second factor (for someone who lost both device and recovery codes).
async fn reset_factors(
    _form: CsrfForm<NoFields>,
    admin: AdminRequired,
    page: Page,
    path: web::Path<i32>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let user = account(&state, path.into_inner()).await?;
    let id = user.id;
    let removed = (Event::AdminFactorsReset, "second factors removed");
    audited((&state, &page, &admin), id, removed, move |conn| second_factor::remove_all(conn, id)).await?;
    let what =
        ("An administrator removed your second factors", Some("set up a new one on your security page"));
    state.mailer.announce(&state.pool, &state.tera, page.request(), &user.email, what).await;
    done(id, format!("{} has no second factor now.", user.email))
}

/// Lifts the account's failure count and lock.
async fn unlock(
    _form: CsrfForm<NoFields>,
    admin: AdminRequired,
    page: Page,
    path: web::Path<i32>,
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
) -> Result<HttpResponse, AppError> {
    let user = account(&state, path.into_inner()).await?;
    auth.throttle().login_succeeded(user.id, None).await?;
    guard::record(page.request(), record(&page, Event::AdminUnlock, user.id, &admin, "lock lifted")).await;
    log::info!("administrator {} lifted the lock of user {}", admin.id, user.id);
    done(user.id, format!("{} can sign in with a password again.", user.email))
}

/// Ends one login of the account.
async fn revoke_login(
    _form: CsrfForm<NoFields>,
    admin: AdminRequired,
    page: Page,
    path: web::Path<(i32, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (id, login) = path.into_inner();
    let ended = (Event::AdminSessionRevoked, "a login ended");
    audited((&state, &page, &admin), id, ended, move |conn| {
        match Login::delete_for_user(conn, id, &login)? {
            true => Ok(()),
            false => Err(diesel::result::Error::NotFound),
        }
    })
    .await?;
    done(id, "The login has ended.".to_owned())
}
