//! Prometheus metrics at `/metrics`, in the OpenMetrics text format (`prometheus-client`, the
//! Prometheus project's own Rust client): requests by route pattern, method and status with
//! their latency; logins by outcome and every security event by name; throttled requests;
//! answers a failing database or Redis turned into 503; live logins; and how long password
//! hashes wait for a thread and run.
//!
//! Only `METRICS_ALLOW` addresses (loopback by default; the client address as
//! `TRUSTED_PROXIES` reveal it) or a request with `Authorization: Bearer <METRICS_TOKEN>` may
//! read them; anyone else gets a 404, as if there were nothing there.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use latchkey_auth::audit::Event;
use latchkey_auth::password::{HashObserver, HashTiming};
use latchkey_auth::Auth;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;

use crate::db;
use crate::error::AppError;
use crate::http;
use crate::settings::Secret;
use crate::state::AppState;

/// The OpenMetrics text format's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route's pattern (`/password/reset/{token}`), never the path itself, so a token or
    /// id never becomes a label; `unmatched` for a 404.
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Every metric of one running site, and who may read them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    events: Family<EventLabels, Counter>,
    logins: Family<OutcomeLabels, Counter>,
    throttled: Counter,
    store_errors: Family<StoreLabels, Counter>,
    live_logins: Gauge,
    login_cache_serving: Gauge,
    login_cache_entries: Gauge,
    session_cache_entries: Gauge,
    login_cache_misses: Counter,
    session_cache_misses: Counter,
    /// Held while the cache counters catch up with the caches' own counts, so that two
    /// scrapes at once do not both add the same reads.
    catching_up: Mutex<()>,
    hash_wait: Histogram,
    hash_duration: Histogram,
    allow: Vec<IpAddr>,
    token: Option<Secret>,
}

