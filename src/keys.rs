//! Purpose-specific keys derived from `SECRET_KEY`, so no two mechanisms share key material.

use actix_web::cookie::Key;
use hmac::{Hmac, Mac};
use sha2::Sha512;

use latchkey_auth::sealing::Sealer;
use latchkey_auth::second_factor::FactorKeys;
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
    /// Seals TOTP secrets at rest.
    pub totp_seal: [u8; 32],
    /// Keys the HMAC of recovery codes.
    pub recovery_codes: [u8; 32],
    /// Keys the hashes in throttling counters' keys, and names the deployment's counters.
    pub throttle: [u8; 32],
    /// Seals message bodies in the outbox (they may hold a link with a token).
    pub outbox_seal: [u8; 32],
}

impl Keys {
    pub fn derive(master: &SecretKey) -> Self {
        Self {
            session: Key::from(&derive(master, "latchkey/session-cookie/v1")),
            flash: Key::from(&derive(master, "latchkey/flash-cookie/v1")),
            csrf: derive(master, "latchkey/csrf/v1").to_vec(),
            preferences: Key::from(&derive(master, "latchkey/preferences-cookie/v1")),
            totp_seal: half(derive(master, "latchkey/totp-seal/v1")),
            recovery_codes: half(derive(master, "latchkey/recovery-codes/v1")),
            throttle: half(derive(master, "latchkey/throttle/v1")),
            outbox_seal: half(derive(master, "latchkey/outbox-seal/v1")),
        }
    }

    /// The prefix of this deployment's throttling counters: instances sharing `SECRET_KEY`
    /// share counts, and other deployments on the same Redis (or tests) never see them.
    pub fn throttle_prefix(&self) -> String {
        let id = hex::encode(&self.throttle[..6]);
        format!("latchkey:throttle:{id}:")
    }

    /// The keys second factors are kept under; those of `previous` still open and match what
    /// was made under them (TOTP secrets are re-sealed under these as they are read).
    pub fn factors(&self, previous: Option<&Keys>) -> FactorKeys {
        FactorKeys::new(
            Sealer::new(&self.totp_seal, previous.map(|p| &p.totp_seal)),
            self.recovery_codes,
            previous.map(|p| p.recovery_codes),
        )
    }

    /// The sealer of outbox bodies; one sealed under `previous` still opens (mail posted just
    /// before a key rotation is still sent).
    pub fn outbox(&self, previous: Option<&Keys>) -> Sealer {
        Sealer::new(&self.outbox_seal, previous.map(|p| &p.outbox_seal))
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

/// The first 32 bytes of a derived key, for 256-bit ciphers and MACs.
fn half(key: [u8; 64]) -> [u8; 32] {
    let mut half = [0u8; 32];
    half.copy_from_slice(&key[..32]);
    half
}

/// HMAC-SHA-512 of a label under the master key: 64 independent-looking bytes per label.
fn derive(master: &SecretKey, label: &str) -> [u8; 64] {
    let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(master.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}
