//! What the server-side backends (Redis, the database) and the store over them share: state
//! as a backend read it, and the hash that names a session key outside the cookie.

use std::time::Duration;

use actix_session::storage::SessionKey;
use sha2::{Digest, Sha256};

use crate::typed::State;

/// Server-side state as a backend read it.
pub struct Loaded {
    /// The state, without the retired mark.
    pub state: State,
    /// Whether the key is retired (in its grace period).
    pub retired: bool,
    /// How long the backend keeps the state from now.
    pub expires_in: Duration,
}

/// The SHA-256 (hex) of a session key: how the database stores it, and how the state cache
/// names it on the invalidation channel (never the key itself).
pub(crate) fn key_id(key: &SessionKey) -> String {
    sha256_hex(key.as_ref())
}

/// The SHA-256 of `secret`, hex-encoded: how a session key or a login token is named where it
/// is stored, cached or announced to other instances, never the secret itself.
///
/// ```
/// let id = latchkey_sessions::server_side::sha256_hex("abc");
/// assert_eq!(id, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
/// ```
pub fn sha256_hex(secret: &str) -> String {
    // Every logged-in request names one or two secrets: encoding into a buffer of the exact
    // size skips `hex::encode`'s character-by-character iterator (about 2,000 instructions).
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = [0u8; 64];
    match hex::encode_to_slice(digest, &mut hex) {
        Ok(()) => std::str::from_utf8(&hex).map_or_else(|_| hex::encode(digest), str::to_owned),
        Err(_) => hex::encode(digest),
    }
}
