//! The site's tables: the row struct, the insert struct, and the queries as functions. No
//! other module of the site writes Diesel queries. (Logins and session state are the core
//! crates' tables: `latchkey_auth::registry` and `latchkey_sessions::database`.)

pub mod cart_item;
pub mod password_reset;
pub mod product;
pub mod user;

pub use cart_item::{CartItem, LineChange, NewCartItem};
pub use password_reset::PasswordReset;
pub use product::{NewProduct, Product};
pub use user::{NewUser, User};
