//! The background task that empties the outbox: through SMTP (`SMTP_URL`), or in development
//! without it into `.eml` files (`OUTBOX_DIR`). A failed attempt is tried again after
//! `MAIL_RETRY`, doubling each time, up to `MAIL_MAX_ATTEMPTS`; then the message is given up
//! and logged. Every instance runs one; each message is claimed by one sender at a time.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::outbox::{self, Message};
use super::Mailer;
use crate::db::{self, Pool};
use crate::settings::MailSettings;

/// Messages claimed per look at the outbox.
const BATCH: i64 = 10;
/// How often the outbox is looked at without a wake-up (mail posted by another instance).
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts at a message.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Where mail goes.
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>, std::path::PathBuf),
}

/// How the sender was set up, for the start-up log.
pub enum Started {
    Smtp,
    Files(std::path::PathBuf),
    /// Production without `SMTP_URL`: mail waits in the outbox.
    Held,
}

/// Starts the sender for `settings`: SMTP with `SMTP_URL`; without it, files in development
/// and nothing in production (the outbox keeps the mail until a server with `SMTP_URL` sends
/// it).
pub fn spawn(
    pool: Pool,
    mailer: Mailer,
    settings: &MailSettings,
    production: bool,
) -> anyhow::Result<Started> {
    let from: Mailbox = settings.from.parse()?;
    let (transport, started) = match &settings.smtp_url {
        Some(url) => {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                .map_err(|e| anyhow::anyhow!("invalid SMTP_URL: {e}"))?
                .timeout(Some(settings.smtp_timeout))
                .build();
            (Transport::Smtp(transport), Started::Smtp)
        }
        None if production => return Ok(Started::Held),
        None => {
            let dir = settings.outbox_dir.clone();
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create OUTBOX_DIR {}: {e}", dir.display()))?;
            (Transport::Files(AsyncFileTransport::new(&dir), dir.clone()), Started::Files(dir))
        }
    };
    let sender = Sender {
        pool,
        mailer,
        from,
        transport,
        timeout: settings.smtp_timeout,
        retry: settings.retry,
        max_attempts: settings.max_attempts,
    };
    tokio::spawn(sender.run());
    Ok(started)
}

struct Sender {
    pool: Pool,
    mailer: Mailer,
    from: Mailbox,
    transport: Transport,
    timeout: Duration,
    retry: Duration,
    max_attempts: u32,
}

impl Sender {
    async fn run(self) {
        loop {
            let now = Utc::now().naive_utc();
            // A claim outlives the longest attempt, so a sender that dies mid-way releases its
            // messages to the others.
            let claim_until = now + delta(self.timeout * 2 + Duration::from_secs(10));
            let claimed =
                db::run(&self.pool, move |conn| outbox::claim_due(conn, now, claim_until, BATCH)).await;
            let batch = match claimed {
                Ok(batch) => batch,
                Err(error) => {
                    log::warn!("mail: cannot read the outbox: {}", latchkey_auth::cause_chain(&error));
                    Vec::new()
                }
            };
            let full = batch.len() as i64 == BATCH;
            for message in batch {
                self.attempt(message).await;
            }
            if !full {
                let _ = tokio::time::timeout(POLL, self.mailer.wake.notified()).await;
            }
        }
    }

    /// One attempt at `message`: gone from the outbox when sent, otherwise due again later.
    async fn attempt(&self, message: Message) {
        let id = message.id;
        let attempts = message.attempts + 1;
        let outcome = match self.build(&message) {
            Ok(email) => self.send(email).await,
            // A message that cannot be built never will be: give it up now.
            Err(error) => {
                log::error!("mail #{id}: giving up, it cannot be built: {error}");
                self.finish(id).await;
                return;
            }
        };
        match outcome {
            Ok(Some(file)) => {
                log::info!("mail #{id} to {} written to {}", message.recipient, file.display());
                self.finish(id).await;
            }
            Ok(None) => {
                log::info!("mail #{id} sent");
                self.finish(id).await;
            }
            Err(error) if attempts as u32 >= self.max_attempts => {
                log::error!("mail #{id}: giving up after {attempts} attempt(s): {error}");
                self.finish(id).await;
            }
            Err(error) => {
                let wait = backoff(self.retry, attempts);
                log::warn!(
                    "mail #{id}: attempt {attempts} failed ({error}); trying again in {}s",
                    wait.as_secs()
                );
                let at = Utc::now().naive_utc() + delta(wait);
                let retried = db::run(&self.pool, move |conn| outbox::retry_at(conn, id, attempts, at)).await;
                if let Err(error) = retried {
                    log::warn!(
                        "mail #{id}: cannot record the attempt: {}",
                        latchkey_auth::cause_chain(&error)
                    );
                }
            }
        }
    }

    fn build(&self, message: &Message) -> anyhow::Result<lettre::Message> {
        let body = self.mailer.open(&message.body).ok_or_else(|| {
            anyhow::anyhow!(
                "its body was sealed under a key that is no longer SECRET_KEY or SECRET_KEY_PREVIOUS"
            )
        })?;
        let to: Mailbox = message.recipient.parse()?;
        // Mail lines end in CRLF; 7bit when it can be (plain ASCII, short lines): readable as
        // it is sent.
        let body = body.replace("\r\n", "\n").replace('\n', "\r\n");
        let body = Body::new_with_encoding(body, ContentTransferEncoding::SevenBit).unwrap_or_else(Body::new);
        Ok(lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(body)?)
    }

    /// Sends `email`; for files, returns the file written.
    async fn send(&self, email: lettre::Message) -> anyhow::Result<Option<std::path::PathBuf>> {
        match &self.transport {
            Transport::Smtp(smtp) => {
                // lettre's own timeout covers each read and write; this bounds the whole exchange.
                let sent = tokio::time::timeout(self.timeout * 2, smtp.send(email)).await.map_err(|_| {
                    anyhow::anyhow!("the SMTP server took longer than {:?}", self.timeout * 2)
                })?;
                sent.map(|_| None).map_err(anyhow::Error::from)
            }
            Transport::Files(files, dir) => {
                let id = files.send(email).await?;
                Ok(Some(dir.join(format!("{id}.eml"))))
            }
        }
    }

    async fn finish(&self, id: i64) {
        if let Err(error) = db::run(&self.pool, move |conn| outbox::remove(conn, id)).await {
            log::warn!(
                "mail #{id}: cannot remove it from the outbox: {}",
                latchkey_auth::cause_chain(&error)
            );
        }
    }
}

/// The wait after the `attempts`-th failure: `retry`, doubling, at most an hour.
fn backoff(retry: Duration, attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(20);
    retry.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_and_is_capped() {
        let retry = Duration::from_secs(5);
        assert_eq!(backoff(retry, 1), Duration::from_secs(5));
        assert_eq!(backoff(retry, 2), Duration::from_secs(10));
        assert_eq!(backoff(retry, 4), Duration::from_secs(40));
        assert_eq!(backoff(retry, 30), MAX_BACKOFF);
    }
}
