//! What a request's security events and failures do: audit records made from the request
//! (its client, request id and the application's observer), and the throttle's verdicts and
//! counts applied to it. It sits above `Auth`, the audit log and the throttle, which know
//! nothing of requests.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

use crate::audit::{acceptable_id, Event, Observer, Record, RequestId};
use crate::client::ClientInfo;
use crate::error::AuthError;
use crate::state::Auth;
use crate::throttle::{Account, Limit, ThrottlePolicy, Verdict};

impl Record {
    /// `event` now, from the client of `req` (its address as the trusted proxies reveal it).
    pub fn of(req: &HttpRequest, event: Event) -> Self {
        let auth = Auth::of(req).ok();
        let client = auth
            .map(|auth| ClientInfo::of(req, &auth.policy.trusted_proxies))
            .unwrap_or(ClientInfo { ip: None, user_agent: None });
        let observer =
            auth.and_then(|auth| auth.event_observer.clone()).map(|observer| Observer(observer, event));
        Self {
            observer,
            ip: client.ip,
            user_agent: client.user_agent.map(|ua| crate::audit::cut(&ua)),
            request_id: req.extensions().get::<RequestId>().map(|id| id.0.clone()),
            ..Self::new(event)
        }
    }
}

/// Records `record` on the blocking pool. An audit row that cannot be written does not fail
/// the request it describes: its log line is already out, and the failure is logged.
pub async fn record(req: &HttpRequest, record: Record) {
    let Ok(auth) = Auth::of(req) else {
        record.log();
        record.notify();
        return;
    };
    auth.record(record).await;
}

impl Auth {
    /// [`record`], for callers without a request (background tasks).
    pub async fn record(&self, record: Record) {
        let kept = record.clone();
        match latchkey_db::run(&self.pool, move |conn| record.insert(conn)).await {
            Ok(()) => {}
            // The insert ran (and logged and told the observer) but failed.
            Err(error @ latchkey_db::DbError::Query(_)) => {
                log::warn!("an audit event could not be stored: {}", crate::cause_chain(&error));
            }
            // It never ran: the log line and the observer still hear of the event.
            Err(error) => {
                kept.log();
                kept.notify();
                log::warn!("an audit event could not be stored: {}", crate::cause_chain(&error));
            }
        }
    }
}

/// Middleware (for `actix_web::middleware::from_fn`) that gives every request an id, sent back
/// as `X-Request-Id` and kept in audit records. A trusted proxy's `X-Request-Id` is kept, so a
/// request can be followed from the load balancer's log to ours; anyone else gets a new one.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let from_proxy = req.app_data::<actix_web::web::Data<Auth>>().and_then(|auth| {
        let peer = req.peer_addr()?.ip().to_canonical();
        auth.policy.trusted_proxies.iter().any(|proxy| proxy.to_canonical() == peer).then_some(())?;
        let id = req.headers().get("x-request-id")?.to_str().ok()?;
        acceptable_id(id).then(|| id.to_owned())
    });
    let id = from_proxy.unwrap_or_else(|| {
        let mut bytes = [0u8; 12];
        rand::rng().fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    });
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

// ---- the throttle, applied to a request ----------------------------------------------------

/// Counts this request for `action` from its client against the policy's `limit`: a 429
/// ([`AuthError::Throttled`]) once over, before any other work.
///
/// ```no_run
/// # async fn register(req: actix_web::HttpRequest) -> Result<(), latchkey_auth::AuthError> {
/// latchkey_auth::guard::limit_request(&req, "register", |policy| policy.register).await?;
/// # Ok(()) }
/// ```
pub async fn limit_request(
    req: &HttpRequest,
    action: &str,
    limit: fn(&ThrottlePolicy) -> Limit,
) -> Result<(), AuthError> {
    let auth = Auth::of(req)?;
    let ip = auth.client_ip(req);
    let verdict = auth.throttle.request(action, limit(auth.throttle.policy()), &ip).await?;
    enforce(req, verdict, action, None).await
}

/// A wrong password at the login form for `account` (typed as `email`): audited
/// (`authn_login_fail`), counted, and the lock audited (`authn_login_lock`) when this failure
/// locks the account.
pub async fn password_failed(req: &HttpRequest, account: Account<'_>, email: &str) -> Result<(), AuthError> {
    let auth = Auth::of(req)?;
    let ip = auth.client_ip(req);
    let user_id = match account {
        Account::User(id) => Some(id),
        Account::Email(_) => None,
    };
    let detail = if user_id.is_some() { "wrong password" } else { "no account has this email" };
    record(req, Record::of(req, Event::AuthnLoginFail).maybe_user(user_id).detail(detail)).await;
    if auth.throttle.login_failed(account, email, &ip).await? {
        audit_lock(req, user_id).await;
    }
    Ok(())
}

/// A wrong proof of identity by `user_id` other than the login form's password (a
/// re-authentication, a second-factor code): audited as `event`, counted against the account,
/// and the lock audited when this failure locks it.
pub async fn proof_failed(
    req: &HttpRequest,
    user_id: i32,
    event: Event,
    detail: &str,
) -> Result<(), AuthError> {
    let auth = Auth::of(req)?;
    record(req, Record::of(req, event).user(user_id).detail(detail)).await;
    if auth.throttle.account_failed(user_id).await? {
        audit_lock(req, Some(user_id)).await;
    }
    Ok(())
}

/// This failure locked the account: audited, and the application told (to warn the owner).
async fn audit_lock(req: &HttpRequest, user_id: Option<i32>) {
    log::warn!("password login locked for an account after too many failures");
    let lock =
        Record::of(req, Event::AuthnLoginLock).maybe_user(user_id).detail("too many consecutive failures");
    record(req, lock).await;
    if let (Ok(auth), Some(user_id)) = (Auth::of(req), user_id) {
        if let Some(hook) = &auth.lock_hook {
            hook(req, user_id);
        }
    }
}

/// A verdict as the request's answer: nothing, or the error that says when to come back. A
/// refusal is audited (`excess_rate_limit_exceeded`, for `action`, of `user_id` when known).
pub async fn enforce(
    req: &HttpRequest,
    verdict: Verdict,
    action: &str,
    user_id: Option<i32>,
) -> Result<(), AuthError> {
    let error = match verdict {
        Verdict::Allowed => return Ok(()),
        Verdict::Wait(wait) => AuthError::Throttled(wait),
        Verdict::Locked => AuthError::Locked,
    };
    log::info!("throttled: {action} ({verdict:?})");
    let detail = match verdict {
        Verdict::Locked => format!("{action}: locked"),
        _ => format!("{action}: wait {}s", error.retry_after().unwrap_or(0)),
    };
    record(req, Record::of(req, Event::ExcessRateLimitExceeded).maybe_user(user_id).detail(detail)).await;
    Err(error)
}
