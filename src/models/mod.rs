//! One module per table: the row struct, the insert struct, and the queries as functions.
//! No other module writes Diesel queries.

pub mod cart_item;
pub mod login_session;
pub mod product;
pub mod session_state;
pub mod user;

pub use cart_item::{CartItem, LineChange, NewCartItem};
pub use login_session::{LoginSession, NewLoginSession};
pub use product::{NewProduct, Product};
pub use session_state::{NewSessionState, SessionState};
pub use user::{NewUser, User};
