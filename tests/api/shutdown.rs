//! Stopping a server: on SIGTERM it stops accepting, lets requests in flight finish (a login
//! in the middle of its bcrypt included) within `SHUTDOWN_TIMEOUT`, then exits 0. And the
//! `healthcheck` subcommand that container engines run.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::{free_port, location, run_latchkey, secret_key, Browser, ServerProcess, PASSWORD};

fn settings(dir: &std::path::Path, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("DATABASE_URL", format!("sqlite://{}", dir.join("db.sqlite3").display())),
        ("SECRET_KEY", secret_key()),
        ("SESSION_STORE", "database".to_owned()),
    ];
    vars.extend(extra.iter().map(|(key, value)| (*key, (*value).to_owned())));
    vars
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_err()
}

#[tokio::test]
async fn sigterm_finishes_a_login_in_flight_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    // A bcrypt slow enough that the signal lands in the middle of one.
    let vars = settings(dir.path(), &[("BCRYPT_COST", "12"), ("SHUTDOWN_TIMEOUT", "20s")]);
    let mut server = ServerProcess::start(dir.path(), &vars);
    let browser = Browser::new(&server.address, None);
    let started = Instant::now();
    assert_eq!(browser.register("drain@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let hash_time = started.elapsed();
    assert!(browser.logout().await.status().is_redirection());

    let token = browser.csrf_token("/login").await;
    let fields = [("email", "drain@example.com"), ("password", PASSWORD), ("csrf_token", token.as_str())];
    let login = {
        let request = browser.request(reqwest::Method::POST, "/login").header("Origin", &browser.address);
        tokio::spawn(request.form(&fields).send())
    };
    // Long enough for the login to reach its hash, short enough that it is still hashing: the
    // registration's time is only an estimate (on a loaded machine it ran several times longer
    // than this login's hash, and a quarter of it outlasted the login).
    tokio::time::sleep((hash_time / 4).min(Duration::from_millis(100))).await;
    let signalled = Instant::now();
    server.terminate();

    // It stops accepting at once, while the login is still hashing.
    let mut refused = false;
    while signalled.elapsed() < Duration::from_secs(2) && !login.is_finished() {
        if refuses_connections(server.port) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "new connections are refused while the login finishes");

    let login = login.await.unwrap().expect("the login in flight gets its answer");
    assert_eq!(login.status(), StatusCode::SEE_OTHER, "{}", server.log());
    assert_eq!(location(&login), "/");
    assert!(login.headers().get_all("set-cookie").iter().count() > 0, "the new session's cookie is sent");
    let status = server.exited_within(Duration::from_secs(20)).await.expect("it exits once drained");
    assert!(status.success(), "exit status {status:?}:\n{}", server.log());
    assert!(server.log().contains("SIGTERM"), "{}", server.log());
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_wait_for_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    // A registration at cost 16 hashes for many seconds; the drain gives it one.
    let vars = settings(dir.path(), &[("BCRYPT_COST", "16"), ("SHUTDOWN_TIMEOUT", "1s")]);
    let mut server = ServerProcess::start(dir.path(), &vars);
    let browser = Browser::new(&server.address, None);
    let token = browser.csrf_token("/register").await;
    let fields = [
        ("email", "slow@example.com"),
        ("password", PASSWORD),
        ("password_confirm", PASSWORD),
        ("csrf_token", token.as_str()),
    ];
    let request = browser.request(reqwest::Method::POST, "/register").header("Origin", &browser.address);
    let register = tokio::spawn(request.form(&fields).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    server.terminate();
    let status = server.exited_within(Duration::from_secs(10)).await.expect("it exits");
    let waited = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}:\n{}", server.log());
    assert!(waited < Duration::from_secs(4), "exited {waited:?} after SIGTERM with SHUTDOWN_TIMEOUT=1s");
    assert!(register.await.unwrap().is_err(), "the unfinished request's connection is closed");
}

#[tokio::test]
async fn healthcheck_exits_0_on_a_healthy_server_and_1_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let vars = settings(dir.path(), &[("BCRYPT_COST", "4")]);
    let server = ServerProcess::start(dir.path(), &vars);
    let healthcheck = |bind: String| {
        let mut env: Vec<(&str, &str)> = vars.iter().map(|(key, value)| (*key, value.as_str())).collect();
        env.push(("BIND", &bind));
        run_latchkey(dir.path(), &env, &["healthcheck"])
    };

    let healthy = healthcheck(format!("0.0.0.0:{}", server.port));
    assert!(healthy.status.success(), "{}", String::from_utf8_lossy(&healthy.stderr));
    assert!(String::from_utf8_lossy(&healthy.stdout).contains("200"));

    let free = free_port();
    let down = healthcheck(format!("127.0.0.1:{free}"));
    assert_eq!(down.status.code(), Some(1), "nothing listens on {free}");
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot connect"));
}
