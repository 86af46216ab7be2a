//! The load generator `scripts/bench` runs beside wrk: what wrk cannot do. Every subcommand
//! prints its results as `key=value` lines on stdout (the script reads them) and what went wrong
//! on stderr.
//!
//! - `hash-time`: how long one bcrypt hash takes here (the median of a few), as the server makes it
//!   (`latchkey_auth::password::hash_blocking`). The script runs it on the server's core.
//! - `probe`: GETs one page at a fixed rate, open loop: each request is sent on its schedule
//!   whether or not earlier ones have answered, and its latency counts from that scheduled time,
//!   so a server that stalls is charged for every request it delayed (no coordinated omission).
//!   At most `--connections` requests are in flight, over as many keep-alive connections.
//! - `storm`: clients that log in through the real form over and over, each time with a new
//!   cookie jar, optionally with a probe running for the same time.
//! - `logins`: makes COUNT live logins, each then opening `/about` once, and reports the largest
//!   cookies a browser would send for a logged-in page.
//!
//! `cargo run --release --example bench_client -- --help`
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{HeaderValue, COOKIE, ORIGIN, RETRY_AFTER, SET_COOKIE};
use reqwest::{Client, StatusCode, Url};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

/// The session cookie's name outside production (`latchkey_sessions::cookie_name`).
const SESSION_COOKIE: &str = "latchkey_session";
/// The one-shot flash cookie, which a browser sends once and which is left out of the sizes.
const FLASH_COOKIE: &str = "latchkey_flash";
/// Longest wait for a page in the probe, from its scheduled time: past it, a failure.
const PAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one request of a login (logins may queue behind bcrypt).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How many distinct error messages are printed per kind of failure.
const EXAMPLES: usize = 5;

#[derive(Parser)]
#[command(about = "Load generator for scripts/bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Median time of one bcrypt hash at COST, in seconds.
    HashTime {
        #[arg(long, default_value_t = 12)]
        cost: u32,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Open-loop, fixed-rate GETs of one page; latency percentiles and failures.
    Probe(ProbeArgs),
    /// CLIENTS concurrent login loops for DURATION, optionally with a probe at the same time.
    Storm {
        #[command(flatten)]
        login: LoginArgs,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        duration: Duration,
        /// A page to probe while the storm runs (same rate rules as `probe`).
        #[arg(long)]
        probe_url: Option<String>,
        #[arg(long, default_value = "")]
        probe_cookie: String,
        #[arg(long, default_value_t = 200.0)]
        probe_rate: f64,
        #[arg(long, default_value_t = 32)]
        probe_connections: usize,
    },
    /// COUNT live logins, each then opening /about once; the largest cookies sent.
    Logins {
        #[command(flatten)]
        login: LoginArgs,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
}

#[derive(Args, Clone)]
struct ProbeArgs {
    /// The page, e.g. http://127.0.0.1:8080/about
    #[arg(long)]
    url: String,
    /// The Cookie header to send, e.g. 'a=b; c=d' (empty: none).
    #[arg(long, default_value = "")]
    cookie: String,
    /// Requests per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Most requests in flight (and so keep-alive connections) at once.
    #[arg(long, default_value_t = 32)]
    connections: usize,
}

#[derive(Args, Clone)]
struct LoginArgs {
    /// The site's base URL, e.g. http://127.0.0.1:8080 (also sent as Origin).
    #[arg(long)]
    url: String,
    #[arg(long)]
    email: String,
    #[arg(long)]
    password: String,
}

/// `10s`, `500ms`, `2m` or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("not a duration: {text:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::HashTime { cost, runs } => hash_time(cost, runs),
        Command::Probe(args) => {
            let report = probe(args).await?;
            report.print("probe");
            Ok(())
        }
        Command::Storm {
            login,
            clients,
            duration,
            probe_url,
            probe_cookie,
            probe_rate,
            probe_connections,
        } => {
            let probe_task = probe_url.map(|url| {
                tokio::spawn(probe(ProbeArgs {
                    url,
                    cookie: probe_cookie,
                    rate: probe_rate,
                    duration,
                    connections: probe_connections,
                }))
            });
            let storm_report = storm(login, clients, duration).await?;
            storm_report.print();
            if let Some(task) = probe_task {
                task.await??.print("probe");
            }
            Ok(())
        }
        Command::Logins { login, count, concurrency } => logins(login, count, concurrency).await,
    }
}

