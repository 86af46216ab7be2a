//! `Auth`: the auth layer's shared state, registered once as `web::Data<Auth>`, and its one
//! lookup, [`Auth::of`].

use std::sync::Arc;

use actix_web::{web, HttpRequest};
use diesel::QueryResult;
use latchkey_db::{DbConnection, DbError, Pool};

use crate::cache::LoginCache;
use crate::error::AuthError;
use crate::passkeys::RelyingParty;
use crate::password::Hasher;
use crate::rules::LoginPolicy;
use crate::second_factor::FactorKeys;
use crate::throttle::Throttle;

/// Work to run in a login's transaction, given the user's id.
pub type LoginWork = Box<dyn FnOnce(&mut DbConnection, i32) -> QueryResult<()> + Send>;

/// Work an application does inside the transaction that records a login: the login and the
/// work commit together or not at all. latchkey's shop moves a guest's cart into the user's
/// this way, without the auth layer knowing carts exist.
pub trait LoginHook: Send + Sync + 'static {
    /// Called on the request before the transaction; returns the work to run in it, given the
    /// user's id.
    fn prepare(&self, req: &HttpRequest) -> LoginWork;

    /// Called once the transaction has committed.
    fn committed(&self, _req: &HttpRequest) {}
}

/// What the extractors and `log_in`/`log_out` need; see the crate docs for registering it.
pub struct Auth {
    pub(crate) pool: Pool,
    /// Shared with the blocking pool's closures, so a check does not copy it.
    pub(crate) policy: Arc<LoginPolicy>,
    pub(crate) hasher: Hasher,
    pub(crate) csrf_key: Vec<u8>,
    /// The key being rotated out: tokens derived from it are still accepted.
    pub(crate) csrf_key_previous: Option<Vec<u8>>,
    pub(crate) production: bool,
    pub(crate) factor_keys: Option<FactorKeys>,
    pub(crate) passkeys: RelyingParty,
    pub(crate) throttle: Throttle,
    pub(crate) hook: Option<Arc<dyn LoginHook>>,
    pub(crate) event_observer: Option<crate::audit::EventObserver>,
    pub(crate) lock_hook: Option<LockHook>,
    pub(crate) logins: LoginCache,
}

/// Called with the request and the user when a failure locks password login for an account
/// (see [`Auth::with_lock_hook`]).
pub type LockHook = Arc<dyn Fn(&HttpRequest, i32) + Send + Sync>;

impl Auth {
    /// `csrf_key` derives form tokens (keep it secret and apart from other keys);
    /// `production` turns on `Secure` and `__Host-` cookies.
    pub fn new(
        pool: Pool,
        policy: LoginPolicy,
        hasher: Hasher,
        csrf_key: impl Into<Vec<u8>>,
        production: bool,
    ) -> Self {
        Self {
            pool,
            policy: Arc::new(policy),
            hasher,
            csrf_key: csrf_key.into(),
            csrf_key_previous: None,
            production,
            factor_keys: None,
            passkeys: RelyingParty::Off("passkeys are not configured (Auth::with_passkeys)".into()),
            throttle: Throttle::off(),
            hook: None,
            event_observer: None,
            lock_hook: None,
            logins: LoginCache::off(),
        }
    }

    /// Turns on second factors (TOTP and recovery codes), kept under `keys`.
    pub fn with_second_factors(mut self, keys: FactorKeys) -> Self {
        self.factor_keys = Some(keys);
        self
    }

    /// The keys of second factors, if they are on.
    pub fn factor_keys(&self) -> Result<&FactorKeys, AuthError> {
        self.factor_keys.as_ref().ok_or_else(|| {
            AuthError::internal(anyhow::anyhow!(
                "second factors are not configured (Auth::with_second_factors)"
            ))
        })
    }

    /// Turns on passkeys for `party` (see [`RelyingParty::for_origin`]); an `Off` party keeps
    /// them off, with its reason.
    pub fn with_passkeys(mut self, party: RelyingParty) -> Self {
        self.passkeys = party;
        self
    }

    /// Throttles guesses with `throttle` (see [`crate::throttle`]); without it nothing is
    /// throttled.
    pub fn with_throttle(mut self, throttle: Throttle) -> Self {
        self.throttle = throttle;
        self
    }

    /// Calls `hook` when a failure locks password login for an account, to tell its owner.
    /// It runs on the request's path: start any slow work (an email) in a task of its own.
    pub fn with_lock_hook(mut self, hook: LockHook) -> Self {
        self.lock_hook = Some(hook);
        self
    }

    /// Tells `observer` of every audit event recorded for a request (to count them as
    /// metrics).
    pub fn with_event_observer(mut self, observer: crate::audit::EventObserver) -> Self {
        self.event_observer = Some(observer);
        self
    }

    /// Serves logged-in requests from `cache` (see [`crate::cache`]); without it every request
    /// checks its login in the database.
    pub fn with_login_cache(mut self, cache: LoginCache) -> Self {
        self.logins = cache;
        self
    }

    /// The login cache: tell it whenever a login or its user changes
    /// ([`LoginCache::forget_user`]).
    pub fn logins(&self) -> &LoginCache {
        &self.logins
    }

    /// The throttle.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The client's IP address as the login policy's trusted proxies reveal it (`unknown`
    /// when the peer is not known), for throttling and records.
    pub fn client_ip(&self, req: &HttpRequest) -> String {
        crate::client::ClientInfo::of(req, &self.policy.trusted_proxies)
            .ip
            .unwrap_or_else(|| "unknown".into())
    }

    /// The relying party passkeys use, or why they are off.
    pub fn passkeys(&self) -> &RelyingParty {
        &self.passkeys
    }

    /// Also accepts CSRF tokens derived from `key`, the key being rotated out, while pages
    /// made under it are still open in browsers. New tokens always come from the current key.
    pub fn with_previous_csrf_key(mut self, key: Option<impl Into<Vec<u8>>>) -> Self {
        self.csrf_key_previous = key.map(Into::into);
        self
    }

    /// Runs `hook` in every login's transaction.
    pub fn with_login_hook(mut self, hook: impl LoginHook) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The `Auth` registered with the app.
    pub fn of(req: &HttpRequest) -> Result<&Auth, AuthError> {
        req.app_data::<web::Data<Auth>>()
            .map(|data| data.get_ref())
            .ok_or_else(|| AuthError::internal(anyhow::anyhow!("latchkey_auth::Auth is not registered")))
    }

    /// The login policy every request is checked against.
    pub fn policy(&self) -> &LoginPolicy {
        &self.policy
    }

    /// The password hasher.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The pool holding the login registry.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether cookies are `Secure` and `__Host-` prefixed.
    pub fn is_production(&self) -> bool {
        self.production
    }

    /// Deletes logins the timeouts have ended (run it periodically).
    pub async fn purge_expired(&self) -> Result<usize, DbError> {
        let policy = Arc::clone(&self.policy);
        let now = chrono::Utc::now().naive_utc();
        latchkey_db::run(&self.pool, move |conn| policy.purge_expired(conn, now)).await
    }
}
