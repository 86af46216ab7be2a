//! Reading what the site answers: values in its pages, and the headers of its responses.

use reqwest::Response;
use scraper::{Html, Selector};

fn selector(css: &str) -> Selector {
    Selector::parse(css).unwrap_or_else(|e| panic!("selector {css}: {e}"))
}

/// The `attribute` of the first element matching `css`.
pub fn attribute_in(html: &str, css: &str, attribute: &str) -> Option<String> {
    let document = Html::parse_document(html);
    document.select(&selector(css)).next().and_then(|e| e.value().attr(attribute)).map(str::to_owned)
}

/// The text of the first element matching `css`, trimmed.
pub fn text_in(html: &str, css: &str) -> Option<String> {
    let document = Html::parse_document(html);
    document.select(&selector(css)).next().map(|e| e.text().collect::<String>().trim().to_owned())
}

/// The CSRF token of a page: its form field, or the layout's `<meta name="csrf-token">`.
pub fn csrf_token_in(html: &str) -> String {
    attribute_in(html, r#"input[name="csrf_token"]"#, "value")
        .or_else(|| attribute_in(html, r#"meta[name="csrf-token"]"#, "content"))
        .unwrap_or_else(|| panic!("no CSRF token on the page:\n{html:.2000}"))
}

/// The lines of a cart page: (product id, quantity) per line, in page order.
pub fn cart_lines_in(html: &str) -> Vec<(i32, i32)> {
    let document = Html::parse_document(html);
    document
        .select(&selector("tr.cart-line"))
        .map(|row| {
            let number = |name| row.value().attr(name).and_then(|v| v.parse().ok()).expect(name);
            (number("data-product-id"), number("data-quantity"))
        })
        .collect()
}

/// The `Location` header of a redirect.
pub fn location(response: &Response) -> String {
    response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .expect("ascii location")
        .to_owned()
}

fn set_cookies(response: &Response) -> impl Iterator<Item = &str> {
    response.headers().get_all("set-cookie").iter().map(|v| v.to_str().expect("ascii Set-Cookie"))
}

/// The `Set-Cookie` header for the cookie called `name`, if the response sets one.
pub fn set_cookie(response: &Response, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    set_cookies(response).find(|c| c.starts_with(&prefix)).map(str::to_owned)
}

/// The names of the cookies the response sets.
pub fn set_cookie_names(response: &Response) -> Vec<String> {
    set_cookies(response).filter_map(|c| c.split('=').next()).map(str::to_owned).collect()
}
