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
    hex::encode(Sha256::digest(key.as_ref().as_bytes()))
}
