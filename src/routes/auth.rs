//! Register, log in, prove it again (re-authentication), log out.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_flash_messages::FlashMessage;
use serde::Deserialize;
use tera::Context;
use validator::ValidateEmail;

use latchkey_auth::audit::{Event, Record};
use latchkey_auth::guard;
use latchkey_auth::guard::limit_request;
use latchkey_auth::next;
use latchkey_auth::passkeys::StoredPasskey;
use latchkey_auth::password::{self, Password};
use latchkey_auth::second_factor::{Answer, TotpFactor};
use latchkey_auth::throttle::Account;
use latchkey_auth::{Auth, SecondFactorOutcome};

use crate::auth::LoginRequired;
use crate::db;
use crate::error::AppError;
use crate::http;
use crate::models::{NewUser, User};
use crate::pages::{see_other, Page};
use crate::routes::email_confirmation::{may_mail, ConfirmLink};
use crate::state::AppState;
use latchkey_auth::csrf::{CsrfForm, NoFields};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/register", http::get().to(register_form))
        .route("/register", web::post().to(register))
        .route("/login", http::get().to(login_form))
        .route("/login", web::post().to(log_in))
        .route("/login/mfa", http::get().to(second_factor_form))
        .route("/login/mfa", web::post().to(second_factor))
        .service(
            // Proving who you are needs no confirmed address.
            web::resource("/reauth")
                .app_data(latchkey_auth::UnconfirmedAllowed)
                .route(http::get().to(reauth_form))
                .route(web::post().to(reauth)),
        )
        .route("/logout", http::get().to(logout_page))
        .route("/logout", web::post().to(log_out));
}

#[derive(Deserialize, Default)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// The site's name, which passwords should not lean on (see `password::validate_new`).
pub const SITE: &str = "latchkey";

/// Trims and lower-cases an email, so uniqueness is case-insensitive.
pub fn normalise_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// What is wrong with a normalised email address, if anything.
pub fn email_problem(email: &str) -> Option<&'static str> {
    if email.is_empty() {
        Some("Enter your email address.")
    } else if email.len() > 254 || !email.validate_email() {
        Some("Enter a valid email address.")
    } else {
        None
    }
}

// ---- register -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RegisterForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: Password,
    #[serde(default)]
    password_confirm: Password,
    #[serde(default)]
    next: String,
}

/// Messages per form field, as the templates show them under each input.
pub type FieldErrors = BTreeMap<&'static str, Vec<String>>;

/// Adds to `errors` what is wrong with a new password and its confirmation, under the two
/// `fields`: the same rules at registration, password change and reset.
pub fn check_new_password(
    errors: &mut FieldErrors,
    (new, confirm): (&Password, &Password),
    fields: (&'static str, &'static str),
    min_length: usize,
    email: &str,
) {
    for problem in password::validate_new(new.expose(), confirm.expose(), min_length, email, SITE) {
        let field = if problem.is_about_confirmation() { fields.1 } else { fields.0 };
        errors.entry(field).or_default().push(problem.message());
    }
}

/// A registration that passed validation.
struct Registration {
    email: String,
    password: Password,
}

impl RegisterForm {
    fn validate(self, min_length: usize) -> Result<Registration, (String, FieldErrors)> {
        let email = normalise_email(&self.email);
        let mut errors = FieldErrors::new();
        if let Some(problem) = email_problem(&email) {
            errors.entry("email").or_default().push(problem.into());
        }
        check_new_password(
            &mut errors,
            (&self.password, &self.password_confirm),
            ("password", "password_confirm"),
            min_length,
            &email,
        );
        if errors.is_empty() {
            Ok(Registration { email, password: self.password })
        } else {
            Err((email, errors))
        }
    }
}

fn register_context(email: &str, errors: &FieldErrors, next: &str, min_length: usize) -> Context {
    let mut context = Context::new();
    context.insert("form", &serde_json::json!({ "email": email }));
    context.insert("errors", errors);
    context.insert("next", next);
    context.insert("password_min_length", &min_length);
    context
}

async fn register_form(
    page: Page,
    query: web::Query<NextQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let context = register_context("", &FieldErrors::new(), &query.next, state.settings.password_min_length);
    page.render("register.html", context)
}

