//! `Browser`: what a web browser does over HTTP, for every test that needs one: its own
//! cookie jar, redirects not followed (tests look at them), an optional user agent, and the
//! site's forms filled in with the CSRF token of the page they are on.

use std::sync::Arc;
use std::time::Duration;

use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{HeaderMap, HeaderValue, COOKIE};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};

use super::html::{cart_lines_in, csrf_token_in, set_cookie};

/// Long enough for any honest request; a hang fails the test instead of stalling the suite.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A kept-alive connection idle this long is not reused. The server closes one after 5 s
/// idle (actix-web's default keep-alive); a request sent on it just then finds it closed
/// (`IncompleteMessage`), which a browser would retry and reqwest does not. Tests that wait
/// for mail or a timeout hit that moment on a busy machine.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Browser {
    /// The site, `http://127.0.0.1:port`: what this browser sends as `Origin`.
    pub address: String,
    user_agent: Option<String>,
    jar: Arc<Jar>,
    client: Client,
}

impl Browser {
    /// A new browser on the site at `address`, with an empty cookie jar.
    pub fn new(address: &str, user_agent: Option<&str>) -> Browser {
        Self::build(address, user_agent, None)
    }

    /// This browser (its user agent) with `cookies` copied into it by hand: every request
    /// sends exactly that `Cookie` header, whatever the answers set.
    pub fn sending(&self, cookies: &str) -> Browser {
        Self::build(&self.address, self.user_agent.as_deref(), Some(cookies))
    }

    /// This browser, cookie jar and all, on the site at `address`: another instance of the
    /// same site, as a load balancer would send it there. Cookies do not tell ports apart.
    pub fn at(&self, address: &str) -> Browser {
        Self::with_jar(address, self.user_agent.as_deref(), None, self.jar.clone())
    }

    fn build(address: &str, user_agent: Option<&str>, cookies: Option<&str>) -> Browser {
        Self::with_jar(address, user_agent, cookies, Arc::new(Jar::default()))
    }

    fn with_jar(address: &str, user_agent: Option<&str>, cookies: Option<&str>, jar: Arc<Jar>) -> Browser {
        let mut headers = HeaderMap::new();
        if let Some(cookies) = cookies {
            // reqwest adds the jar's cookies only to requests without a Cookie header.
            headers.insert(COOKIE, HeaderValue::from_str(cookies).expect("a valid Cookie header"));
        }
        let mut builder = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers);
        if let Some(user_agent) = user_agent {
            builder = builder.user_agent(user_agent);
        }
        let client = builder.build().expect("HTTP client");
        Browser { address: address.to_owned(), user_agent: user_agent.map(str::to_owned), jar, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request to build by hand (headers a test forges), with this browser's cookies.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    async fn send(request: RequestBuilder) -> Response {
        // `{:?}` shows the cause (refused, reset, timed out) that reqwest's message leaves out.
        request.send().await.unwrap_or_else(|e| panic!("request failed: {e:?}"))
    }

    pub async fn get(&self, path: &str) -> Response {
        Self::send(self.request(Method::GET, path)).await
    }

    pub async fn get_html(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("body")
    }

