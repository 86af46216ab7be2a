//! The demo shop: the catalogue, adding to the cart, and the cart. Anyone can shop; a guest's
//! cart lives in their session and joins their account's cart when they log in (`shop::cart`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use actix_web_flash_messages::FlashMessage;
use serde::{Deserialize, Serialize};
use tera::Context;

use crate::db;
use crate::error::AppError;
use crate::http;
use crate::models::Product;
use crate::pages::{see_other, Page};
use crate::shop::cart::{AddError, Cart};
use crate::shop::{format_price, parse_product_id, Quantity, MAX_GUEST_LINES, MAX_QUANTITY};
use crate::state::AppState;
use latchkey_auth::csrf::CsrfForm;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/shop", http::get().to(shop))
        .route("/cart", http::get().to(cart))
        .route("/cart/items", web::post().to(add_item));
}

/// A product as the shop page shows it.
#[derive(Serialize)]
struct ProductView {
    id: i32,
    name: String,
    description: String,
    price: String,
}

impl From<Product> for ProductView {
    fn from(product: Product) -> Self {
        Self {
            price: format_price(product.price_cents.into()),
            id: product.id,
            name: product.name,
            description: product.description,
        }
    }
}

async fn shop(page: Page, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    render_shop(&page, &state, StatusCode::OK, &[]).await
}

/// The shop page, with `errors` about a refused add above the products.
async fn render_shop(
    page: &Page,
    state: &AppState,
    status: StatusCode,
    errors: &[String],
) -> Result<HttpResponse, AppError> {
    let products = db::run(&state.pool, Product::all).await?;
    let products: Vec<ProductView> = products.into_iter().map(ProductView::from).collect();
    let mut context = Context::new();
    context.insert("products", &products);
    context.insert("max_quantity", &MAX_QUANTITY);
    context.insert("errors", errors);
    page.render_with_status(status, "shop.html", context)
}

/// The add-to-cart form. Fields are read as text and parsed here, so that a bad value gets a
/// message on the shop page (422) rather than a bare 400.
#[derive(Deserialize)]
struct AddItemForm {
    #[serde(default)]
    product_id: String,
    #[serde(default)]
    quantity: String,
}

async fn add_item(
    CsrfForm(form): CsrfForm<AddItemForm>,
    page: Page,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let product = match parse_product_id(&form.product_id) {
        Some(id) => db::run(&state.pool, move |conn| Product::find(conn, id)).await?,
        None => None,
    };
    let quantity = Quantity::parse(&form.quantity);
    let (product, quantity) = match (product, quantity) {
        (Some(product), Some(quantity)) => (product, quantity),
        (product, quantity) => {
            let mut errors = Vec::new();
            if product.is_none() {
                errors.push("That product is not in the shop.".to_owned());
            }
            if quantity.is_none() {
                errors.push(format!("Enter a quantity from 1 to {MAX_QUANTITY}, as a whole number."));
            }
            return render_shop(&page, &state, StatusCode::UNPROCESSABLE_ENTITY, &errors).await;
        }
    };

    let cart = Cart::of(page.request(), page.user());
    if let Cart::Guest(session) = &cart {
        if session.session().entries().is_empty() {
            // A guest's first item starts a session, which a server-side store keeps: bound
            // how many one address may start.
            latchkey_auth::guard::limit_request(page.request(), "guest-session", |policy| {
                policy.guest_session
            })
            .await?;
        }
    }
    let change = match cart.add(&state.pool, product.id, quantity).await {
        Ok(change) => change,
        Err(AddError::GuestCartFull) => {
            let errors = [format!(
                "A guest cart holds at most {MAX_GUEST_LINES} different products. \
                 Log in or register to add more: your account's cart has no such limit."
            )];
            return render_shop(&page, &state, StatusCode::UNPROCESSABLE_ENTITY, &errors).await;
        }
        Err(AddError::Failed(error)) => return Err(error),
    };

    let (added, name) = (change.added(), &product.name);
    if added == quantity.get() {
        FlashMessage::success(format!("Added {added} × {name} to your cart.")).send();
    } else if added > 0 {
        FlashMessage::warning(format!(
            "Added {added} × {name} to your cart: {MAX_QUANTITY} is the most a cart holds of one product."
        ))
        .send();
    } else {
        FlashMessage::warning(format!(
            "Your cart already holds {} × {name}, the most it holds of one product.",
            change.after
        ))
        .send();
    }
    Ok(see_other("/cart"))
}

/// One line of the cart page.
#[derive(Serialize)]
struct LineView {
    product_id: i32,
    name: String,
    unit_price: String,
    quantity: i32,
    line_total: String,
}

async fn cart(page: Page, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let lines = Cart::of(page.request(), page.user()).lines(&state.pool).await?;
    let total: i64 =
        lines.iter().map(|(product, quantity)| i64::from(product.price_cents) * i64::from(*quantity)).sum();
    let lines: Vec<LineView> = lines
        .into_iter()
        .map(|(product, quantity)| LineView {
            product_id: product.id,
            unit_price: format_price(product.price_cents.into()),
            line_total: format_price(i64::from(product.price_cents) * i64::from(quantity)),
            quantity,
            name: product.name,
        })
        .collect();
    let mut context = Context::new();
    context.insert("lines", &lines);
    context.insert("item_count", &lines.iter().map(|line| i64::from(line.quantity)).sum::<i64>());
    context.insert("total", &format_price(total));
    page.render("cart.html", context)
}
