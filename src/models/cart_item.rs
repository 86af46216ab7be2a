//! The `cart_items` table: the carts of users, one row per product in a cart. (Guests' carts
//! live in their session; see `shop::cart`.)

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};

use crate::db::schema::{cart_items, products};
use crate::models::{Product, User};
use latchkey_db::DbConnection;

#[derive(Debug, Clone, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = cart_items, primary_key(user_id, product_id))]
#[diesel(belongs_to(User), belongs_to(Product))]
pub struct CartItem {
    pub user_id: i32,
    pub product_id: i32,
    pub quantity: i32,
}

#[derive(Insertable)]
#[diesel(table_name = cart_items)]
pub struct NewCartItem {
    pub user_id: i32,
    pub product_id: i32,
    pub quantity: i32,
}

impl NewCartItem {
    /// Inserts the line; a line already there for this user and product is a unique violation.
    pub fn insert(&self, conn: &mut DbConnection) -> QueryResult<()> {
        diesel::insert_into(cart_items::table).values(self).execute(conn).map(drop)
    }
}

/// How one line of a cart changed: its quantity before and after (0 when it was not there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineChange {
    pub before: i32,
    pub after: i32,
}

impl LineChange {
    /// Adding `quantity` to a line of `before`: quantities add up, capped at `max`. A line
    /// already above `max` (a lower cap than when it was filled) is left as it is.
    pub fn adding(before: i32, quantity: i32, max: i32) -> Self {
        Self { before, after: before.saturating_add(quantity).min(max).max(before) }
    }

    pub fn added(&self) -> i32 {
        self.after - self.before
    }
}

impl CartItem {
    /// Adds `quantity` of `product_id` to `user_id`'s cart: quantities add up, capped at `max`.
    ///
    /// Concurrent adds to one line all count, on both backends. An existing line is locked
    /// before it is read, by a no-op `UPDATE` (a row lock on PostgreSQL; on SQLite the write
    /// lock, taken by the transaction's first statement so that it waits rather than fails).
    /// A missing line is inserted in a savepoint: if another request inserted it first, the
    /// unique violation rolls back only the savepoint and the quantity is added to that line.
    pub fn add(
        conn: &mut DbConnection,
        user_id: i32,
        product_id: i32,
        quantity: i32,
        max: i32,
    ) -> QueryResult<LineChange> {
        crate::db::write_transaction(conn, |conn| {
            if let Some(before) = Self::lock(conn, user_id, product_id)? {
                return Self::increase(conn, user_id, product_id, LineChange::adding(before, quantity, max));
            }
            let change = LineChange::adding(0, quantity, max);
            let inserted = conn
                .transaction(|conn| NewCartItem { user_id, product_id, quantity: change.after }.insert(conn));
            match inserted {
                Ok(()) => Ok(change),
                Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    let before = Self::lock(conn, user_id, product_id)?.ok_or(Error::NotFound)?;
                    Self::increase(conn, user_id, product_id, LineChange::adding(before, quantity, max))
                }
                Err(other) => Err(other),
            }
        })
    }

    /// Locks the line for the rest of the transaction and returns its quantity, if it exists.
    fn lock(conn: &mut DbConnection, user_id: i32, product_id: i32) -> QueryResult<Option<i32>> {
        let line = cart_items::table.find((user_id, product_id));
        let locked = diesel::update(line).set(cart_items::quantity.eq(cart_items::quantity)).execute(conn)?;
        if locked == 0 {
            return Ok(None);
        }
        line.select(cart_items::quantity).first(conn).map(Some)
    }

    fn increase(
        conn: &mut DbConnection,
        user_id: i32,
        product_id: i32,
        change: LineChange,
    ) -> QueryResult<LineChange> {
        if change.after != change.before {
            diesel::update(cart_items::table.find((user_id, product_id)))
                .set(cart_items::quantity.eq(change.after))
                .execute(conn)?;
        }
        Ok(change)
    }

    /// The lines of `user_id`'s cart with their products, in catalogue order.
    pub fn list_with_products(
        conn: &mut DbConnection,
        user_id: i32,
    ) -> QueryResult<Vec<(CartItem, Product)>> {
        cart_items::table
            .inner_join(products::table)
            .filter(cart_items::user_id.eq(user_id))
            .order(products::id.asc())
            .select((CartItem::as_select(), Product::as_select()))
            .load(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::LineChange;

    #[test]
    fn quantities_add_up_to_the_cap_and_never_shrink() {
        assert_eq!(LineChange::adding(0, 5, 99), LineChange { before: 0, after: 5 });
        assert_eq!(LineChange::adding(95, 10, 99), LineChange { before: 95, after: 99 });
        assert_eq!(LineChange::adding(99, 1, 99).added(), 0);
        assert_eq!(LineChange::adding(120, 5, 99).after, 120, "a line above a lowered cap stays");
        assert_eq!(LineChange::adding(i32::MAX - 1, 5, i32::MAX).after, i32::MAX);
    }
}
