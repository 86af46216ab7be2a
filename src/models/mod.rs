//! The site's tables: the row struct, the insert struct, and the queries as functions. No
//! other module of the site writes Diesel queries. (Logins and session state are the core
//! crates' tables: `latchkey_auth::registry` and `latchkey_sessions::database`.)

pub mod cart_item;
pub mod email_confirmation;
pub mod password_reset;
pub mod product;
pub mod user;

pub use cart_item::{CartItem, LineChange, NewCartItem};
pub use email_confirmation::EmailConfirmation;
pub use password_reset::PasswordReset;
pub use product::{NewProduct, Product};
pub use user::{NewUser, User};

/// A token for a link sent by email (a password reset, an address to confirm): 256 random
/// bits, URL-safe. Only its SHA-256 (`latchkey_auth::registry::token_id`) is stored.
pub fn new_link_token() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
