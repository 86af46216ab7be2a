//! Email: messages rendered from `templates/email/`, put in the `outbox` table (in the same
//! transaction as the change they announce), and sent by a background task ([`sender`](crate::mail::sender)), so no
//! page waits on SMTP and a slow or absent mail server changes neither a page's answer nor its
//! timing.
//!
//! Bodies are sealed at rest (they may hold a link with a token), under a key derived from
//! `SECRET_KEY`. Links are built from `PUBLIC_URL`, never from the request's `Host`.

pub mod outbox;
pub mod sender;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::USER_AGENT;
use actix_web::HttpRequest;
use chrono::{NaiveDateTime, TimeDelta, Utc};
use latchkey_auth::sealing::Sealer;
use latchkey_auth::Auth;
use latchkey_db::DbConnection;
use tera::{Context, Tera};
use tokio::sync::Notify;

use crate::db::{self, Pool};
use crate::error::{wait_in_words, AppError};
use crate::http::{describe_user_agent, DATE_FORMAT};

/// A message, rendered and addressed, not yet in the outbox.
#[derive(Clone)]
pub struct Letter {
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl std::fmt::Debug for Letter {
    /// Leaves the body out: it may hold a link with a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Letter").field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// A letter carrying a new single-use link (a path ending in a fresh token), not yet in the
/// outbox; the caller stores the token's hash and posts the letter in one transaction.
pub struct LinkLetter {
    pub token: String,
    pub letter: Letter,
    pub now: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

/// Writes letters and posts them to the outbox; shared by every handler (in `AppState`) and
/// the sender.
#[derive(Clone)]
pub struct Mailer {
    sealer: Sealer,
    public_url: String,
    wake: Arc<Notify>,
}

impl Mailer {
    /// A mailer sealing bodies with `sealer`, linking to `public_url`.
    pub fn new(sealer: Sealer, public_url: &str) -> Self {
        Self {
            sealer,
            public_url: public_url.trim_end_matches('/').to_owned(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The absolute link to `path` on this site.
    pub fn link(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// Renders `templates/email/<name>.txt` for `to`. The template's first line is the
    /// subject, `Subject: …`; the rest, after a blank line, the body. Every template gets
    /// `site_url`.
    pub fn write(&self, tera: &Tera, name: &str, to: &str, mut context: Context) -> Result<Letter, AppError> {
        context.insert("site_url", &self.public_url);
        let text = tera.render(&format!("email/{name}.txt"), &context).map_err(AppError::internal)?;
        let (first, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let subject = first.strip_prefix("Subject:").ok_or_else(|| {
            AppError::internal(anyhow::anyhow!("email/{name}.txt must begin with Subject:"))
        })?;
        Ok(Letter {
            to: to.to_owned(),
            subject: subject.trim().to_owned(),
            body: body.trim_start().to_owned(),
        })
    }

    /// Renders `templates/email/<name>.txt` for `to` with a new link, `path` followed by a
    /// fresh token (`link`), that works for `ttl` (`valid_for`, in words).
    pub fn write_link(
        &self,
        tera: &Tera,
        (name, to): (&str, &str),
        (path, ttl): (&str, Duration),
        mut context: Context,
    ) -> Result<LinkLetter, AppError> {
        let now = Utc::now().naive_utc();
        let expires_at = now + TimeDelta::from_std(ttl).unwrap_or(TimeDelta::MAX);
        let token = crate::models::new_link_token();
        context.insert("link", &self.link(&format!("{path}{token}")));
        context.insert("valid_for", &wait_in_words(ttl.as_secs()));
        let letter = self.write(tera, name, to, context)?;
        Ok(LinkLetter { token, letter, now, expires_at })
    }

    /// A notice to `to` that `what` ("Your password was changed") just happened to their
    /// account, from this request's address and browser, with where to look if it was not
    /// them.
    pub fn notice(
        &self,
        tera: &Tera,
        req: &HttpRequest,
        to: &str,
        what: &str,
        detail: Option<&str>,
    ) -> Result<Letter, AppError> {
        let ip = Auth::of(req)?.client_ip(req);
        let agent = req.headers().get(USER_AGENT).and_then(|value| value.to_str().ok());
        let mut context = Context::new();
        context.insert("what", what);
        context.insert("detail", &detail);
        self.write(tera, "notice", to, with_client(context, Utc::now().naive_utc(), &ip, agent))
    }

    /// Posts `letter` outside any other change; it never fails the caller: a letter that
    /// cannot be posted is logged instead.
    pub async fn send(&self, pool: &Pool, letter: Letter) {
        let mailer = self.clone();
        let now = Utc::now().naive_utc();
        let subject = letter.subject.clone();
        match db::run(pool, move |conn| mailer.post(conn, &letter, now)).await {
            Ok(()) => self.wake(),
            Err(error) => log::warn!("mail {subject:?} not posted: {}", latchkey_auth::cause_chain(&error)),
        }
    }

    /// Posts a [`Mailer::notice`] of a change already made. It never fails the request: a
    /// notice that cannot be written or posted is logged instead.
    pub async fn announce(
        &self,
        pool: &Pool,
        tera: &Tera,
        req: &HttpRequest,
        to: &str,
        (what, detail): (&str, Option<&str>),
    ) {
        match self.notice(tera, req, to, what, detail) {
            Ok(letter) => self.send(pool, letter).await,
            Err(error) => log::warn!("notice {what:?} not written: {error:?}"),
        }
    }

    /// Puts `letter` in the outbox; call inside the transaction of the change it announces,
    /// then [`Mailer::wake`] once committed.
    pub fn post(
        &self,
        conn: &mut DbConnection,
        letter: &Letter,
        now: NaiveDateTime,
    ) -> diesel::QueryResult<()> {
        outbox::NewMessage {
            created_at: now,
            recipient: &letter.to,
            subject: &letter.subject,
            body: &self.sealer.seal(letter.body.as_bytes()),
            attempts: 0,
            next_attempt_at: now,
        }
        .insert(conn)
    }

    /// Tells this instance's sender that the outbox has mail (others find it on their next
    /// look, within a second).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The body of a sealed message, if a current or previous key sealed it.
    fn open(&self, sealed: &str) -> Option<String> {
        self.sealer.open(sealed).and_then(|opened| String::from_utf8(opened.plain).ok())
    }
}

/// `context` with when and from where something happened, as the notices show it: `when`,
/// `ip`, `browser` and `os`.
pub fn with_client(mut context: Context, at: NaiveDateTime, ip: &str, user_agent: Option<&str>) -> Context {
    let (browser, os) = describe_user_agent(user_agent);
    context.insert("when", &at.format(DATE_FORMAT).to_string());
    context.insert("ip", ip);
    context.insert("browser", &browser);
    context.insert("os", &os);
    context
}