fn hash_time(cost: u32, runs: usize) -> Result<()> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = std::time::Instant::now();
        latchkey_auth::password::hash_blocking("correct horse battery staple", cost)?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("hash_cost={cost}");
    println!("hash_time_s={median:.4}");
    println!("hash_times_s={}", times.iter().map(|t| format!("{t:.4}")).collect::<Vec<_>>().join(","));
    Ok(())
}

fn client() -> Result<Client> {
    Ok(Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // Below actix-web's 5 s keep-alive: a connection the server is about to close is not
        // picked for a request (that race would be the client's doing, not the server's).
        .pool_idle_timeout(Duration::from_secs(2))
        .build()?)
}

// ---- failures --------------------------------------------------------------------------------

/// Failures by kind, with a few of their messages.
#[derive(Default)]
struct Failures {
    /// Answers with an unexpected status, by status.
    status: BTreeMap<u16, usize>,
    /// 503 answers that had no Retry-After header (counted in `status` too).
    no_retry_after: usize,
    /// The connection failed, was closed or reset (by either side: see the messages).
    connection: usize,
    /// No answer in time (the client gave up and closed the connection).
    timeout: usize,
    /// Anything else (an unreadable page, a login form without a token, …).
    other: usize,
    examples: BTreeMap<String, usize>,
}

impl Failures {
    fn total(&self) -> usize {
        self.status.values().sum::<usize>() + self.connection + self.timeout + self.other
    }

    fn add_status(&mut self, status: StatusCode, what: &str) {
        *self.status.entry(status.as_u16()).or_default() += 1;
        self.note(format!("{what}: answered {status}"));
    }

    fn add_error(&mut self, error: &reqwest::Error, what: &str) {
        if error.is_timeout() {
            self.timeout += 1;
        } else {
            self.connection += 1;
        }
        // The chain shows the cause: hyper's "connection closed before message completed" is the
        // server closing a connection under a request; "Connection reset by peer" resetting it.
        self.note(format!("{what}: {}", latchkey_auth::cause_chain(error)));
    }

    fn add_other(&mut self, error: &anyhow::Error, what: &str) {
        self.other += 1;
        self.note(format!("{what}: {error:#}"));
    }

    fn note(&mut self, message: String) {
        if self.examples.len() < EXAMPLES || self.examples.contains_key(&message) {
            *self.examples.entry(message).or_default() += 1;
        }
    }

    fn merge(&mut self, other: Failures) {
        for (status, n) in other.status {
            *self.status.entry(status).or_default() += n;
        }
        self.no_retry_after += other.no_retry_after;
        self.connection += other.connection;
        self.timeout += other.timeout;
        self.other += other.other;
        for (message, n) in other.examples {
            if self.examples.len() < EXAMPLES || self.examples.contains_key(&message) {
                *self.examples.entry(message).or_default() += n;
            }
        }
    }

    fn print(&self, prefix: &str) {
        let statuses = self.status.iter().map(|(s, n)| format!("{s}:{n}")).collect::<Vec<_>>().join(",");
        println!("{prefix}_failures={}", self.total());
        println!("{prefix}_bad_status={}", self.status.values().sum::<usize>());
        println!("{prefix}_statuses={statuses}");
        println!("{prefix}_conn_errors={}", self.connection);
        println!("{prefix}_timeouts={}", self.timeout);
        println!("{prefix}_other_errors={}", self.other);
        for (message, n) in &self.examples {
            eprintln!("{prefix}: {n} × {message}");
        }
    }
}

