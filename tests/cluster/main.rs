#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail by panicking")]

//! Several instances behind a load balancer: three `latchkey` processes on loopback behind
//! nginx (round robin), sharing a PostgreSQL and a Redis of this test's own, once with
//! `SESSION_STORE=redis` and once with `SESSION_STORE=database`.
//!
//! - Every instance serves a login made through the balancer; a logout or a revoked device on
//!   one instance is seen by the others at the next request.
//! - A rolling restart (SIGTERM, then start again, one instance at a time) under a bounded load
//!   costs no request: no 5xx, no dropped connection, no lost session.
//! - Stopping Redis, then PostgreSQL, for five seconds under load: pages that need them answer
//!   503 (never 500 or a dropped connection) and `/readyz` says 503; within two seconds of the
//!   service's return everything works again without a restart, and nothing that was
//!   acknowledged (a registration, a logout, a password change) is lost.
//!
//! A test binary of its own, so it does not share the machine with the other tests' load:
//! cargo runs test binaries one after another. `scripts/test` installs nginx.

#[allow(dead_code, unused_imports)]
#[path = "../api/support/mod.rs"]
mod support;

mod load;
mod services;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::task::block_in_place;

use load::Load;
use services::{Nginx, Postgres, Redis};
use support::{attribute_in, secret_key, Browser, ServerProcess, PASSWORD};

