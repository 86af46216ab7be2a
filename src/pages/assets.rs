//! Where templates and static files come from, so the binary works wherever it is started.
//!
//! Templates are built into the binary; `TEMPLATES_DIR` reads them from a directory instead
//! (to edit them without rebuilding). Static files are served by actix-files from
//! `STATIC_DIR`, or else from the first of `./static`, `static` beside the binary, and the
//! source tree's `static`. Anything that cannot be loaded stops start-up with a message that
//! says where it looked, rather than failing every page.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

macro_rules! embedded {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $name)))),*]
    };
}

/// Every template, built into the binary.
pub const TEMPLATES: &[(&str, &str)] = embedded![
    "base.html",
    "macros.html",
    "about.html",
    "admin.html",
    "admin_user.html",
    "account.html",
    "account_confirm_email.html",
    "account_delete.html",
    "account_email.html",
    "account_password.html",
    "account_recovery_codes.html",
    "account_security.html",
    "account_activity.html",
    "account_sessions.html",
    "account_totp.html",
    "cart.html",
    "contact.html",
    "email_confirm.html",
    "email_confirm_gone.html",
    "error.html",
    "events_table.html",
    "home.html",
    "login.html",
    "login_mfa.html",
    "logout.html",
    "preferences.html",
    "reauth.html",
    "register.html",
    "register_sent.html",
    "shop.html",
    "password_forgot.html",
    "password_forgot_sent.html",
    "password_reset.html",
    "password_reset_gone.html",
    "email/confirm_email.txt",
    "email/new_device.txt",
    "email/notice.txt",
    "email/password_reset.txt",
    "email/register_attempt.txt",
];

/// The templates: from `dir` when given, else the built-in copies.
pub fn templates(dir: Option<&Path>) -> Result<tera::Tera, anyhow::Error> {
    let Some(dir) = dir else {
        let mut tera = tera::Tera::default();
        tera.add_raw_templates(TEMPLATES.iter().copied()).context("the built-in templates do not parse")?;
        return Ok(tera);
    };
    // Pages are .html (autoescaped); emails are .txt under email/ (plain text, not escaped).
    let pattern = dir.join("**").join("*.{html,txt}");
    let tera = tera::Tera::new(&pattern.to_string_lossy())
        .with_context(|| format!("cannot load templates from {} (TEMPLATES_DIR)", dir.display()))?;
    if tera.get_template_names().all(|name| name != "base.html") {
        anyhow::bail!("no templates found in {} (TEMPLATES_DIR): base.html is missing", dir.display());
    }
    Ok(tera)
}

/// The directory of static files; see the module docs for where it looks.
pub fn static_dir(configured: Option<&Path>) -> Result<PathBuf, anyhow::Error> {
    if let Some(dir) = configured {
        if dir.is_dir() {
            return Ok(dir.to_owned());
        }
        anyhow::bail!("the static files directory {} (STATIC_DIR) does not exist", dir.display());
    }
    let beside_binary =
        std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join("static")));
    let candidates: Vec<PathBuf> = [Some(PathBuf::from("static")), beside_binary, Some(source_tree_static())]
        .into_iter()
        .flatten()
        .collect();
    if let Some(found) = candidates.iter().find(|dir| dir.join("style.css").is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|dir| dir.display().to_string()).collect();
    anyhow::bail!("no static files directory found (looked in {}); set STATIC_DIR", looked.join(", "))
}

fn source_tree_static() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("static")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_file_is_built_in() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let files = |dir: &str, extension: &str| -> Vec<String> {
            std::fs::read_dir(root.join(dir))
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| format!("{dir}{}", entry.file_name().to_string_lossy()))
                .filter(|name| name.ends_with(extension))
                .collect()
        };
        let mut on_disk = files("", ".html");
        on_disk.extend(files("email/", ".txt"));
        let mut built_in: Vec<String> = TEMPLATES.iter().map(|(name, _)| (*name).to_owned()).collect();
        on_disk.sort();
        built_in.sort();
        assert_eq!(on_disk, built_in);
        assert!(templates(None).is_ok());
    }

    #[test]
    fn a_missing_directory_is_an_error_that_names_it() {
        let error = templates(Some(Path::new("/nonexistent/templates"))).err().map(|e| format!("{e:#}"));
        assert!(error.is_some_and(|e| e.contains("/nonexistent/templates")));
        let error = static_dir(Some(Path::new("/nonexistent/static"))).err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("/nonexistent/static")));
    }
}
