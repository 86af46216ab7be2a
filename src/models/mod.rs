//! One module per table: the row struct, the insert struct, and the queries as functions.
//! No other module writes Diesel queries.

pub mod login_session;
pub mod session_state;
pub mod user;

pub use login_session::{LoginSession, NewLoginSession};
pub use session_state::{NewSessionState, SessionState};
pub use user::{NewUser, User};
