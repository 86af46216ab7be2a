//! Content pages: the public home page and the login-required pages.

use actix_web::{web, HttpResponse};
use tera::Context;

use crate::auth::LoginRequired;
use crate::error::AppError;
use crate::web::page::Page;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home))
        .route("/about", web::get().to(about))
        .route("/contact", web::get().to(contact));
}

async fn home(page: Page) -> Result<HttpResponse, AppError> {
    page.render("home.html", Context::new())
}

async fn about(_user: LoginRequired, page: Page) -> Result<HttpResponse, AppError> {
    page.render("about.html", Context::new())
}

async fn contact(_user: LoginRequired, page: Page) -> Result<HttpResponse, AppError> {
    page.render("contact.html", Context::new())
}
