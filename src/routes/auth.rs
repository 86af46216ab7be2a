//! Register, log in, log out.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use actix_web_flash_messages::FlashMessage;
use serde::Deserialize;
use tera::Context;
use validator::ValidateEmail;

use crate::auth::{login, next, password};
use crate::db;
use crate::error::AppError;
use crate::models::{NewUser, User};
use crate::settings::Secret;
use crate::startup::AppState;
use crate::web::form::{CsrfForm, NoFields};
use crate::web::page::Page;
use crate::web::see_other;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/register", web::get().to(register_form))
        .route("/register", web::post().to(register))
        .route("/login", web::get().to(login_form))
        .route("/login", web::post().to(log_in))
        .route("/logout", web::get().to(logout_page))
        .route("/logout", web::post().to(log_out));
}

#[derive(Deserialize, Default)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// Trims and lower-cases an email, so uniqueness is case-insensitive.
fn normalise_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

// ---- register -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RegisterForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: Secret,
    #[serde(default)]
    password_confirm: Secret,
    #[serde(default)]
    next: String,
}

/// Messages per form field, as the templates show them under each input.
pub type FieldErrors = BTreeMap<&'static str, Vec<String>>;

/// A registration that passed validation.
struct Registration {
    email: String,
    password: Secret,
}

impl RegisterForm {
    fn validate(self, min_length: usize) -> Result<Registration, (String, FieldErrors)> {
        let email = normalise_email(&self.email);
        let mut errors = FieldErrors::new();
        if email.is_empty() {
            errors.entry("email").or_default().push("Enter your email address.".into());
        } else if email.len() > 254 || !email.validate_email() {
            errors.entry("email").or_default().push("Enter a valid email address.".into());
        }
        for problem in
            password::validate_new(self.password.expose(), self.password_confirm.expose(), min_length)
        {
            let field = if problem.is_about_confirmation() { "password_confirm" } else { "password" };
            errors.entry(field).or_default().push(problem.message());
        }
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
    let registration = match form.validate(min_length) {
        Ok(registration) => registration,
        Err((email, errors)) => return invalid(&email, &errors),
    };

    let hash = password::hash(registration.password, state.settings.bcrypt_cost).await?;
    let email = registration.email.clone();
    let now = chrono::Utc::now().naive_utc();
    let created = db::run(&state.pool, move |conn| {
        NewUser { email: &email, password_hash: &hash, created_at: now, updated_at: now }.insert(conn)
    })
    .await;
    let user = match created {
        Ok(user) => user,
        Err(AppError::UniqueViolation(_)) => {
            let errors =
                FieldErrors::from([("email", vec!["An account with this email already exists.".into()])]);
            return invalid(&registration.email, &errors);
        }
        Err(other) => return Err(other),
    };

    login::log_in(page.request(), user.id, false).await?;
    log::info!("user {} registered", user.id);
    FlashMessage::success("Welcome! Your account has been created and you are logged in.").send();
    Ok(see_other(next::target(&next)))
}

// ---- log in ---------------------------------------------------------------------------------

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: Secret,
    #[serde(default)]
    remember: Option<String>,
    #[serde(default)]
    next: String,
}

fn login_context(email: &str, error: Option<&str>, next: &str) -> Context {
    let mut context = Context::new();
    context.insert("form", &serde_json::json!({ "email": email }));
    context.insert("error", &error);
    context.insert("next", next);
    context
}

async fn login_form(page: Page, query: web::Query<NextQuery>) -> Result<HttpResponse, AppError> {
    page.render("login.html", login_context("", None, &query.next))
}

async fn log_in(
    CsrfForm(form): CsrfForm<LoginForm>,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let email = normalise_email(&form.email);
    let user = if form.password.expose().len() > password::MAX_BYTES {
        None
    } else {
        let lookup = email.clone();
        let user = db::run(&state.pool, move |conn| User::find_by_email(conn, &lookup)).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let matched = password::verify(form.password, stored, state.dummy_hash.clone()).await?;
        user.filter(|_| matched)
    };
    let Some(user) = user else {
        log::info!("failed login attempt");
        return page.render_with_status(
            StatusCode::UNAUTHORIZED,
            "login.html",
            login_context(&email, Some("Invalid email or password."), &form.next),
        );
    };

    login::log_in(page.request(), user.id, form.remember.as_deref() == Some("on")).await?;
    log::info!("user {} logged in", user.id);
    FlashMessage::success("You are logged in.").send();
    Ok(see_other(next::target(&form.next)))
}

// ---- log out --------------------------------------------------------------------------------

/// A page with a logout button; a GET never logs anyone out.
async fn logout_page(page: Page) -> Result<HttpResponse, AppError> {
    page.render("logout.html", Context::new())
}

async fn log_out(_form: CsrfForm<NoFields>, page: Page) -> Result<HttpResponse, AppError> {
    login::log_out(page.request()).await?;
    FlashMessage::info("You have been logged out.").send();
    Ok(see_other("/"))
}
