//! HTTP plumbing shared by every route: page rendering, CSRF-checked forms, derived keys,
//! the display-preferences cookie.

pub mod client;
pub mod csrf;
pub mod form;
pub mod keys;
pub mod page;
pub mod preferences;

use actix_web::http::header;
use actix_web::HttpResponse;

/// A `303 See Other` to a local path, the answer to every successful form POST.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}
