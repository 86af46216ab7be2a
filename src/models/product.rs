//! The `products` table: the demo shop's catalogue, seeded by its migration.

use diesel::prelude::*;

use crate::db::schema::products;
use latchkey_db::DbConnection;

/// A product on sale. Prices are in euro cents.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = products)]
pub struct Product {
    pub id: i32,
    pub name: String,
    pub description: String,
    pub price_cents: i32,
}

#[derive(Insertable)]
#[diesel(table_name = products)]
pub struct NewProduct<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub price_cents: i32,
}

impl NewProduct<'_> {
    pub fn insert(&self, conn: &mut DbConnection) -> QueryResult<()> {
        diesel::insert_into(products::table).values(self).execute(conn).map(drop)
    }
}

impl Product {
    /// The whole catalogue, in catalogue (id) order.
    pub fn all(conn: &mut DbConnection) -> QueryResult<Vec<Product>> {
        products::table.order(products::id.asc()).select(Product::as_select()).load(conn)
    }

    pub fn find(conn: &mut DbConnection, id: i32) -> QueryResult<Option<Product>> {
        products::table.find(id).select(Product::as_select()).first(conn).optional()
    }

    /// The products among `ids` that exist, in id order.
    pub fn find_many(conn: &mut DbConnection, ids: &[i32]) -> QueryResult<Vec<Product>> {
        products::table
            .filter(products::id.eq_any(ids))
            .order(products::id.asc())
            .select(Product::as_select())
            .load(conn)
    }
}
