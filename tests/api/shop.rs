//! The demo shop and guest sessions: guests get a session only when they store something, their
//! cart joins the user's database cart at login (quantities add up, capped at 99), and the
//! user's cart outlives logouts and follows them to other devices.

use latchkey::models::{CartItem, NewProduct, Product, User};
use reqwest::StatusCode;

use crate::matrix;
use crate::support::{
    cart_lines_in, forged_forms, location, redis_url, set_cookie_names, text_in, with_token, Db, Options,
    Store, TestApp, PASSWORD,
};

const PADLOCK: &str = "1"; // Brass padlock, €12.50
const KEY_RING: &str = "2"; // Key ring, €3.50
const KEY_BLANK: &str = "3"; // Key blank, €4.90
const DOOR_CHAIN: &str = "4"; // Door chain, €18.99

fn cart_total(html: &str) -> String {
    text_in(html, "#cart-total").expect("a cart total")
}

async fn a_guest_fills_a_cart(app: TestApp) {
    let shop = app.get("/shop").await;
    assert_eq!(shop.status(), StatusCode::OK);
    let html = shop.text().await.unwrap();
    assert_eq!(html.matches(r#"class="product""#).count(), 6, "the seeded catalogue");
    for text in ["Brass padlock", "€12.50", "Key ring", "€3.50", r#"action="/cart/items""#, "csrf_token"]
    {
        assert!(html.contains(text), "{text} in {html}");
    }
    assert!(html.contains(r#"href="/shop""#) && html.contains(r#"href="/cart""#), "nav links");

    let empty = app.get_html("/cart").await;
    assert!(empty.contains("Your cart is empty"), "{empty}");
    assert!(empty.contains("Log in to keep your cart across devices"), "{empty}");

    let added = app.add_to_cart(PADLOCK, "2").await;
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&added), "/cart");
    let cart = app.get_html("/cart").await;
    assert!(cart.contains("Added 2 × Brass padlock to your cart."), "{cart}");
    assert!(cart.contains("Log in to keep your cart across devices"), "{cart}");
    assert_eq!(cart_lines_in(&cart), [(1, 2)]);
    assert_eq!(cart_total(&cart), "€25.00");

    app.add_to_cart(PADLOCK, "3").await;
    app.add_to_cart(KEY_RING, " 1 ").await;
    let cart = app.get_html("/cart").await;
    assert_eq!(cart_lines_in(&cart), [(1, 5), (2, 1)], "quantities add up");
    assert!(cart.contains("€62.50"), "5 × €12.50: {cart}");
    assert_eq!(cart_total(&cart), "€66.00");
}
matrix!(a_guest_fills_a_cart);

async fn guests_who_only_look_get_no_session(app: TestApp) {
    for path in ["/", "/shop", "/cart", "/login", "/register", "/preferences", "/healthz", "/readyz"] {
        let response = app.get(path).await;
        assert!(response.status().is_success(), "{path}: {}", response.status());
        let names = set_cookie_names(&response);
        assert!(!names.iter().any(|n| n == "latchkey_session"), "{path} set {names:?}");
    }
    assert_eq!(app.session_cookie(), None);
    assert!(app.cookies().contains("latchkey_csrf="), "the CSRF cookie is separate and fine");

    // A refused add stores nothing either.
    assert_eq!(app.add_to_cart(PADLOCK, "abc").await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.session_cookie(), None);
    assert_eq!(app.session_states(), 0, "no session state in the database");

    let added = app.add_to_cart(PADLOCK, "1").await;
    assert!(set_cookie_names(&added).iter().any(|n| n == "latchkey_session"));
    assert!(app.session_cookie().is_some(), "the first add starts the session");
    let expected = if app.store == Store::Database { 1 } else { 0 };
    assert_eq!(app.session_states(), expected, "{:?}", app.store);
    assert_eq!(app.cart().await, [(1, 1)]);
}
matrix!(guests_who_only_look_get_no_session);

/// Redis is shared by every test, so this one gets a database number of its own to count keys.
#[tokio::test]
async fn guests_who_only_look_put_no_key_in_redis() {
    let url = format!("{}/9", redis_url());
    let vars = vec![("REDIS_URL", url.clone())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Redis, Options { vars, ..Options::default() }).await;
    let mut redis = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHDB").query_async::<()>(&mut redis).await.unwrap();

    for path in ["/", "/shop", "/cart", "/login"] {
        assert!(app.get(path).await.status().is_success());
    }
    assert_eq!(app.add_to_cart("999", "1").await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut redis).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    app.add_to_cart(KEY_RING, "1").await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut redis).await.unwrap();
    // The guest's session, and the count of guest sessions begun from this address.
    let (sessions, others): (Vec<_>, Vec<_>) = keys.iter().partition(|k| k.starts_with("latchkey:session:"));
    assert_eq!(sessions.len(), 1, "{keys:?}");
    assert!(
        others.iter().all(|k| k.starts_with("latchkey:throttle:") && k.contains(":guest-session:")),
        "{keys:?}"
    );
}

async fn the_guest_cart_joins_the_users_cart_at_login(app: TestApp) {
    app.create_user("ann@example.com").await;
    // Ann's cart from another device.
    let laptop = app.new_browser();
    assert_eq!(laptop.login("ann@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    laptop.add_to_cart(PADLOCK, "2").await;
    laptop.add_to_cart(KEY_BLANK, "1").await;
    laptop.add_to_cart(DOOR_CHAIN, "90").await;
    assert_eq!(laptop.cart().await, [(1, 2), (3, 1), (4, 90)]);

    // As a guest on this device.
    app.add_to_cart(PADLOCK, "3").await;
    app.add_to_cart(KEY_RING, "4").await;
    app.add_to_cart(DOOR_CHAIN, "20").await;
    assert_eq!(app.cart().await, [(1, 3), (2, 4), (4, 20)]);
    let guest_session = app.session_cookie().expect("a guest session");

    let response = app.login_with_next("ann@example.com", PASSWORD, "/cart").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/cart");
    let session = app.session_cookie().expect("a session after login");
    assert_ne!(session, guest_session, "the session id changes at login");

    // Quantities add up; the door chain is capped at 99 (90 + 20).
    let merged = [(1, 5), (2, 4), (3, 1), (4, 99)];
    let cart = app.get_html("/cart").await;
    assert_eq!(cart_lines_in(&cart), merged);
    assert!(!cart.contains("Log in to keep your cart"), "no guest note for users");
    assert_eq!(laptop.cart().await, merged, "the same cart on the other device");

    // Merged once: the guest cart is gone from the session, so logging in again adds nothing.
    app.login("ann@example.com", PASSWORD).await;
    assert_eq!(app.cart().await, merged);
}
matrix!(the_guest_cart_joins_the_users_cart_at_login);

async fn registering_keeps_the_guest_cart(app: TestApp) {
    app.add_to_cart(KEY_BLANK, "7").await;
    let guest_session = app.session_cookie().expect("a guest session");
    assert_eq!(app.register("bo@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert_ne!(app.session_cookie().expect("session"), guest_session);
    assert_eq!(app.cart().await, [(3, 7)]);

    app.logout().await;
    assert!(app.cart().await.is_empty(), "a guest again, with an empty cart");
    app.login("bo@example.com", PASSWORD).await;
    assert_eq!(app.cart().await, [(3, 7)], "kept in the database");
}
matrix!(registering_keeps_the_guest_cart);

async fn the_users_cart_survives_logout_and_follows_them(app: TestApp) {
    app.register("cy@example.com", PASSWORD).await;
    app.add_to_cart(KEY_RING, "3").await;
    assert_eq!(app.cart().await, [(2, 3)]);

    app.logout().await;
    let cart = app.get_html("/cart").await;
    assert!(cart.contains("Your cart is empty"), "logged out: {cart}");

    let phone = app.new_browser();
    phone.login("cy@example.com", PASSWORD).await;
    assert_eq!(phone.cart().await, [(2, 3)], "on another device");
    phone.add_to_cart(PADLOCK, "1").await;

    app.login("cy@example.com", PASSWORD).await;
    assert_eq!(app.cart().await, [(1, 1), (2, 3)], "back on the first device, with the phone's add");
}
matrix!(the_users_cart_survives_logout_and_follows_them);

async fn quantities_add_up_to_the_cap(app: TestApp) {
    // The user first: a guest's full line would be merged into the user's cart at registration.
    for (who, email) in [("user", Some("dee@example.com")), ("guest", None)] {
        match email {
            Some(email) => assert_eq!(app.register(email, PASSWORD).await.status(), StatusCode::SEE_OTHER),
            None => assert_eq!(app.logout().await.status(), StatusCode::SEE_OTHER),
        }
        app.add_to_cart(KEY_BLANK, "60").await;
        app.add_to_cart(KEY_BLANK, "60").await;
        let cart = app.get_html("/cart").await;
        assert_eq!(cart_lines_in(&cart), [(3, 99)], "{who}");
        assert!(cart.contains("Added 39 × Key blank to your cart: 99 is the most"), "{who}: {cart}");

        assert_eq!(app.add_to_cart(KEY_BLANK, "1").await.status(), StatusCode::SEE_OTHER);
        let cart = app.get_html("/cart").await;
        assert_eq!(cart_lines_in(&cart), [(3, 99)], "{who}");
        assert!(cart.contains("Your cart already holds 99 × Key blank"), "{who}: {cart}");
    }
}
matrix!(quantities_add_up_to_the_cap);

async fn invalid_products_and_quantities_are_422_and_change_nothing(app: TestApp) {
    let cases: [(&str, &str, &str); 10] = [
        ("999", "1", "That product is not in the shop."),
        ("0", "1", "That product is not in the shop."),
        ("abc", "1", "That product is not in the shop."),
        ("", "1", "That product is not in the shop."),
        (PADLOCK, "0", "Enter a quantity from 1 to 99"),
        (PADLOCK, "100", "Enter a quantity from 1 to 99"),
        (PADLOCK, "-3", "Enter a quantity from 1 to 99"),
        (PADLOCK, "1.5", "Enter a quantity from 1 to 99"),
        (PADLOCK, "abc", "Enter a quantity from 1 to 99"),
        (PADLOCK, "", "Enter a quantity from 1 to 99"),
    ];
    for (who, email) in [("guest", None), ("user", Some("eve@example.com"))] {
        if let Some(email) = email {
            app.register(email, PASSWORD).await;
        }
        app.add_to_cart(KEY_RING, "2").await;
        let before = app.cart().await;
        for (product, quantity, message) in cases {
            let response = app.add_to_cart(product, quantity).await;
            assert_eq!(
                response.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{who}: {product:?} × {quantity:?}"
            );
            let html = response.text().await.unwrap();
            assert!(html.contains(message), "{who}: {product:?} × {quantity:?}: {html}");
            assert!(html.contains("Nothing was added to your cart."), "{html}");
        }
        let both = app.add_to_cart("abc", "abc").await;
        assert_eq!(both.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = both.text().await.unwrap();
        assert!(html.contains("not in the shop") && html.contains("Enter a quantity"), "{html}");
        let missing = app.submit("/shop", "/cart/items", &[]).await;
        assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY, "{who}: no fields");
        assert_eq!(app.cart().await, before, "{who}: nothing changed");
        assert!(!app.get_html("/cart").await.contains("Added"), "{who}: no flash");
    }
}
matrix!(invalid_products_and_quantities_are_422_and_change_nothing);

async fn adding_without_a_valid_csrf_token_is_403_and_changes_nothing(app: TestApp) {
    let foreign = app.new_browser().csrf_token("/shop").await;
    for (who, email) in [("guest", None), ("user", Some("fay@example.com"))] {
        if let Some(email) = email {
            app.register(email, PASSWORD).await;
            app.add_to_cart(PADLOCK, "1").await;
        }
        let before = app.cart().await;
        let session = app.session_cookie();
        let fields = [("product_id", KEY_RING), ("quantity", "1")];
        for (what, forged) in forged_forms(&fields, &foreign) {
            let response = app.post_form("/cart/items", &forged).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{who}: {what} token");
        }
        let own = app.csrf_token("/shop").await;
        let valid = with_token(&fields, &own);
        let cross_site = app.post_form_from("https://evil.example", "/cart/items", &valid).await;
        assert_eq!(cross_site.status(), StatusCode::FORBIDDEN, "{who}: foreign origin");
        assert_eq!(app.cart().await, before, "{who}: nothing changed");
        assert_eq!(app.session_cookie(), session, "{who}: no session started or changed");
    }
}
matrix!(adding_without_a_valid_csrf_token_is_403_and_changes_nothing);

async fn a_guest_cart_holds_twenty_products(app: TestApp) {
    let mut conn = app.connection();
    for n in 0..15 {
        let name = format!("Test product {n}");
        NewProduct { name: &name, description: "Extra stock for the test.", price_cents: 100 }
            .insert(&mut conn)
            .unwrap();
    }
    let ids: Vec<i32> = Product::all(&mut conn).unwrap().iter().map(|p| p.id).collect();
    drop(conn);
    assert_eq!(ids.len(), 21);

    for id in &ids[..20] {
        let response = app.add_to_cart(&id.to_string(), "99").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "product {id}");
    }
    let full = app.cart().await;
    assert_eq!(full.len(), 20);
    if app.store == Store::Cookie {
        let cookie = app.session_cookie().unwrap();
        assert!(cookie.len() < 1500, "well under the 4 KB cookie limit: {} bytes", cookie.len());
    }

    let refused = app.add_to_cart(&ids[20].to_string(), "1").await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = refused.text().await.unwrap();
    assert!(html.contains("A guest cart holds at most 20 different products"), "{html}");
    assert_eq!(app.cart().await, full, "nothing dropped, nothing added");
    assert_eq!(
        app.add_to_cart(&ids[0].to_string(), "1").await.status(),
        StatusCode::SEE_OTHER,
        "a line in the cart"
    );

    // A user's cart, in the database, has no such limit.
    app.register("gus@example.com", PASSWORD).await;
    assert_eq!(app.add_to_cart(&ids[20].to_string(), "1").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.cart().await.len(), 21);
}
matrix!(a_guest_cart_holds_twenty_products);

/// Many adds at once to one user's cart all count, and the cap holds, on both databases: the
/// first adds race to insert the line.
#[tokio::test]
async fn concurrent_adds_all_count() {
    for db in [Db::Sqlite, Db::Postgres] {
        let app = TestApp::spawn(db, Store::Cookie).await;
        app.register("hal@example.com", PASSWORD).await;
        let token = app.csrf_token("/shop").await;
        let add = |product: &'static str, quantity: &'static str| {
            let token = token.clone();
            let app = &app;
            async move {
                app.post_form(
                    "/cart/items",
                    &[("product_id", product), ("quantity", quantity), ("csrf_token", &token)],
                )
                .await
                .status()
            }
        };
        let ones = futures_util::future::join_all((0..12).map(|_| add(KEY_RING, "1"))).await;
        let fifteens = futures_util::future::join_all((0..10).map(|_| add(DOOR_CHAIN, "15"))).await;
        for status in ones.iter().chain(&fifteens) {
            assert_eq!(*status, StatusCode::SEE_OTHER, "{db:?}");
        }
        assert_eq!(app.cart().await, [(2, 12), (4, 99)], "{db:?}");
    }
}

/// The race behind `CartItem::add`, without HTTP in between: threads add to the same new lines
/// at the same moment, so on PostgreSQL several inserts collide and must become adds.
#[tokio::test]
async fn simultaneous_adds_to_a_new_line_all_count() {
    const THREADS: usize = 8;
    for db in [Db::Sqlite, Db::Postgres] {
        let app = TestApp::spawn(db, Store::Cookie).await;
        app.create_user("ida@example.com").await;
        let user_id = User::find_by_email(&mut app.connection(), "ida@example.com").unwrap().unwrap().id;
        let barrier = std::sync::Barrier::new(THREADS);
        let results: Vec<Vec<_>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let mut conn = app.connection();
                    let barrier = &barrier;
                    // Every thread reaches every barrier, whatever its adds return.
                    scope.spawn(move || {
                        (1..=6)
                            .map(|product_id| {
                                barrier.wait();
                                CartItem::add(&mut conn, user_id, product_id, 1, 99)
                            })
                            .collect()
                    })
                })
                .collect();
            threads.into_iter().map(|thread| thread.join().unwrap()).collect()
        });
        for result in results.iter().flatten() {
            assert!(result.is_ok(), "{db:?}: {result:?}");
        }
        let lines = CartItem::list_with_products(&mut app.connection(), user_id).unwrap();
        let quantities: Vec<(i32, i32)> =
            lines.iter().map(|(item, _)| (item.product_id, item.quantity)).collect();
        assert_eq!(quantities, (1..=6).map(|id| (id, THREADS as i32)).collect::<Vec<_>>(), "{db:?}");
    }
}