impl Metrics {
    /// Metrics readable from `allow` addresses, or with `token`.
    pub fn new(allow: Vec<IpAddr>, token: Option<Secret>) -> Arc<Self> {
        let mut registry = Registry::with_prefix("latchkey");
        // From 1 ms to about 16 s, doubling.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        let requests = Family::<RequestLabels, Counter>::default();
        let events = Family::<EventLabels, Counter>::default();
        let logins = Family::<OutcomeLabels, Counter>::default();
        let throttled = Counter::default();
        let store_errors = Family::<StoreLabels, Counter>::default();
        let live_logins = Gauge::default();
        let login_cache_serving = Gauge::default();
        let login_cache_entries = Gauge::default();
        let session_cache_entries = Gauge::default();
        let login_cache_misses = Counter::default();
        let session_cache_misses = Counter::default();
        let hash_wait = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let hash_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "http_requests",
            "HTTP requests by route pattern, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer, by route pattern and method",
            latency.clone(),
        );
        registry.register(
            "logins",
            "Password and passkey sign-ins by outcome (success, failure, locked)",
            logins.clone(),
        );
        registry.register("security_events", "Audit events by name and outcome", events.clone());
        registry.register(
            "login_cache_serving",
            "1 while this instance serves logins from its cache (its invalidation channel is up), else 0",
            login_cache_serving.clone(),
        );
        registry.register(
            "login_cache_entries",
            "Logins held in this instance's login cache",
            login_cache_entries.clone(),
        );
        registry.register(
            "session_cache_entries",
            "Sessions whose state this instance holds in its cache (Redis and database stores; parsed states, cookie store)",
            session_cache_entries.clone(),
        );
        registry.register(
            "login_cache_misses",
            "Login checks that found nothing in this instance's login cache and read the database (one per login at a time: the others wait for that read)",
            login_cache_misses.clone(),
        );
        registry.register(
            "session_cache_misses",
            "Requests that found no session state in this instance's cache and read the Redis or database store (one per session at a time)",
            session_cache_misses.clone(),
        );
        registry.register(
            "throttled_requests",
            "Requests refused by throttling (429, or a lock)",
            throttled.clone(),
        );
        registry.register(
            "store_errors",
            "Answers that were 503 because a backing store failed, by store (database, redis)",
            store_errors.clone(),
        );
        registry.register(
            "live_logins",
            "Logins the timeouts have not ended, of every user",
            live_logins.clone(),
        );
        registry.register(
            "password_hash_wait_seconds",
            "Time a password hash waited for a thread",
            hash_wait.clone(),
        );
        registry.register(
            "password_hash_duration_seconds",
            "Time a password hash ran",
            hash_duration.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            latency,
            events,
            logins,
            throttled,
            store_errors,
            live_logins,
            login_cache_serving,
            login_cache_entries,
            session_cache_entries,
            login_cache_misses,
            session_cache_misses,
            catching_up: Mutex::new(()),
            hash_wait,
            hash_duration,
            allow,
            token,
        })
    }

    /// Times every password hash (for `Hasher::with_observer`).
    pub fn hash_observer(self: &Arc<Self>) -> HashObserver {
        let metrics = Arc::clone(self);
        Arc::new(move |timing: HashTiming| {
            metrics.hash_wait.observe(timing.waited.as_secs_f64());
            metrics.hash_duration.observe(timing.took.as_secs_f64());
        })
    }

    /// Counts an audit event (see `Auth::with_event_observer`).
    pub fn observe_event(&self, event: Event) {
        let labels = EventLabels { event: event.name().to_owned(), outcome: event.outcome().to_owned() };
        self.events.get_or_create(&labels).inc();
        let login = match event {
            Event::AuthnLoginSuccess => Some("success"),
            Event::AuthnLoginFail => Some("failure"),
            Event::AuthnLoginLock => Some("locked"),
            _ => None,
        };
        if let Some(outcome) = login {
            self.logins.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
        }
        if event == Event::ExcessRateLimitExceeded {
            self.throttled.inc();
        }
    }

    /// Counts an answer that was 503 because `store` (`database`, `redis`) failed; see
    /// `pages::ErrorPages`, which sees every error before it becomes a page.
    pub fn count_store_error(&self, store: &str) {
        self.store_errors.get_or_create(&StoreLabels { store: store.to_owned() }).inc();
    }

    /// Middleware (for `from_fn`): counts and times every request.
    pub async fn track(
        self: Arc<Self>,
        req: ServiceRequest,
        next: Next<impl MessageBody>,
    ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
        let started = Instant::now();
        let method = req.method().as_str().to_owned();
        let result = next.call(req).await;
        let (route, status) = match &result {
            Ok(res) => (res.request().match_pattern(), res.status()),
            Err(error) => (None, error.as_response_error().status_code()),
        };
        let route = route.unwrap_or_else(|| "unmatched".to_owned());
        let labels = RequestLabels { route: route.clone(), method: method.clone(), status: status.as_u16() };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&RouteLabels { route, method }).observe(started.elapsed().as_secs_f64());
        result
    }

    /// Whether `req` may read the metrics: from an allowed address, or with the token.
    fn may_read(&self, req: &HttpRequest, auth: &Auth) -> bool {
        let allowed = auth
            .client_ip(req)
            .parse::<IpAddr>()
            .is_ok_and(|ip| self.allow.iter().any(|allowed| allowed.to_canonical() == ip.to_canonical()));
        let bearer = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let token = match (&self.token, bearer) {
            (Some(token), Some(bearer)) => {
                bool::from(token.expose().as_bytes().ct_eq(bearer.trim().as_bytes()))
            }
            _ => false,
        };
        allowed || token
    }
}

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", http::get().to(scrape));
}

/// Brings `counter` up to `count`, a total the cache keeps itself (the caches live in the
/// library crates, which know nothing of Prometheus).
fn catch_up(counter: &Counter, count: u64) {
    let shown = counter.get();
    if count > shown {
        counter.inc_by(count - shown);
    }
}

/// The metrics, for a reader allowed to see them.
async fn scrape(
    req: HttpRequest,
    metrics: web::Data<Arc<Metrics>>,
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
) -> Result<HttpResponse, AppError> {
    if !metrics.may_read(&req, &auth) {
        return Err(AppError::NotFound);
    }
    let policy = auth.policy().clone();
    let now = chrono::Utc::now().naive_utc();
    // A database that does not answer leaves the last count, and shows as store errors.
    match db::run(&state.pool, move |conn| policy.count_live(conn, now)).await {
        Ok(live) => {
            metrics.live_logins.set(live);
        }
        Err(error) => log::warn!("metrics: live logins not counted: {}", latchkey_auth::cause_chain(&error)),
    }
    metrics.login_cache_serving.set(i64::from(auth.logins().is_serving()));
    metrics.login_cache_entries.set(i64::try_from(auth.logins().len()).unwrap_or(i64::MAX));
    metrics.session_cache_entries.set(i64::try_from(state.sessions.cached_states()).unwrap_or(i64::MAX));
    {
        let _one_at_a_time = metrics.catching_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        catch_up(&metrics.login_cache_misses, auth.logins().misses());
        catch_up(&metrics.session_cache_misses, state.sessions.cache_misses());
    }
    let mut body = String::new();
    encode(&mut body, &metrics.registry).map_err(AppError::internal)?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(body))
}
