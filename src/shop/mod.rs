//! The demo shop's rules: how much of one product a cart holds, how many products a guest's
//! cart holds, and how prices read. Where carts live, and how a guest's cart joins the user's
//! at login, is in `cart`.

pub mod cart;

/// The most of one product a cart holds. Adding more fills the line up to it; so does the
/// merge of a guest's cart at login.
pub const MAX_QUANTITY: i32 = 99;

/// The most different products a guest's cart holds. It lives in the session, which the cookie
/// store keeps inside the cookie (`latchkey_sessions::COOKIE_STATE_LIMIT`, for browsers' 4 KB): twenty
/// lines take at most about 320 bytes. Users' carts are rows in the database, with no limit.
pub const MAX_GUEST_LINES: usize = 20;

/// An amount to add to a cart: a whole number from 1 to `MAX_QUANTITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    /// Parses what was typed into a quantity field.
    pub fn parse(raw: &str) -> Option<Self> {
        raw.trim().parse::<i32>().ok().filter(|n| (1..=MAX_QUANTITY).contains(n)).map(Self)
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// Parses a product id from a form field (whether it names a product is for the database).
pub fn parse_product_id(raw: &str) -> Option<i32> {
    raw.trim().parse::<i32>().ok().filter(|id| *id > 0)
}

/// A price in euro cents as people read it: `€12.50`.
pub fn format_price(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}€{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_whole_numbers_from_one_to_the_cap() {
        assert_eq!(Quantity::parse("1").map(Quantity::get), Some(1));
        assert_eq!(Quantity::parse(" 99 ").map(Quantity::get), Some(99));
        for bad in ["", "0", "-1", "100", "abc", "1.5", "2147483648"] {
            assert_eq!(Quantity::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn prices_read_as_euros_and_cents() {
        assert_eq!(format_price(1250), "€12.50");
        assert_eq!(format_price(5), "€0.05");
        assert_eq!(format_price(0), "€0.00");
        assert_eq!(format_price(123_456), "€1234.56");
        assert_eq!(format_price(-350), "-€3.50");
    }
}
