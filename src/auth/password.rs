//! Password hashing: bcrypt over an HMAC-SHA-256 pre-hash, on the blocking pool.
//!
//! bcrypt reads only the first 72 bytes of its input, so a long password would be accepted by
//! typing its prefix. Every password is therefore first reduced to
//! `base64(HMAC-SHA-256(key = bcrypt salt, password))` (44 bytes), as passlib's
//! `bcrypt_sha256` does. Keying the HMAC with the per-hash salt (rather than hashing plainly)
//! stops "password shucking": an unsalted SHA-256 leaked elsewhere cannot be tested against
//! these hashes. The stored value is an ordinary `$2b$` bcrypt string.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::error::AppError;
use crate::settings::Secret;

/// Longest password accepted, in bytes; anything longer is refused before any hashing.
pub const MAX_BYTES: usize = 1024;

/// Why a new password was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewPasswordError {
    TooShort(usize),
    TooLong,
    Mismatch,
}

impl NewPasswordError {
    pub fn message(&self) -> String {
        match self {
            Self::TooShort(min) => format!("Use at least {min} characters."),
            Self::TooLong => format!("Use at most {MAX_BYTES} bytes."),
            Self::Mismatch => "The passwords do not match.".to_owned(),
        }
    }

    /// Whether the problem belongs to the confirmation field rather than the password.
    pub fn is_about_confirmation(&self) -> bool {
        matches!(self, Self::Mismatch)
    }
}

/// The rules for a new password: any Unicode, at least `min_length` characters, at most
/// `MAX_BYTES` bytes, typed the same twice.
pub fn validate_new(password: &str, confirmation: &str, min_length: usize) -> Vec<NewPasswordError> {
    let mut problems = Vec::new();
    if password.len() > MAX_BYTES {
        problems.push(NewPasswordError::TooLong);
    } else if password.chars().count() < min_length {
        problems.push(NewPasswordError::TooShort(min_length));
    }
    if password != confirmation {
        problems.push(NewPasswordError::Mismatch);
    }
    problems
}

fn prehash(password: &str, salt: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(salt.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(password.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn salt_string(salt: &[u8; 16]) -> String {
    base64::engine::GeneralPurpose::new(&base64::alphabet::BCRYPT, base64::engine::general_purpose::NO_PAD)
        .encode(salt)
}

/// Hashes synchronously; call through `hash` from request code.
pub fn hash_blocking(password: &str, cost: u32) -> Result<String, bcrypt::BcryptError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let parts = bcrypt::hash_with_salt(prehash(password, &salt_string(&salt)), cost, salt)?;
    Ok(parts.format_for_version(bcrypt::Version::TwoB))
}

/// Verifies synchronously; a malformed stored hash simply does not match.
pub fn verify_blocking(password: &str, stored: &str) -> bool {
    let Ok(parts) = stored.parse::<bcrypt::HashParts>() else {
        return false;
    };
    bcrypt::verify(prehash(password, &parts.get_salt()), stored).unwrap_or(false)
}

/// Hashes on the blocking pool.
pub async fn hash(password: Secret, cost: u32) -> Result<String, AppError> {
    actix_web::web::block(move || hash_blocking(password.expose(), cost))
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)
}

/// Verifies on the blocking pool. With no stored hash (unknown email) it checks against
/// `dummy` so that the answer takes as long as for a real account.
pub async fn verify(password: Secret, stored: Option<String>, dummy: String) -> Result<bool, AppError> {
    actix_web::web::block(move || {
        let matched = verify_blocking(password.expose(), stored.as_deref().unwrap_or(&dummy));
        matched && stored.is_some()
    })
    .await
    .map_err(AppError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_password() -> Result<(), bcrypt::BcryptError> {
        let stored = hash_blocking("correct horse battery staple", 4)?;
        assert!(stored.starts_with("$2b$04$"));
        assert!(verify_blocking("correct horse battery staple", &stored));
        assert!(!verify_blocking("correct horse battery stapl", &stored));
        assert!(!verify_blocking("anything", "not a hash"));
        Ok(())
    }

    #[test]
    fn the_72_byte_prefix_of_a_long_password_does_not_match() -> Result<(), bcrypt::BcryptError> {
        let long = "é".repeat(50); // 100 bytes
        let stored = hash_blocking(&long, 4)?;
        assert!(verify_blocking(&long, &stored));
        assert!(!verify_blocking(&long[..72], &stored));
        Ok(())
    }

    #[test]
    fn our_salt_encoding_matches_bcrypts() -> Result<(), bcrypt::BcryptError> {
        let salt = [7u8; 16];
        let parts = bcrypt::hash_with_salt("x", 4, salt)?;
        assert_eq!(parts.get_salt(), salt_string(&salt));
        Ok(())
    }
}
