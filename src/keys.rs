//! Purpose-specific keys derived from `SECRET_KEY`, so no two mechanisms share key material.

use actix_web::cookie::Key;
use hmac::{Hmac, Mac};
use sha2::Sha512;

use crate::settings::SecretKey;

/// The keys the site signs and encrypts with.
#[derive(Clone)]
pub struct Keys {
    /// Signs and encrypts the session cookie.
    pub session: Key,
    /// Signs the flash-message cookie.
    pub flash: Key,
    /// Derives CSRF form tokens from the per-browser CSRF secret.
    pub csrf: Vec<u8>,
    /// Signs the display-preferences cookie.
    pub preferences: Key,
}

impl Keys {
    pub fn derive(master: &SecretKey) -> Self {
        Self {
            session: Key::from(&derive(master, "latchkey/session-cookie/v1")),
            flash: Key::from(&derive(master, "latchkey/flash-cookie/v1")),
            csrf: derive(master, "latchkey/csrf/v1").to_vec(),
            preferences: Key::from(&derive(master, "latchkey/preferences-cookie/v1")),
        }
    }
}

/// HMAC-SHA-512 of a label under the master key: 64 independent-looking bytes per label.
fn derive(master: &SecretKey, label: &str) -> [u8; 64] {
    let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(master.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}
