//! The `latchkey` binary: `migrate`, and settings errors that name the variable.

use crate::support::run_latchkey as latchkey;

#[test]
fn migrate_applies_the_migrations_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.sqlite3");
    let url = format!("sqlite://{}", db.display());
    let vars = [("DATABASE_URL", url.as_str())];

    let first = latchkey(dir.path(), &vars, &["migrate"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).contains("14 migration(s) applied"));
    assert!(dir.path().join("data/secret_key").exists(), "development secret generated");

    let second = latchkey(dir.path(), &vars, &["migrate"]);
    assert!(String::from_utf8_lossy(&second.stdout).contains("0 migration(s) applied"));
}

#[test]
fn invalid_settings_stop_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in
        [("SESSION_STORE", "memcached"), ("DATABASE_URL", "mysql://x/y"), ("BCRYPT_COST", "99")]
    {
        let output = latchkey(dir.path(), &[(var, value)], &["migrate"]);
        assert!(!output.status.success(), "{var}={value} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(var), "{var} named in: {stderr}");
    }
    let output = latchkey(dir.path(), &[("APP_ENV", "production")], &["serve"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("SECRET_KEY"));
}

#[test]
fn a_wrong_postgres_url_fails_fast_and_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = latchkey(
        dir.path(),
        &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"), ("DATABASE_TIMEOUT", "2s")],
        &["migrate"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PostgreSQL") || stderr.contains("connect"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("sqlite"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(!dir.path().join("postgres:").exists(), "no stray SQLite file");
}