const INSTANCES: usize = 3;
/// How soon after a service returns everything must work again.
const RECOVERY: Duration = Duration::from_secs(2);
/// How long a service stays down.
const OUTAGE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_sharing_redis_sessions() {
    a_cluster_behind_nginx("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_sharing_database_sessions() {
    a_cluster_behind_nginx("database").await;
}

async fn a_cluster_behind_nginx(store: &'static str) {
    let mut cluster = block_in_place(|| Cluster::start(store));
    every_instance_sees_logins_logouts_and_revocations(&cluster).await;
    let visitors = cluster.visitors(8).await;
    a_rolling_restart_costs_no_request(&mut cluster, &visitors).await;
    if store == "redis" {
        an_outage_answers_503_then_heals(&mut cluster, &visitors, Service::Redis).await;
    }
    an_outage_answers_503_then_heals(&mut cluster, &visitors, Service::Postgres).await;
}

async fn every_instance_sees_logins_logouts_and_revocations(cluster: &Cluster) {
    let alice = cluster.browser();
    assert_eq!(alice.register("alice@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    for instance in &cluster.instances {
        assert!(alice.at(&instance.address).is_logged_in().await, "{} serves the login", instance.address);
    }
    let copied = alice.cookies();
    assert!(alice.at(&cluster.instances[0].address).logout().await.status().is_redirection());
    for instance in &cluster.instances {
        let replay = Browser::new(&instance.address, None).sending(&copied);
        assert!(!replay.is_logged_in().await, "{} knows of the logout at once", instance.address);
    }

    cluster.browser().register("bob@example.com", PASSWORD).await;
    let (laptop, phone) = (cluster.browser(), cluster.browser());
    laptop.login("bob@example.com", PASSWORD).await;
    phone.login("bob@example.com", PASSWORD).await;
    let phone_on_second = phone.at(&cluster.instances[1].address);
    let devices = phone_on_second.get_html("/account/sessions").await;
    let revoke = attribute_in(&devices, r#"form[action$="/revoke"]"#, "action").expect("a revoke form");
    let revoked = phone_on_second.submit("/account/sessions", &revoke, &[]).await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    for instance in &cluster.instances {
        assert!(!laptop.at(&instance.address).is_logged_in().await, "revoked on {}", instance.address);
        assert!(phone.at(&instance.address).is_logged_in().await);
    }
}

async fn a_rolling_restart_costs_no_request(cluster: &mut Cluster, visitors: &[Browser]) {
    let load = cluster.load(visitors);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for index in 0..INSTANCES {
        cluster.restart(index).await;
        // Ready, and no longer skipped by nginx, before the next one stops.
        cluster.wait_until_ready(index).await;
        tokio::time::sleep(Duration::from_secs(services::FAIL_TIMEOUT_SECS) + Duration::from_millis(500))
            .await;
    }
    let tally = load.finish().await;
    eprintln!("{}: rolling restart under load: {}", cluster.store, tally.summary());
    assert!(tally.unexpected(&[200]).is_empty(), "a rolling restart: {}", tally.summary());
    assert!(tally.count(200) > 100, "the load ran: {}", tally.summary());
    for visitor in visitors {
        assert!(visitor.is_logged_in().await, "no session is lost");
    }
}

#[derive(Debug, Clone, Copy)]
enum Service {
    Redis,
    Postgres,
}

async fn an_outage_answers_503_then_heals(cluster: &mut Cluster, visitors: &[Browser], service: Service) {
    let acknowledged = Acknowledged::make(cluster, &format!("{service:?}").to_lowercase()).await;
    let load = cluster.load(visitors);
    tokio::time::sleep(Duration::from_millis(500)).await;

    block_in_place(|| cluster.stop(service));
    let down_until = Instant::now() + OUTAGE;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for instance in &cluster.instances {
        let ready = Browser::new(&instance.address, None).get("/readyz").await;
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE, "{service:?} down: /readyz");
    }
    tokio::time::sleep(down_until.saturating_duration_since(Instant::now())).await;

    block_in_place(|| cluster.resume(service));
    let back = Instant::now();
    let healed = cluster.wait_until_healthy(visitors, back + Duration::from_secs(10)).await;
    assert!(healed <= RECOVERY, "{service:?} back: everything works again after {healed:?}");
    tokio::time::sleep(RECOVERY + Duration::from_secs(1)).await;

    let tally = load.finish().await;
    eprintln!(
        "{}: {service:?} down for {OUTAGE:?} under load: {}; everything worked again {healed:?} after its return",
        cluster.store,
        tally.summary()
    );
    let bad = tally.unexpected(&[200, 503]);
    assert!(
        bad.is_empty(),
        "{service:?} outage: only 200 and 503, got {:?}; {}",
        &bad[..bad.len().min(5)],
        tally.summary()
    );
    assert!(tally.count(503) > 0, "the outage was seen: {}", tally.summary());
    let after = tally.since(back + RECOVERY);
    assert!(after.unexpected(&[200]).is_empty(), "{service:?} back for {RECOVERY:?}: {}", after.summary());
    for visitor in visitors {
        assert!(visitor.is_logged_in().await, "no session is lost to the {service:?} outage");
    }
    acknowledged.still_hold(cluster).await;
}

/// Changes the cluster acknowledged just before an outage, to check afterwards that none was
/// lost: a registration, a logout, a password change.
struct Acknowledged {
    registered: String,
    logged_out: String,
    changed: String,
}

const NEW_PASSWORD: &str = "a much better passphrase";

impl Acknowledged {
    async fn make(cluster: &Cluster, tag: &str) -> Acknowledged {
        let registered = format!("registered-{tag}@example.com");
        assert_eq!(cluster.browser().register(&registered, PASSWORD).await.status(), StatusCode::SEE_OTHER);

        let leaving = cluster.browser();
        leaving.register(&format!("leaving-{tag}@example.com"), PASSWORD).await;
        let logged_out = leaving.cookies();
        assert!(leaving.logout().await.status().is_redirection());

        let changed = format!("changed-{tag}@example.com");
        let changer = cluster.browser();
        changer.register(&changed, PASSWORD).await;
        let fields = [
            ("current_password", PASSWORD),
            ("new_password", NEW_PASSWORD),
            ("new_password_confirm", NEW_PASSWORD),
        ];
        let response = changer.submit("/account/password", "/account/password", &fields).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "password changed");
        Acknowledged { registered, logged_out, changed }
    }

    async fn still_hold(&self, cluster: &Cluster) {
        let fresh = cluster.browser();
        assert_eq!(fresh.login(&self.registered, PASSWORD).await.status(), StatusCode::SEE_OTHER);
        assert!(fresh.is_logged_in().await, "the registration survived");
        assert!(!cluster.browser().sending(&self.logged_out).is_logged_in().await, "the logout survived");
        let old = cluster.browser();
        assert_eq!(
            old.login(&self.changed, PASSWORD).await.status(),
            StatusCode::UNAUTHORIZED,
            "the old password is refused"
        );
        let new = cluster.browser();
        assert_eq!(new.login(&self.changed, NEW_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    }
}

/// PostgreSQL, Redis, the instances and nginx in front of them.
struct Cluster {
    store: &'static str,
    postgres: Postgres,
    redis: Option<Redis>,
    instances: Vec<ServerProcess>,
    /// The instances' settings (but `BIND`).
    vars: Vec<(&'static str, String)>,
    nginx: Nginx,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Blocks: call it in `block_in_place`.
    fn start(store: &'static str) -> Cluster {
        let postgres = Postgres::start();
        postgres.execute("CREATE DATABASE latchkey");
        let redis = (store == "redis").then(Redis::start);
        let mut vars = vec![
            ("DATABASE_URL", postgres.url("latchkey")),
            ("SESSION_STORE", store.to_owned()),
            ("SECRET_KEY", secret_key()),
            ("BCRYPT_COST", "4".to_owned()),
            ("TRUSTED_PROXIES", "127.0.0.1".to_owned()),
            ("SHUTDOWN_TIMEOUT", "10s".to_owned()),
        ];
        if let Some(redis) = &redis {
            vars.push(("REDIS_URL", redis.url()));
        }
        let dir = tempfile::tempdir().unwrap();
        let instances: Vec<ServerProcess> =
            (0..INSTANCES).map(|_| ServerProcess::start(dir.path(), &vars)).collect();
        let nginx = Nginx::start(&instances.iter().map(|i| i.port).collect::<Vec<_>>());
        Cluster { store, postgres, redis, instances, vars, nginx, dir }
    }

    /// A new browser on the balancer.
    fn browser(&self) -> Browser {
        Browser::new(&self.nginx.address, None)
    }

    /// `count` browsers, each logged in as a user of its own through the balancer.
    async fn visitors(&self, count: usize) -> Vec<Browser> {
        let mut visitors = Vec::new();
        for n in 0..count {
            let visitor = self.browser();
            let registered = visitor.register(&format!("visitor{n}@example.com"), PASSWORD).await;
            assert_eq!(registered.status(), StatusCode::SEE_OTHER);
            visitors.push(visitor);
        }
        visitors
    }

    /// The visitors, each requesting a logged-in page through the balancer in a loop.
    fn load(&self, visitors: &[Browser]) -> Load {
        Load::start(visitors.iter().map(|v| v.at(&v.address)).collect(), "/account")
    }

    /// Stops instance `index` with SIGTERM and starts it again on the same port.
    async fn restart(&mut self, index: usize) {
        let instance = &mut self.instances[index];
        instance.terminate();
        let status = instance.exited_within(Duration::from_secs(15)).await.expect("it stops");
        assert!(status.success(), "instance {index} exited with {status:?}:\n{}", instance.log());
        let mut vars = self.vars.clone();
        vars.push(("BIND", format!("127.0.0.1:{}", instance.port)));
        let dir = self.dir.path().to_owned();
        self.instances[index] = block_in_place(|| ServerProcess::start(&dir, &vars));
    }

    fn stop(&mut self, service: Service) {
        match service {
            Service::Redis => self.redis.as_mut().expect("a Redis").stop(),
            Service::Postgres => self.postgres.stop(),
        }
    }

    fn resume(&mut self, service: Service) {
        match service {
            Service::Redis => self.redis.as_mut().expect("a Redis").resume(),
            Service::Postgres => self.postgres.resume(),
        }
    }

    /// Polls until instance `index` answers `/readyz` with 200.
    async fn wait_until_ready(&self, index: usize) {
        let instance = Browser::new(&self.instances[index].address, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while instance.get("/readyz").await.status() != StatusCode::OK {
            assert!(Instant::now() < deadline, "instance {index} did not get ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until every instance is ready and serves a visitor's logged-in page; returns how
    /// long that took.
    async fn wait_until_healthy(&self, visitors: &[Browser], deadline: Instant) -> Duration {
        let started = Instant::now();
        loop {
            let mut healthy = true;
            for instance in &self.instances {
                let ready = Browser::new(&instance.address, None).get("/readyz").await.status();
                let page = visitors[0].at(&instance.address).get("/account").await.status();
                healthy &= ready == StatusCode::OK && page == StatusCode::OK;
            }
            if healthy {
                return started.elapsed();
            }
            assert!(Instant::now() < deadline, "the cluster did not heal");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