// ---- probe -----------------------------------------------------------------------------------

struct ProbeReport {
    /// Latencies of the 200 answers, from their scheduled send times.
    latencies: Vec<Duration>,
    sent: usize,
    late_start: Duration,
    /// The longest a request waited for one of the `--connections` slots: when it is large, the
    /// probe's own limit on requests in flight, not the server alone, made the latency.
    slot_wait: Duration,
    failures: Failures,
}

impl ProbeReport {
    fn print(mut self, prefix: &str) {
        self.latencies.sort();
        let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        let at = |p: f64| {
            let n = self.latencies.len();
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
            ms(self.latencies.get(rank))
        };
        println!("{prefix}_sent={}", self.sent);
        println!("{prefix}_ok={}", self.latencies.len());
        println!("{prefix}_p50_ms={:.2}", at(0.50));
        println!("{prefix}_p99_ms={:.2}", at(0.99));
        println!("{prefix}_max_ms={:.2}", ms(self.latencies.last()));
        // How far behind its schedule the probe itself fell in launching a request (its own
        // CPU): large values mean the load generator, not the server, was the bottleneck.
        println!("{prefix}_max_launch_lag_ms={:.2}", self.late_start.as_secs_f64() * 1000.0);
        println!("{prefix}_max_slot_wait_ms={:.2}", self.slot_wait.as_secs_f64() * 1000.0);
        self.failures.print(prefix);
    }
}

enum PageOutcome {
    Ok(Duration),
    Status(StatusCode),
    Error(reqwest::Error),
    Timeout,
}

async fn probe(args: ProbeArgs) -> Result<ProbeReport> {
    if args.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    let client = client()?;
    let url = Url::parse(&args.url).with_context(|| format!("--url {}", args.url))?;
    let cookie = (!args.cookie.is_empty()).then(|| HeaderValue::from_str(&args.cookie)).transpose()?;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let count = (args.duration.as_secs_f64() * args.rate).round() as usize;
    let slots = Arc::new(Semaphore::new(args.connections.max(1)));
    let start = Instant::now();
    let mut late_start = Duration::ZERO;
    let slot_wait_us = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        late_start = late_start.max(scheduled.elapsed());
        let (client, url, cookie, slots, slot_wait_us) =
            (client.clone(), url.clone(), cookie.clone(), slots.clone(), slot_wait_us.clone());
        tasks.push(tokio::spawn(async move {
            let attempt = async {
                let _slot = slots.acquire_owned().await;
                let waited = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
                slot_wait_us.fetch_max(waited, Ordering::Relaxed);
                let mut request = client.get(url);
                if let Some(cookie) = cookie {
                    request = request.header(COOKIE, cookie);
                }
                let response = request.send().await?;
                let status = response.status();
                response.bytes().await?;
                Ok::<_, reqwest::Error>(status)
            };
            match tokio::time::timeout_at(scheduled + PAGE_TIMEOUT, attempt).await {
                Ok(Ok(StatusCode::OK)) => PageOutcome::Ok(scheduled.elapsed()),
                Ok(Ok(status)) => PageOutcome::Status(status),
                Ok(Err(error)) => PageOutcome::Error(error),
                Err(_) => PageOutcome::Timeout,
            }
        }));
    }
    let mut report = ProbeReport {
        latencies: Vec::with_capacity(count),
        sent: count,
        late_start,
        slot_wait: Duration::ZERO,
        failures: Failures::default(),
    };
    for task in tasks {
        match task.await? {
            PageOutcome::Ok(latency) => report.latencies.push(latency),
            PageOutcome::Status(status) => report.failures.add_status(status, "page"),
            PageOutcome::Error(error) => report.failures.add_error(&error, "page"),
            PageOutcome::Timeout => {
                report.failures.timeout += 1;
                report.failures.note(format!("page: no answer within {PAGE_TIMEOUT:?} of its schedule"));
            }
        }
    }
    report.slot_wait = Duration::from_micros(slot_wait_us.load(Ordering::Relaxed));
    Ok(report)
}

