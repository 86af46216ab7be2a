//! `latchkey user create | disable | enable`: accounts from the command line, for the first
//! administrator and for emergencies. Each change is audited, as "by the command line".

use std::io::IsTerminal;

use anyhow::Context as _;
use latchkey_auth::audit::{Event, Record};
use latchkey_auth::password::{self, Hasher, Password};
use latchkey_auth::registry::Login;

use super::UserCommand;
use crate::db::{self, Pool};
use crate::models::{NewUser, User};
use crate::routes::auth::{email_problem, normalise_email, SITE};
use crate::settings::Settings;

/// Carries out `action`; returns what to print.
pub async fn run(action: UserCommand, pool: &Pool, settings: &Settings) -> anyhow::Result<String> {
    match action {
        UserCommand::Create { email, admin } => create(pool, settings, &email, admin).await,
        UserCommand::Disable { email } => set_disabled(pool, settings, &email, true).await,
        UserCommand::Enable { email } => set_disabled(pool, settings, &email, false).await,
    }
}

async fn create(pool: &Pool, settings: &Settings, email: &str, admin: bool) -> anyhow::Result<String> {
    let email = normalise_email(email);
    if let Some(problem) = email_problem(&email) {
        anyhow::bail!("{problem}");
    }
    let password = read_password(&email)?;
    let problems = password::validate_new(&password, &password, settings.password_min_length, &email, SITE);
    if let Some(problem) = problems.first() {
        anyhow::bail!("{}", problem.message());
    }
    let hasher = Hasher::new(settings.bcrypt_cost).await?;
    let hash = hasher.hash(Password::new(password)).await?;
    let now = chrono::Utc::now().naive_utc();
    let address = email.clone();
    let user = db::run(pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            let user = NewUser {
                email: &address,
                password_hash: &hash,
                created_at: now,
                updated_at: now,
                // The administrator vouches for the address.
                email_confirmed_at: Some(now),
            }
            .insert(conn)?;
            User::set_admin(conn, user.id, admin)?;
            let detail = if admin { "an administrator, by the command line" } else { "by the command line" };
            Record::new(Event::UserCreated).user(user.id).detail(detail).insert(conn)?;
            Ok(user)
        })
    })
    .await
    .map_err(|error| match error {
        db::DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => anyhow::anyhow!("an account with this email already exists"),
        other => anyhow::anyhow!("creating the account failed: {}", latchkey_auth::cause_chain(&other)),
    })?;
    Ok(format!("created user #{} {email}{}", user.id, if admin { " (administrator)" } else { "" }))
}

/// The password: asked for without echo on a terminal, otherwise the first line of stdin.
fn read_password(email: &str) -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {email}: "))?;
        let again = rpassword::prompt_password("Repeat it: ")?;
        anyhow::ensure!(first == again, "the passwords do not match");
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    anyhow::ensure!(!password.is_empty(), "no password given (type it, or pipe it to standard input)");
    Ok(password)
}

async fn set_disabled(
    pool: &Pool,
    settings: &Settings,
    email: &str,
    disable: bool,
) -> anyhow::Result<String> {
    let email = normalise_email(email);
    let address = email.clone();
    let now = chrono::Utc::now().naive_utc();
    let ended = db::run(pool, move |conn| {
        crate::db::write_transaction(conn, |conn| {
            let Some(user) = User::find_by_email(conn, &address)? else { return Ok(None) };
            User::set_disabled(conn, user.id, disable.then_some(now))?;
            let (event, ended) = if disable {
                (Event::AdminUserDisabled, Login::delete_others(conn, user.id, "")?)
            } else {
                (Event::AdminUserEnabled, 0)
            };
            Record::new(event).user(user.id).detail("by the command line").insert(conn)?;
            Ok(Some((user.id, ended)))
        })
    })
    .await
    .map_err(|error| {
        anyhow::anyhow!("changing the account failed: {}", latchkey_auth::cause_chain(&error))
    })?;
    let Some((user_id, ended)) = ended else { anyhow::bail!("no account has the email {email}") };
    // Running servers serve the account from their login caches: tell them. (On SQLite
    // without Redis, the commit itself tells them.)
    latchkey_auth::cache::announce_user(&crate::startup::invalidation_channel(settings, pool, None), user_id)
        .await;
    Ok(match disable {
        true => format!("disabled {email}; {ended} login(s) ended"),
        false => format!("enabled {email}"),
    })
}