// The CSRF-checked form comes first among the extractors: a forged request is refused
// before any other work (such as resolving the current user) is done.
async fn register(
    CsrfForm(form): CsrfForm<RegisterForm>,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let min_length = state.settings.password_min_length;
    let next = form.next.clone();
    let invalid = |email: &str, errors: &FieldErrors| {
        page.render_with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "register.html",
            register_context(email, errors, &next, min_length),
        )
    };
    limit_request(page.request(), "register", |policy| policy.register).await?;
    let registration = match form.validate(min_length) {
        Ok(registration) => registration,
        Err((email, errors)) => return invalid(&email, &errors),
    };

    let hash = Auth::of(page.request())?.hasher().hash(registration.password).await?;
    let email = registration.email.clone();
    let now = chrono::Utc::now().naive_utc();
    let link = ConfirmLink::write(&state, &email, None)?;
    let record = Record::of(page.request(), Event::UserCreated);
    let mailer = state.mailer.clone();
    let created = db::run(&state.pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            let new = NewUser {
                email: &email,
                password_hash: &hash,
                created_at: now,
                updated_at: now,
                email_confirmed_at: None,
            };
            let user = new.insert(conn)?;
            record.user(user.id).insert(conn)?;
            link.post(conn, &mailer, user.id)?;
            Ok(user)
        })
    })
    .await
    .map_err(AppError::from);
    // With confirmation required, a new address and a taken one get the same page, and
    // nobody is logged in: the form cannot tell anyone which addresses have accounts.
    let required = state.settings.sessions.require_verified_email;
    let user = match created {
        Ok(user) => user,
        Err(AppError::UniqueViolation(_)) if required => {
            tell_owner_of_attempt(page.request(), &state, &registration.email).await?;
            return registered(&page, &state, &registration.email);
        }
        Err(AppError::UniqueViolation(_)) => {
            let errors =
                FieldErrors::from([("email", vec!["An account with this email already exists.".into()])]);
            return invalid(&registration.email, &errors);
        }
        Err(other) => return Err(other),
    };
    state.mailer.wake();
    log::info!("user {} registered", user.id);
    if required {
        return registered(&page, &state, &user.email);
    }
    latchkey_auth::log_in(page.request(), &user, false).await?;
    FlashMessage::success(format!(
        "Welcome! Your account has been created and you are logged in. To confirm your address, follow the link we sent to {}.",
        user.email
    ))
    .send();
    Ok(see_other(next::target(&next)))
}

/// The answer to a registration when addresses must be confirmed: "check your email", the
/// same whether the address was new or already had an account.
fn registered(page: &Page, state: &AppState, email: &str) -> Result<HttpResponse, AppError> {
    let mut context = Context::new();
    context.insert("email", email);
    context.insert("valid_for", &crate::error::wait_in_words(state.settings.mail.confirm_ttl.as_secs()));
    page.render("register_sent.html", context)
}

/// Tells the owner of `email` that someone tried to register with it (at most
/// `THROTTLE_EMAIL` such mails per address; beyond, nothing is sent and the page is the same).
async fn tell_owner_of_attempt(req: &HttpRequest, state: &AppState, email: &str) -> Result<(), AppError> {
    if !may_mail(req, email).await? {
        log::info!("registration with a taken address: too many mails to it lately; none sent");
        return Ok(());
    }
    let ip = Auth::of(req)?.client_ip(req);
    let agent = req.headers().get(actix_web::http::header::USER_AGENT).and_then(|v| v.to_str().ok());
    let context = crate::mail::with_client(Context::new(), chrono::Utc::now().naive_utc(), &ip, agent);
    let letter = state.mailer.write(&state.tera, "register_attempt", email, context)?;
    state.mailer.send(&state.pool, letter).await;
    Ok(())
}

// ---- log in ---------------------------------------------------------------------------------

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: Password,
    #[serde(default)]
    remember: Option<String>,
    #[serde(default)]
    next: String,
}

fn login_context(page: &Page, email: &str, error: Option<&str>, next: &str) -> Result<Context, AppError> {
    let mut context = Context::new();
    context.insert("form", &serde_json::json!({ "email": email }));
    context.insert("error", &error);
    context.insert("next", next);
    context.insert("passkeys_on", &passkeys_on(page)?);
    Ok(context)
}

/// Whether this site offers passkeys (see `PUBLIC_URL`).
fn passkeys_on(page: &Page) -> Result<bool, AppError> {
    Ok(Auth::of(page.request())?.passkeys().webauthn().is_some())
}

async fn login_form(page: Page, query: web::Query<NextQuery>) -> Result<HttpResponse, AppError> {
    page.render("login.html", login_context(&page, "", None, &query.next)?)
}

