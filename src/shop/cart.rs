//! Carts. A guest's cart lives in their session (`GuestCart`), a user's in `cart_items`;
//! `Cart` is whichever the visitor has, so handlers need not care.
//!
//! A guest gets a session only when they first add something: looking around, crawlers and
//! health checks put nothing in the session store. At login (and registration) the guest's
//! cart moves into the user's, in the transaction that records the login
//! (through `MergeGuestCart`, the site's `latchkey_auth::LoginHook`): quantities add up, capped at `MAX_QUANTITY`.

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use diesel::QueryResult;
use latchkey_auth::{LoginHook, LoginWork};
use latchkey_sessions::{SessionKey, TypedSession};

use crate::auth::CurrentUser;
use crate::db::{self, DbConnection, Pool};
use crate::error::AppError;
use crate::models::{CartItem, LineChange, Product};
use crate::shop::{Quantity, MAX_GUEST_LINES, MAX_QUANTITY};

/// Where a guest's cart lives in the session: `[[product id, quantity], …]`.
pub const CART: SessionKey<Vec<(i32, i32)>> = SessionKey::new("latchkey.cart");

/// Why an add did not happen.
#[derive(Debug)]
pub enum AddError {
    /// A guest's cart already holds `MAX_GUEST_LINES` other products.
    GuestCartFull,
    Failed(AppError),
}

impl From<AppError> for AddError {
    fn from(error: AppError) -> Self {
        Self::Failed(error)
    }
}

/// This visitor's cart, wherever it lives.
pub enum Cart {
    Guest(TypedSession),
    User(i32),
}

impl Cart {
    pub fn of(req: &HttpRequest, user: &CurrentUser) -> Self {
        match user.user() {
            Some(user) => Self::User(user.id),
            None => Self::Guest(TypedSession::of(req)),
        }
    }

    /// Adds `quantity` of a product (which the caller has checked exists). Quantities add up,
    /// capped at `MAX_QUANTITY`.
    pub async fn add(
        &self,
        pool: &Pool,
        product_id: i32,
        quantity: Quantity,
    ) -> Result<LineChange, AddError> {
        match self {
            Self::User(user_id) => {
                let user_id = *user_id;
                let add = move |conn: &mut DbConnection| {
                    CartItem::add(conn, user_id, product_id, quantity.get(), MAX_QUANTITY)
                };
                Ok(db::run(pool, add).await.map_err(AppError::from)?)
            }
            Self::Guest(session) => GuestCart::load(session).add(session, product_id, quantity),
        }
    }

    /// The lines with their products, in catalogue order.
    pub async fn lines(&self, pool: &Pool) -> Result<Vec<(Product, i32)>, AppError> {
        match self {
            Self::User(user_id) => {
                let user_id = *user_id;
                let rows = db::run(pool, move |conn| CartItem::list_with_products(conn, user_id)).await?;
                Ok(rows.into_iter().map(|(item, product)| (product, item.quantity)).collect())
            }
            Self::Guest(session) => {
                let cart = GuestCart::load(session);
                if cart.is_empty() {
                    return Ok(Vec::new());
                }
                let ids = cart.product_ids();
                let products = db::run(pool, move |conn| Product::find_many(conn, &ids)).await?;
                // A product that is no longer sold drops out of the cart.
                Ok(products
                    .into_iter()
                    .filter_map(|product| cart.lines.get(&product.id).map(|&quantity| (product, quantity)))
                    .collect())
            }
        }
    }
}

/// A guest's cart: product id → quantity, kept in the session under [`CART`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GuestCart {
    lines: BTreeMap<i32, i32>,
}

impl GuestCart {
    /// The cart in `session`. No cart, or one that does not parse, is an empty cart: never an
    /// error page.
    pub fn load(session: &TypedSession) -> Self {
        Self::from_stored(session.get(CART).unwrap_or_default())
    }

    /// The cart from its stored form, keeping to the rules whatever was stored.
    fn from_stored(stored: Vec<(i32, i32)>) -> Self {
        let mut lines = BTreeMap::new();
        for (product_id, quantity) in stored.into_iter().filter(|&(_, quantity)| quantity > 0) {
            let line = lines.entry(product_id).or_insert(0);
            *line = LineChange::adding(*line, quantity, MAX_QUANTITY).after;
        }
        Self { lines }
    }

