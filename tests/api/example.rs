//! `examples/minimal.rs`, the whole app on the core crates: built by `cargo test`, started on
//! a random port with its own SQLite file, and driven over HTTP like any browser would.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;

use crate::support::{location, Browser};

/// The example's binary, beside this test binary's directory (`target/<profile>/examples`);
/// built with `cargo build --example minimal` when `cargo test` did not build it.
fn example_binary() -> PathBuf {
    let profile_dir =
        std::env::current_exe().unwrap().parent().and_then(|deps| deps.parent()).unwrap().to_owned();
    let binary = profile_dir.join("examples").join("minimal");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "minimal"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --example minimal");
    }
    binary
}

struct Example {
    process: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn start() -> Example {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Command::new(example_binary())
        .current_dir(dir.path())
        .env_clear()
        .env("BIND", "127.0.0.1:0")
        .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("minimal.sqlite3").display()))
        .env("BCRYPT_COST", "4")
        .env("SECRET_KEY", crate::support::secret_key())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(process.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address =
        line.trim().strip_prefix("listening on ").expect("the example says where it listens").to_owned();
    Example { process, address, _dir: dir }
}

#[tokio::test]
async fn the_minimal_example_registers_logs_in_guards_a_page_and_logs_out() {
    let example = tokio::task::spawn_blocking(start).await.unwrap();
    let browser = Browser::new(&example.address, None);
    let credentials = [("email", "min@example.com"), ("password", "hunter2hunter2")];

    let guarded = browser.get("/members").await;
    assert_eq!(guarded.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&guarded), "/login?next=/members");

    let registered = browser.submit("/", "/register", &credentials).await;
    assert_eq!(registered.status(), StatusCode::SEE_OTHER);
    assert_eq!(browser.get_html("/members").await, "Hello, min@example.com");

    assert_eq!(browser.submit("/", "/logout", &[]).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(browser.get("/members").await.status(), StatusCode::SEE_OTHER);

    let wrong =
        browser.submit("/login", "/login", &[("email", "min@example.com"), ("password", "nope")]).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let forged = browser.post_form("/login", &credentials).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN, "no CSRF token");
    assert_eq!(browser.submit("/login", "/login", &credentials).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(browser.get("/members").await.status(), StatusCode::OK);
}
