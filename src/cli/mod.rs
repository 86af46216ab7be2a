//! The `latchkey` command line: `serve` (the default), `migrate`, `sessions purge`,
//! `user create`/`disable`/`enable` and `healthcheck`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

mod users;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::db;

use crate::settings::Settings;
use crate::startup::{self, Application};

/// latchkey: web sessions and authentication done right.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Ask the running server's `/healthz` (at `BIND`); exit 0 when it answers 200, 1 otherwise.
    /// The container image's HEALTHCHECK, which needs no curl.
    Healthcheck,
    /// Manage server-side sessions.
    Sessions {
        #[command(subcommand)]
        action: SessionsCommand,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is asked for (without echo) on a terminal, otherwise
    /// read from the first line of standard input; the usual password rules apply.
    Create {
        email: String,
        /// Make it an administrator (the admin area at /admin).
        #[arg(long)]
        admin: bool,
    },
    /// Disable an account: it cannot log in, and every login of it ends.
    Disable { email: String },
    /// Enable a disabled account again.
    Enable { email: String },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Delete ended logins, expired session state from the database store, and audit events
    /// older than `AUDIT_RETENTION`.
    Purge,
}

impl Cli {
    pub async fn run(self, settings: Settings) -> Result<(), anyhow::Error> {
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => Application::build(settings).await?.run_until_stopped().await?,
            Command::Migrate => {
                let applied = db::migrate_url(&settings.database_url).await?;
                println!("{} migration(s) applied on {}", applied.len(), settings.database_url.describe());
                for migration in applied {
                    println!("  {migration}");
                }
            }
            Command::Healthcheck => healthcheck(&settings.bind, Duration::from_secs(3))?,
            Command::Sessions { action: SessionsCommand::Purge } => {
                let pool = db::pool(&settings.database_url, 1, settings.database_timeout)?;
                let purged = startup::purge(&pool, &settings)
                    .await
                    .map_err(|e| anyhow::anyhow!("purging failed: {}", latchkey_auth::cause_chain(&e)))?;
                println!("purged {purged}");
            }
            Command::User { action } => {
                db::migrate_url(&settings.database_url).await?;
                let pool = db::pool(&settings.database_url, 1, settings.database_timeout)?;
                println!("{}", users::run(action, &pool, &settings).await?);
            }
        }
        Ok(())
    }
}

/// One `GET /healthz` to the server listening on `bind`, over loopback when it listens on every
/// address. Written with the standard library because the runtime has no HTTP client, and one
/// request with a fixed shape does not justify adding one to the binary.
pub fn healthcheck(bind: &str, timeout: Duration) -> Result<(), anyhow::Error> {
    let address = probe_address(bind)?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("healthcheck: cannot connect to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).with_context(|| format!("healthcheck: no answer from {address}"))?;
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("none");
    anyhow::ensure!(status == "200", "healthcheck: {address}/healthz answered {status}");
    println!("healthy: http://{address}/healthz answered 200");
    Ok(())
}

/// The address to probe for a `BIND` of `host:port`: an unspecified host (`0.0.0.0`, `[::]`)
/// means this machine, reached over loopback.
fn probe_address(bind: &str) -> Result<SocketAddr, anyhow::Error> {
    let mut address = bind
        .to_socket_addrs()
        .with_context(|| format!("healthcheck: BIND={bind} is not an address"))?
        .next()
        .with_context(|| format!("healthcheck: BIND={bind} resolves to no address"))?;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(address)
}