    /// POSTs a url-encoded form as a page of the site would (same-origin `Origin`).
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.post_form_from(&self.address, path, fields).await
    }

    /// POSTs a url-encoded form as a page from `origin` would.
    pub async fn post_form_from(&self, origin: &str, path: &str, fields: &[(&str, &str)]) -> Response {
        Self::send(self.request(Method::POST, path).header("Origin", origin).form(fields)).await
    }

    /// The CSRF token of the page at `path`.
    pub async fn csrf_token(&self, path: &str) -> String {
        let response = self.get(path).await;
        let (status, location) = (response.status(), response.headers().get("location").cloned());
        let html = response.text().await.expect("body");
        if status.is_redirection() || status.is_server_error() {
            panic!("GET {path} for its CSRF token answered {status} (location {location:?}): {html:.1000}");
        }
        csrf_token_in(&html)
    }

    /// Fills in the form of the page at `page` that posts to `action`: `fields`, plus the
    /// page's CSRF token.
    pub async fn submit(&self, page: &str, action: &str, fields: &[(&str, &str)]) -> Response {
        let token = self.csrf_token(page).await;
        self.post_form(action, &with_token(fields, &token)).await
    }

    /// `submit` as a production browser does it over https. The `__Host-` cookies of
    /// production are `Secure`, which the jar keeps from plain-http sites, so the page's CSRF
    /// cookie is copied into the request by hand. Returns that cookie's `Set-Cookie` header too.
    pub async fn submit_in_production(
        &self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> (String, Response) {
        let form = self.get(page).await;
        let csrf_cookie = set_cookie(&form, "__Host-latchkey_csrf").expect("a __Host- CSRF cookie");
        let token = csrf_token_in(&form.text().await.expect("body"));
        let pair = csrf_cookie.split(';').next().unwrap_or_default();
        let response = self.sending(pair).post_form(action, &with_token(fields, &token)).await;
        (csrf_cookie, response)
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        let fields = [("email", email), ("password", password), ("password_confirm", password)];
        self.submit("/register", "/register", &fields).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.submit("/login", "/login", &[("email", email), ("password", password)]).await
    }

    /// Logs in from the login page a redirect sent the browser to, with its `next`.
    pub async fn login_with_next(&self, email: &str, password: &str, next: &str) -> Response {
        self.submit("/login", "/login", &[("email", email), ("password", password), ("next", next)]).await
    }

    /// Logs in with "Remember me" ticked.
    pub async fn login_remembered(&self, email: &str, password: &str) -> Response {
        self.submit("/login", "/login", &[("email", email), ("password", password), ("remember", "on")]).await
    }

    pub async fn logout(&self) -> Response {
        self.submit("/logout", "/logout", &[]).await
    }

    /// Saves display preferences through the form at /preferences.
    pub async fn save_preferences(&self, theme: &str, accent: &str) -> Response {
        self.submit("/preferences", "/preferences", &[("theme", theme), ("accent", accent)]).await
    }

    /// Adds to the cart through the add-to-cart form of /shop.
    pub async fn add_to_cart(&self, product_id: &str, quantity: &str) -> Response {
        self.submit("/shop", "/cart/items", &[("product_id", product_id), ("quantity", quantity)]).await
    }

    /// The cart as /cart shows it: (product id, quantity) per line.
    pub async fn cart(&self) -> Vec<(i32, i32)> {
        cart_lines_in(&self.get_html("/cart").await)
    }

    /// Whether this browser is logged in: GET /account answers 200, or 303 to the login page
    /// when it is not; any other answer fails the test. Keeps the cookies the answer sets.
    pub async fn is_logged_in(&self) -> bool {
        let status = self.get("/account").await.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::SEE_OTHER,
            "GET /account answered {status}, neither logged in (200) nor logged out (303)"
        );
        status == StatusCode::OK
    }

    /// Whether this browser turns anonymous within two seconds: for a change made by another
    /// instance or process, which reaches this instance's login cache over the invalidation
    /// channel within milliseconds, not before the other side's response.
    pub async fn turns_anonymous(&self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.is_logged_in().await {
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The `Cookie` header this browser sends to the site (from its jar).
    pub fn cookies(&self) -> String {
        let url = self.address.parse().expect("the site's URL");
        self.jar.cookies(&url).map(|v| v.to_str().expect("ascii cookies").to_owned()).unwrap_or_default()
    }

    /// The value of the cookie called `name` in this browser's jar.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.cookies().split("; ").find_map(|c| c.strip_prefix(&prefix)).map(str::to_owned)
    }

    pub fn session_cookie(&self) -> Option<String> {
        self.cookie("latchkey_session")
    }

    pub fn preferences_cookie(&self) -> Option<String> {
        self.cookie("latchkey_prefs")
    }
}

/// A form's `fields` and its `csrf_token` field.
pub fn with_token<'a>(fields: &[(&'a str, &'a str)], token: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut fields = fields.to_vec();
    fields.push(("csrf_token", token));
    fields
}

/// Forgeries of a form with `fields`, each named by its CSRF token: none, empty, made up, and
/// `foreign` (another browser's, which is genuine but not this browser's).
pub fn forged_forms<'a>(
    fields: &[(&'a str, &'a str)],
    foreign: &'a str,
) -> Vec<(&'static str, Vec<(&'a str, &'a str)>)> {
    vec![
        ("missing", fields.to_vec()),
        ("empty", with_token(fields, "")),
        ("made-up", with_token(fields, "bm90IGEgdG9rZW4")),
        ("foreign", with_token(fields, foreign)),
    ]
}
