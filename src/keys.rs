//! Purpose-specific keys derived from `SECRET_KEY`, so no two mechanisms share key material.

use actix_web::cookie::Key;
use hmac::{Hmac, Mac};
use sha2::Sha512;

use latchkey_sessions::{Rekey, Sealing};

use crate::pages::{flash, preferences::Preferences};
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

    /// The middleware that accepts this site's cookies sealed under `previous` keys (from
    /// `SECRET_KEY_PREVIOUS`) and re-seals them under these. The session cookie is re-issued
    /// by the session layers; the preferences cookie here, with its usual attributes; a flash
    /// cookie is read once and cleared, so it needs no re-issue.
    pub fn rekey(&self, previous: Option<&Keys>, production: bool) -> Rekey {
        let Some(previous) = previous else { return Rekey::default() };
        Rekey::default()
            .with_cookie(
                latchkey_sessions::cookie_name(production),
                Sealing::Private,
                self.session.clone(),
                Some(previous.session.clone()),
                None,
            )
            .with_cookie(
                flash::cookie_name(production),
                Sealing::Signed,
                self.flash.clone(),
                Some(previous.flash.clone()),
                None,
            )
            .with_cookie(
                crate::pages::preferences::cookie_name(production),
                Sealing::Signed,
                self.preferences.clone(),
                Some(previous.preferences.clone()),
                Some(Preferences::default().to_cookie_unsealed(production)),
            )
    }
}

/// HMAC-SHA-512 of a label under the master key: 64 independent-looking bytes per label.
fn derive(master: &SecretKey, label: &str) -> [u8; 64] {
    let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(master.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}
