//! The `latchkey` command line: `serve` (the default) and `migrate`.

use clap::{Parser, Subcommand};

use crate::db;
use crate::settings::{SessionStoreKind, Settings};
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
    /// Manage server-side sessions.
    Sessions {
        #[command(subcommand)]
        action: SessionsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Delete ended logins, and expired session state from the database store.
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
            Command::Sessions { action: SessionsCommand::Purge } => {
                let pool = db::pool(&settings.database_url, 1, settings.database_timeout)?;
                let policy = settings.login_policy();
                let in_database = settings.session_store == SessionStoreKind::Database;
                let (logins, sessions) = startup::purge(&pool, &policy, in_database)
                    .await
                    .map_err(|e| anyhow::anyhow!("purging failed: {}", latchkey_auth::cause_chain(&e)))?;
                println!("{sessions} expired session(s) and {logins} ended login(s) purged");
            }
        }
        Ok(())
    }
}
