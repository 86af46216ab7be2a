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

use actix_web::http::header::USER_AGENT;
use actix_web::HttpRequest;
use chrono::NaiveDateTime;
use latchkey_auth::sealing::Sealer;
use latchkey_auth::Auth;
use latchkey_db::DbConnection;
use tera::{Context, Tera};
use tokio::sync::Notify;

use crate::db::{self, Pool};
use crate::error::AppError;
use crate::http::describe_user_agent;

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
        let (browser, os) = describe_user_agent(agent);
        let mut context = Context::new();
        context.insert("what", what);
        context.insert("detail", &detail);
        context.insert("when", &chrono::Utc::now().format("%-d %B %Y, %H:%M UTC").to_string());
        context.insert("ip", &ip);
        context.insert("browser", &browser);
        context.insert("os", &os);
        self.write(tera, "notice", to, context)
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
        let letter = match self.notice(tera, req, to, what, detail) {
            Ok(letter) => letter,
            Err(error) => {
                log::warn!("notice {what:?} not written: {error:?}");
                return;
            }
        };
        let mailer = self.clone();
        let now = chrono::Utc::now().naive_utc();
        match db::run(pool, move |conn| mailer.post(conn, &letter, now)).await {
            Ok(()) => self.wake(),
            Err(error) => log::warn!("notice {what:?} not posted: {}", latchkey_auth::cause_chain(&error)),
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
