//! Content pages: the public home page and the login-required pages.

use actix_web::{web, HttpResponse};
use tera::Context;

use crate::auth::LoginRequired;
use crate::error::AppError;
use crate::http;
use crate::pages::Page;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/", http::get().to(home))
        .route("/about", http::get().to(about))
        .route("/contact", http::get().to(contact));
}

#[derive(serde::Deserialize)]
struct HomeQuery {
    logged_out: Option<String>,
}

/// The home page; after a logout (`/?logged_out=1`) it says so to the visitor, who is by then
/// anonymous.
async fn home(page: Page, query: web::Query<HomeQuery>) -> Result<HttpResponse, AppError> {
    let page = if query.logged_out.is_some() && !page.user().is_authenticated() {
        page.with_notice("You have been logged out.")
    } else {
        page
    };
    page.render("home.html", Context::new())
}

async fn about(_user: LoginRequired, page: Page) -> Result<HttpResponse, AppError> {
    page.render("about.html", Context::new())
}

async fn contact(_user: LoginRequired, page: Page) -> Result<HttpResponse, AppError> {
    page.render("contact.html", Context::new())
}