// ---- logins ----------------------------------------------------------------------------------

/// One browser: a cookie jar of its own, over the shared connection pool.
struct Browser<'a> {
    client: &'a Client,
    base: &'a Url,
    jar: Jar,
}

/// Why a login did not happen.
enum LoginError {
    Status(StatusCode, &'static str, bool),
    Http(reqwest::Error, &'static str),
    Other(anyhow::Error, &'static str),
}

impl LoginError {
    fn record(self, failures: &mut Failures) {
        match self {
            LoginError::Status(status, what, retry_after) => {
                failures.add_status(status, what);
                if status == StatusCode::SERVICE_UNAVAILABLE && !retry_after {
                    failures.no_retry_after += 1;
                }
            }
            LoginError::Http(error, what) => failures.add_error(&error, what),
            LoginError::Other(error, what) => failures.add_other(&error, what),
        }
    }
}

/// The cookies a logged-in page is sent, without the flash cookie: the header's size and the
/// session cookie's (`name=value`).
struct CookieSizes {
    header: usize,
    session: usize,
}

impl<'a> Browser<'a> {
    fn new(client: &'a Client, base: &'a Url) -> Self {
        Browser { client, base, jar: Jar::default() }
    }

    fn url(&self, path: &str) -> Result<Url, LoginError> {
        self.base.join(path).map_err(|e| LoginError::Other(e.into(), "url"))
    }

    fn with_cookies(&self, request: reqwest::RequestBuilder, url: &Url) -> reqwest::RequestBuilder {
        match self.jar.cookies(url) {
            Some(cookies) => request.header(COOKIE, cookies),
            None => request,
        }
    }

    /// Sends, keeps the cookies it sets, reads the body; the status must be `expected`.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
        expected: StatusCode,
        what: &'static str,
    ) -> Result<String, LoginError> {
        let request = self.with_cookies(request, url).timeout(LOGIN_TIMEOUT);
        let response = request.send().await.map_err(|e| LoginError::Http(e, what))?;
        let status = response.status();
        let retry_after = response.headers().contains_key(RETRY_AFTER);
        self.jar.set_cookies(&mut response.headers().get_all(SET_COOKIE).iter(), url);
        let body = response.text().await.map_err(|e| LoginError::Http(e, what))?;
        if status != expected {
            return Err(LoginError::Status(status, what, retry_after));
        }
        Ok(body)
    }

    /// GET /login, then POST it with the form's CSRF token; a 303 is a login.
    async fn log_in(&self, email: &str, password: &str) -> Result<(), LoginError> {
        let url = self.url("/login")?;
        let page = self.exchange(self.client.get(url.clone()), &url, StatusCode::OK, "GET /login").await?;
        let token = csrf_token(&page).map_err(|e| LoginError::Other(e, "GET /login"))?;
        let origin = self.base.origin().ascii_serialization();
        let form = [("csrf_token", token.as_str()), ("next", ""), ("email", email), ("password", password)];
        let request = self.client.post(url.clone()).header(ORIGIN, origin).form(&form);
        self.exchange(request, &url, StatusCode::SEE_OTHER, "POST /login").await?;
        Ok(())
    }

    /// GET /about, which must answer 200 (logged in); then the cookies it would be sent.
    async fn about(&self) -> Result<CookieSizes, LoginError> {
        let url = self.url("/about")?;
        self.exchange(self.client.get(url.clone()), &url, StatusCode::OK, "GET /about").await?;
        let cookies = self.jar.cookies(&url);
        let cookies = cookies.as_ref().and_then(|value| value.to_str().ok()).unwrap_or("");
        let kept: Vec<&str> = cookies
            .split("; ")
            .filter(|c| !c.is_empty() && !c.starts_with(&format!("{FLASH_COOKIE}=")))
            .collect();
        let session =
            kept.iter().find(|c| c.starts_with(&format!("{SESSION_COOKIE}="))).map_or(0, |c| c.len());
        Ok(CookieSizes { header: kept.join("; ").len(), session })
    }
}

fn csrf_token(page: &str) -> Result<String> {
    let selector = scraper::Selector::parse(r#"input[name="csrf_token"]"#).map_err(|e| anyhow!("{e}"))?;
    scraper::Html::parse_document(page)
        .select(&selector)
        .next()
        .and_then(|input| input.value().attr("value"))
        .map(str::to_owned)
        .context("no csrf_token field on the login page")
}

struct StormReport {
    logins: usize,
    elapsed: Duration,
    clients: usize,
    failures: Failures,
}

impl StormReport {
    fn print(&self) {
        println!("storm_clients={}", self.clients);
        println!("storm_logins={}", self.logins);
        println!("storm_elapsed_s={:.3}", self.elapsed.as_secs_f64());
        println!("storm_logins_per_s={:.3}", self.logins as f64 / self.elapsed.as_secs_f64().max(1e-9));
        println!("storm_503={}", self.failures.status.get(&503).copied().unwrap_or(0));
        println!("storm_503_without_retry_after={}", self.failures.no_retry_after);
        self.failures.print("storm");
    }
}

/// Each client logs in again and again until `duration` is over; the logins in flight then are
/// finished and counted, and the rate is over the time until the last one answered.
async fn storm(login: LoginArgs, clients: usize, duration: Duration) -> Result<StormReport> {
    let client = client()?;
    let base = Url::parse(&login.url).with_context(|| format!("--url {}", login.url))?;
    let start = Instant::now();
    let deadline = start + duration;
    let shared = Arc::new(Mutex::new(Failures::default()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (client, base, login, shared, done) =
            (client.clone(), base.clone(), login.clone(), shared.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Failures::default();
            let mut last = Instant::now();
            while Instant::now() < deadline {
                let browser = Browser::new(&client, &base);
                match browser.log_in(&login.email, &login.password).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        error.record(&mut failures);
                        // Do not spin on a server that refuses at once.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                last = Instant::now();
            }
            shared.lock().await.merge(failures);
            last
        }));
    }
    let mut last = start;
    for task in tasks {
        last = last.max(task.await?);
    }
    let failures = std::mem::take(&mut *shared.lock().await);
    Ok(StormReport { logins: done.load(Ordering::Relaxed), elapsed: last - start, clients, failures })
}

async fn logins(login: LoginArgs, count: usize, concurrency: usize) -> Result<()> {
    let client = client()?;
    let base = Url::parse(&login.url).with_context(|| format!("--url {}", login.url))?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, base, login, next) = (client.clone(), base.clone(), login.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut made, mut header, mut session) = (0usize, 0usize, 0usize);
            let mut failures = Failures::default();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let browser = Browser::new(&client, &base);
                let sizes = match browser.log_in(&login.email, &login.password).await {
                    Ok(()) => browser.about().await,
                    Err(error) => Err(error),
                };
                match sizes {
                    Ok(sizes) => {
                        made += 1;
                        header = header.max(sizes.header);
                        session = session.max(sizes.session);
                    }
                    Err(error) => error.record(&mut failures),
                }
            }
            (made, header, session, failures)
        }));
    }
    let (mut made, mut header, mut session) = (0, 0, 0);
    let mut failures = Failures::default();
    for task in tasks {
        let (m, h, s, f) = task.await?;
        made += m;
        header = header.max(h);
        session = session.max(s);
        failures.merge(f);
    }
    println!("logins_made={made}");
    println!("logins_elapsed_s={:.1}", start.elapsed().as_secs_f64());
    println!("cookie_header_bytes={header}");
    println!("session_cookie_bytes={session}");
    failures.print("logins");
    Ok(())
}
