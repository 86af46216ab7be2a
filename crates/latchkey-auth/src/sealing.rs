//! Values sealed at rest: AES-256-GCM under a key derived from the application's secret, with
//! the key's id stored beside each value, so a value sealed under a previous key is still read
//! (and can be re-sealed under the current one) while the secret rotates.
//!
//! Written here because the `cookie` crate's private jar, which does the same for cookies,
//! binds values to a cookie name and knows one key only.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// One key and its id (the first 8 hex digits of its SHA-256).
#[derive(Clone)]
struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
}

impl SealingKey {
    fn new(key: &[u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(key)[..4]);
        Self { id, cipher: Aes256Gcm::new(key.into()) }
    }
}

/// Seals with the current key; opens with the current or the previous one.
///
/// ```
/// use latchkey_auth::sealing::Sealer;
/// let old = Sealer::new(&[1; 32], None);
/// let rolled = Sealer::new(&[2; 32], Some(&[1; 32]));
/// let opened = rolled.open(&old.seal(b"secret")).unwrap();
/// assert_eq!(opened.plain, b"secret");
/// assert!(opened.stale, "sealed under the previous key: re-seal it");
/// assert!(Sealer::new(&[2; 32], None).open(&old.seal(b"secret")).is_none());
/// ```
#[derive(Clone)]
pub struct Sealer {
    current: SealingKey,
    previous: Option<SealingKey>,
}

/// A value opened by [`Sealer::open`].
pub struct Opened {
    /// The plain value.
    pub plain: Vec<u8>,
    /// Whether it was sealed under the previous key (seal it again to move it to the current).
    pub stale: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// A sealer for `current`, which also opens values sealed under `previous`.
    pub fn new(current: &[u8; 32], previous: Option<&[u8; 32]>) -> Self {
        Self { current: SealingKey::new(current), previous: previous.map(SealingKey::new) }
    }

    /// `<key id>.<base64 of nonce and ciphertext>`.
    pub fn seal(&self, plain: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        // Encrypting a short value in memory cannot fail (the only error is a plaintext over
        // 64 GiB).
        let sealed = self.current.cipher.encrypt(Nonce::from_slice(&nonce), plain).unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{}.{}", self.current.id, URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The plain value, if one of the keys sealed it and it is intact.
    pub fn open(&self, sealed: &str) -> Option<Opened> {
        let (id, body) = sealed.split_once('.')?;
        let (key, stale) = if id == self.current.id {
            (&self.current, false)
        } else {
            (self.previous.as_ref().filter(|key| key.id == id)?, true)
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let plain = key.cipher.decrypt(Nonce::from_slice(nonce), ciphertext).ok()?;
        Some(Opened { plain, stale })
    }
}
