//! Pages: the only source of HTML. `Page` is the extractor handlers render through; it gathers
//! what the base layout shows on every page (current user, CSRF token, flash messages,
//! display preferences) so templates see `current_user` the way Flask templates do. Error
//! pages, the flash cookie, the preferences cookie and where templates and static files come
//! from live here too.

pub mod assets;
mod error_pages;
pub mod flash;
pub mod preferences;

use actix_web::http::{header, StatusCode};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use actix_web_flash_messages::{IncomingFlashMessages, Level};
use futures_util::future::LocalBoxFuture;
use latchkey_auth::csrf::CsrfToken;
use latchkey_auth::{Auth, LoginStatus};
use serde::Serialize;

pub use error_pages::ErrorPages;

use crate::auth::CurrentUser;
use crate::error::{AppError, ErrorPage};
use crate::state::AppState;
use preferences::Preferences;

/// A `303 See Other` to a local path, the answer to every successful form POST.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

/// What every template receives besides its own variables.
pub struct Page {
    req: HttpRequest,
    user: CurrentUser,
    flashes: Vec<Flash>,
}

#[derive(Serialize)]
struct Flash {
    level: &'static str,
    text: String,
}

/// The template's view of the current user.
#[derive(Serialize)]
struct UserView<'a> {
    is_authenticated: bool,
    is_anonymous: bool,
    id: Option<i32>,
    email: Option<&'a str>,
    is_admin: bool,
}

impl FromRequest for Page {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let user = CurrentUser::resolve(&req).await?;
            let flashes = IncomingFlashMessages::extract(&req)
                .await
                .map(|incoming| {
                    incoming
                        .iter()
                        .map(|m| Flash { level: level_name(m.level()), text: m.content().to_owned() })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Page { req, user, flashes })
        })
    }
}

impl Page {
    /// Shows `text` among this page's messages, as a flash message would be shown.
    pub fn with_notice(mut self, text: &str) -> Self {
        self.flashes.push(Flash { level: "info", text: text.to_owned() });
        self
    }

    pub fn user(&self) -> &CurrentUser {
        &self.user
    }

    pub fn request(&self) -> &HttpRequest {
        &self.req
    }

    /// Renders `template` with `context` plus the base variables, as 200.
    pub fn render(&self, template: &str, context: tera::Context) -> Result<HttpResponse, AppError> {
        self.render_with_status(StatusCode::OK, template, context)
    }

    pub fn render_with_status(
        &self,
        status: StatusCode,
        template: &str,
        context: tera::Context,
    ) -> Result<HttpResponse, AppError> {
        render(&self.req, &self.user, &self.flashes, status, template, context)
    }
}

/// The request-independent inputs of the base layout, so that a page can also be rendered
/// for a request that an inner middleware consumed (see `ErrorPages`).
pub struct Layout<'a> {
    pub state: &'a AppState,
    pub auth: &'a Auth,
    pub user: &'a CurrentUser,
    pub csrf: CsrfToken,
    pub preferences: Preferences,
    pub path: &'a str,
}

impl<'a> Layout<'a> {
    fn of(req: &'a HttpRequest, user: &'a CurrentUser) -> Result<Self, AppError> {
        let state = AppState::of(req)?;
        let preferences = Preferences::from_request(req, &state.keys.preferences, state.is_production());
        Ok(Self {
            state,
            auth: Auth::of(req)?,
            user,
            csrf: CsrfToken::for_request(req)?,
            preferences,
            path: req.path(),
        })
    }
}

fn render(
    req: &HttpRequest,
    user: &CurrentUser,
    flashes: &[Flash],
    status: StatusCode,
    template: &str,
    context: tera::Context,
) -> Result<HttpResponse, AppError> {
    render_layout(Layout::of(req, user)?, flashes, status, template, context)
}

fn render_layout(
    layout: Layout<'_>,
    flashes: &[Flash],
    status: StatusCode,
    template: &str,
    mut context: tera::Context,
) -> Result<HttpResponse, AppError> {
    let user = layout.user.user();
    let view = UserView {
        is_authenticated: user.is_some(),
        is_anonymous: user.is_none(),
        id: user.map(|u| u.id),
        email: user.map(|u| u.email.as_str()),
        is_admin: user.is_some_and(|u| u.is_admin),
    };
    // The layout, on every page, reads only flat names: Tera resolves a dotted one
    // (`current_user.email`) through four string replacements, about 3,000 instructions
    // (callgrind), where a flat one is a map lookup. Page templates keep `current_user`.
    context.insert("signed_in", &view.is_authenticated);
    context.insert("user_email", &view.email);
    context.insert("user_is_admin", &view.is_admin);
    context.insert("current_user", &view);
    context.insert("theme", &layout.preferences.theme);
    context.insert("accent", &layout.preferences.accent);
    if let Some(login) = layout.user.login() {
        let status = LoginStatus::of(Some(login), layout.auth.policy());
        context.insert("session_idle_expires_in", &status.idle_expires_in);
        context.insert("session_absolute_expires_in", &status.absolute_expires_in);
        context.insert("session_warn_before", &status.warn_before);
    }
    context.insert("csrf_token", &layout.csrf.token);
    context.insert("flashes", flashes);
    context.insert("request_path", layout.path);
    let html = layout.state.tera.render(template, &context)?;
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"));
    // Pages show per-user content and carry CSRF tokens: never let a shared cache keep them.
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(cookie) = layout.csrf.new_cookie {
        response.cookie(cookie);
    }
    Ok(response.body(html))
}

/// Renders the error page; used by `ErrorPages`, so it must not fail: if even the template
/// cannot be rendered, it answers with plain text. It never queries the database (which may
/// be the thing that is down): the user shown is the one already resolved for this request.
pub fn render_error(req: &HttpRequest, status: StatusCode, page: &ErrorPage) -> HttpResponse {
    let user = CurrentUser::cached(req).unwrap_or(CurrentUser::Anonymous);
    let layout = Layout::of(req, &user);
    render_error_in(layout, status, page)
}

/// Renders the error page from a `Layout` gathered before the request was consumed.
pub fn render_error_in(
    layout: Result<Layout<'_>, AppError>,
    status: StatusCode,
    page: &ErrorPage,
) -> HttpResponse {
    let mut context = tera::Context::new();
    context.insert("status", &status.as_u16());
    context.insert("title", page.title);
    context.insert("message", page.message);
    context.insert("detail", &page.detail);
    layout.and_then(|layout| render_layout(layout, &[], status, "error.html", context)).unwrap_or_else(
        |error| {
            log::error!("rendering the error page failed: {error:?}");
            HttpResponse::build(status)
                .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
                .body(page.message)
        },
    )
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Success => "success",
        Level::Info | Level::Debug => "info",
    }
}