async fn log_in(
    CsrfForm(form): CsrfForm<LoginForm>,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let auth = Auth::of(page.request())?;
    let hasher = auth.hasher();
    let email = normalise_email(&form.email);
    // The user is read before the password is checked: the login holds only for the
    // credentials of this moment (see `latchkey_auth::log_in`).
    let lookup = email.clone();
    let user = db::run(&state.pool, move |conn| User::find_by_email(conn, &lookup)).await?;
    // Throttled before the password is checked: a guess that is not allowed costs no bcrypt.
    let ip = auth.client_ip(page.request());
    let account = user.as_ref().map_or(Account::Email(&email), |u| Account::User(u.id));
    let verdict = auth.throttle().check_login(account, &email, &ip).await?;
    guard::enforce(page.request(), verdict, "login", user.as_ref().map(|u| u.id)).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let matched = hasher.verify(form.password.clone(), stored).await?;
    let Some(user) = user.filter(|_| matched) else {
        log::info!("failed login attempt");
        guard::password_failed(page.request(), account, &email).await?;
        return page.render_with_status(
            StatusCode::UNAUTHORIZED,
            "login.html",
            login_context(&page, &email, Some("Invalid email or password."), &form.next)?,
        );
    };
    if hasher.needs_rehash(&user.password_hash) {
        // BCRYPT_COST changed since this hash was made: every account should cost the same.
        let new_hash = hasher.hash(form.password).await?;
        let (id, old_hash) = (user.id, user.password_hash.clone());
        db::run(&state.pool, move |conn| User::rehash_password(conn, id, &old_hash, &new_hash)).await?;
        Auth::of(page.request())?.logins().forget_user(id).await;
        log::info!("user {id}: password rehashed at cost {}", hasher.cost());
    }

    let remember = form.remember.as_deref() == Some("on");
    if latchkey_auth::has_second_factor(page.request(), &user).await? {
        // Not logged in yet: the second step creates the login.
        latchkey_auth::begin_second_factor(page.request(), &user, remember, &form.next).await?;
        log::info!("user {}: password accepted, waiting for the second factor", user.id);
        return Ok(see_other(SECOND_STEP));
    }
    latchkey_auth::log_in(page.request(), &user, remember).await?;
    auth.throttle().login_succeeded(user.id, Some((&email, &ip))).await?;
    log::info!("user {} logged in", user.id);
    FlashMessage::success("You are logged in.").send();
    Ok(see_other(next::target(&form.next)))
}

// ---- the second factor of a login ----------------------------------------------------------

/// Where a password login of an account with a second factor goes next.
const SECOND_STEP: &str = "/login/mfa";

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

/// Which second factors a user has, for the pages that ask for one.
#[derive(serde::Serialize)]
struct Factors {
    totp: bool,
    passkey: bool,
    /// Whether this site offers passkeys (see `PUBLIC_URL`).
    passkeys_on: bool,
}

impl Factors {
    async fn of(page: &Page, state: &AppState, user_id: i32) -> Result<Factors, AppError> {
        let (totp, passkey) = db::run(&state.pool, move |conn| {
            Ok((TotpFactor::is_enabled(conn, user_id)?, StoredPasskey::exists_for(conn, user_id)?))
        })
        .await?;
        Ok(Factors { totp, passkey, passkeys_on: passkeys_on(page)? })
    }

    /// Whether a password must come with a second factor.
    fn any(&self) -> bool {
        self.totp || self.passkey
    }
}

fn second_factor_context(factors: &Factors, error: Option<String>) -> Context {
    let mut context = Context::new();
    context.insert("factors", factors);
    context.insert("error", &error);
    context
}

/// The second step of a login: a code from the authenticator app, a recovery code, or a
/// passkey.
async fn second_factor_form(page: Page, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let Some(pending) = latchkey_auth::pending_login(page.request()).await? else {
        return Ok(see_other("/login"));
    };
    let factors = Factors::of(&page, &state, pending.user_id).await?;
    page.render("login_mfa.html", second_factor_context(&factors, None))
}

