//! The `latchkey` command line: `serve` (the default) and `migrate`.

use clap::{Parser, Subcommand};

use crate::db;
use crate::settings::Settings;
use crate::startup::Application;

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
    /// Delete expired session state from the database store.
    Purge,
}

impl Cli {
    pub async fn run(self, settings: Settings) -> Result<(), anyhow::Error> {
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => Application::build(settings).await?.run_until_stopped().await?,
            Command::Migrate => {
                let pool = db::pool(&settings.database_url, 1, settings.database_timeout)?;
                let url = settings.database_url.describe();
                let applied = tokio::task::spawn_blocking(move || -> Result<Vec<String>, anyhow::Error> {
                    let mut conn = pool
                        .get()
                        .map_err(|e| anyhow::anyhow!("cannot connect to {url} (DATABASE_URL): {e}"))?;
                    db::migrate(&mut conn)
                })
                .await??;
                println!("{} migration(s) applied on {}", applied.len(), settings.database_url.describe());
                for migration in applied {
                    println!("  {migration}");
                }
            }
            Command::Sessions { action: SessionsCommand::Purge } => {
                let pool = db::pool(&settings.database_url, 1, settings.database_timeout)?;
                let purged = crate::sessions::database::purge_expired(&pool)
                    .await
                    .map_err(|e| anyhow::anyhow!("purging sessions failed: {e}"))?;
                println!("{purged} expired session(s) purged");
            }
        }
        Ok(())
    }
}