    fn stored(&self) -> Vec<(i32, i32)> {
        self.lines.iter().map(|(&product_id, &quantity)| (product_id, quantity)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn product_ids(&self) -> Vec<i32> {
        self.lines.keys().copied().collect()
    }

    /// Adds to the cart and saves it in the session; the first add creates the session.
    fn add(
        &mut self,
        session: &TypedSession,
        product_id: i32,
        quantity: Quantity,
    ) -> Result<LineChange, AddError> {
        let before = self.lines.get(&product_id).copied();
        if before.is_none() && self.lines.len() >= MAX_GUEST_LINES {
            return Err(AddError::GuestCartFull);
        }
        let change = LineChange::adding(before.unwrap_or(0), quantity.get(), MAX_QUANTITY);
        if change.added() > 0 {
            self.lines.insert(product_id, change.after);
            session.insert(CART, &self.stored()).map_err(AppError::internal)?;
        }
        Ok(change)
    }

    /// Adds every line to `user_id`'s cart (quantities add up, capped at `MAX_QUANTITY`);
    /// lines whose product is no longer sold are dropped. Returns how many lines were merged.
    ///
    /// Meant for the login's transaction. Lines go in product order, so merges running at
    /// once for one user (two devices logging in) lock rows in the same order and cannot
    /// deadlock.
    pub fn merge_into(&self, conn: &mut DbConnection, user_id: i32) -> QueryResult<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let products = Product::find_many(conn, &self.product_ids())?;
        for product in &products {
            if let Some(&quantity) = self.lines.get(&product.id) {
                CartItem::add(conn, user_id, product.id, quantity, MAX_QUANTITY)?;
            }
        }
        Ok(products.len())
    }

    /// Removes the cart from the session (once it has been merged).
    pub fn clear(session: &TypedSession) {
        session.remove(CART);
    }
}

/// Moves a guest's cart into the user's at login, in the login's transaction: if either fails,
/// the visitor is still a guest with their cart, never logged in with a cart half merged.
pub struct MergeGuestCart;

impl LoginHook for MergeGuestCart {
    fn prepare(&self, req: &HttpRequest) -> LoginWork {
        let session = TypedSession::of(req);
        // A retired session (a login POST sent twice, say) was merged by the request that
        // retired it: its copy of the cart must not be added again.
        let cart = if session.is_retired() { GuestCart::default() } else { GuestCart::load(&session) };
        Box::new(move |conn, user_id| {
            let merged = cart.merge_into(conn, user_id)?;
            if merged > 0 {
                log::info!("user {user_id}: {merged} line(s) of their guest cart moved into their cart");
            }
            Ok(())
        })
    }

    /// Merged: gone from the session before anything else can fail, so no retry adds it twice.
    fn committed(&self, req: &HttpRequest) {
        GuestCart::clear(&TypedSession::of(req));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_sessions::COOKIE_STATE_LIMIT;

    #[test]
    fn a_stored_cart_is_read_by_the_rules() {
        let cart = GuestCart::from_stored(vec![(3, 2), (1, 60), (3, 5), (1, 60), (2, 0), (4, -1)]);
        assert_eq!(cart.stored(), [(1, MAX_QUANTITY), (3, 7)]);
    }

    #[test]
    fn a_full_guest_cart_takes_a_small_part_of_a_cookie() {
        let largest = i32::MAX - i32::try_from(MAX_GUEST_LINES).unwrap_or(0);
        let stored = (0..MAX_GUEST_LINES).map(|n| (largest + n as i32, MAX_QUANTITY)).collect();
        let cart = GuestCart::from_stored(stored);
        assert_eq!(cart.lines.len(), MAX_GUEST_LINES);
        let json = serde_json::to_string(&cart.stored()).unwrap_or_default();
        assert!(json.len() < COOKIE_STATE_LIMIT / 8, "{} bytes: {json}", json.len());
    }
}