/// A right code logs in and goes to the login form's `next`; a wrong one answers 401 with the
/// form again; the fifth wrong one, or a pending login past its five minutes, starts over.
async fn second_factor(
    CsrfForm(form): CsrfForm<CodeForm>,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    limit_request(page.request(), "second-factor", |policy| policy.second_factor).await?;
    let user_id = latchkey_auth::pending_login(page.request()).await?.map(|p| p.user_id);
    match latchkey_auth::complete_second_factor::<User>(page.request(), Answer::Code(form.code)).await? {
        SecondFactorOutcome::LoggedIn { next } => {
            log::info!("a login completed with its second factor");
            FlashMessage::success("You are logged in.").send();
            Ok(see_other(next::target(&next)))
        }
        SecondFactorOutcome::Wrong { attempts_left } => page.render_with_status(
            StatusCode::UNAUTHORIZED,
            "login_mfa.html",
            second_factor_context(
                &match user_id {
                    Some(user_id) => Factors::of(&page, &state, user_id).await?,
                    None => Factors { totp: true, passkey: false, passkeys_on: false },
                },
                Some(format!(
                    "That code is not right, or was used already. {attempts_left} more {} allowed.",
                    if attempts_left == 1 { "try is" } else { "tries are" }
                )),
            ),
        ),
        SecondFactorOutcome::StartOver { too_many_attempts } => {
            FlashMessage::warning(if too_many_attempts {
                "Too many wrong codes. Log in again."
            } else {
                "That took too long. Log in again."
            })
            .send();
            Ok(see_other("/login"))
        }
    }
}

// ---- re-authentication ----------------------------------------------------------------------

#[derive(Deserialize)]
struct ReauthForm {
    #[serde(default)]
    password: Password,
    #[serde(default)]
    code: String,
    #[serde(default)]
    next: String,
}

fn reauth_context(email: &str, error: Option<&str>, next: &str, factors: &Factors) -> Context {
    let mut context = Context::new();
    context.insert("email", email);
    context.insert("error", &error);
    context.insert("next", next);
    context.insert("factors", factors);
    context.insert("needs_code", &factors.any());
    context
}

/// Asks a logged-in user to prove it is them again before a sensitive action
/// (`FreshLoginRequired` sends stale logins here): the password, with a code when the account
/// has a second factor, or a passkey alone (`routes::passkeys`).
async fn reauth_form(
    user: LoginRequired,
    page: Page,
    query: web::Query<NextQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let factors = Factors::of(&page, &state, user.id).await?;
    page.render("reauth.html", reauth_context(&user.email, None, &query.next, &factors))
}

/// Checks the password (and the code, when the account has a second factor); on success the
/// login is fresh again and the visitor goes back to `next`. A wrong answer changes nothing
/// and answers 401.
async fn reauth(
    CsrfForm(form): CsrfForm<ReauthForm>,
    user: LoginRequired,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let auth = Auth::of(page.request())?;
    limit_request(page.request(), "reauth", |policy| policy.reauth).await?;
    guard::enforce(page.request(), auth.throttle().check_account(user.id).await?, "reauth", Some(user.id))
        .await?;
    let hasher = auth.hasher();
    let factors = Factors::of(&page, &state, user.id).await?;
    let refuse = async |message: &str, detail: &str| {
        log::info!("user {}: failed re-authentication", user.id);
        guard::proof_failed(page.request(), user.id, Event::AuthnReauthFail, detail).await?;
        page.render_with_status(
            StatusCode::UNAUTHORIZED,
            "reauth.html",
            reauth_context(&user.email, Some(message), &form.next, &factors),
        )
    };
    if !hasher.verify(form.password, Some(user.password_hash.clone())).await? {
        return refuse("That password is not correct.", "wrong password").await;
    }
    if factors.any()
        && latchkey_auth::verify_second_factor(page.request(), user.id, Answer::Code(form.code))
            .await?
            .is_none()
    {
        return refuse("That code is not right, or was used already.", "wrong code").await;
    }
    latchkey_auth::reauthenticate(page.request(), &user, factors.any()).await?;
    log::info!("user {} re-authenticated", user.id);
    FlashMessage::success("Thank you: you can go on.").send();
    Ok(see_other(next::target(&form.next)))
}

// ---- log out --------------------------------------------------------------------------------

/// A page with a logout button; a GET never logs anyone out.
async fn logout_page(page: Page) -> Result<HttpResponse, AppError> {
    page.render("logout.html", Context::new())
}

/// Ends the login on the server and tells the browser to drop every cookie of the site
/// (`Clear-Site-Data`). The "logged out" notice travels in the address, since a cookie set in
/// this response may be cleared with the rest.
async fn log_out(_form: CsrfForm<NoFields>, page: Page) -> Result<HttpResponse, AppError> {
    latchkey_auth::log_out::<User>(page.request()).await?;
    let mut response = see_other(LOGGED_OUT);
    response.headers_mut().insert(
        actix_web::http::header::HeaderName::from_static("clear-site-data"),
        actix_web::http::header::HeaderValue::from_static("\"cookies\""),
    );
    Ok(response)
}

/// Where logging out lands: the home page, which then says so.
pub const LOGGED_OUT: &str = "/?logged_out=1";
