//! The site's routes, one module per area; each owns its paths through `config`.

pub mod account;
pub mod admin;
pub mod auth;
pub mod email_confirmation;
pub mod health;
pub mod pages;
pub mod passkeys;
pub mod password_reset;
pub mod preferences;
pub mod security;
pub mod session;
pub mod shop;

use actix_web::web::ServiceConfig;

/// Registers every page route (the probes, `health`, are registered apart: they need no
/// session).
pub fn config(cfg: &mut ServiceConfig) {
    cfg.configure(pages::config)
        .configure(auth::config)
        .configure(account::config)
        .configure(admin::config)
        .configure(password_reset::config)
        .configure(email_confirmation::config)
        .configure(security::config)
        .configure(passkeys::config)
        .configure(session::config)
        .configure(preferences::config)
        .configure(shop::config);
}
