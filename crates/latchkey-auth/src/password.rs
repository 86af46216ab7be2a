//! Password hashing: bcrypt over an HMAC-SHA-256 pre-hash, on threads of its own.
//!
//! bcrypt reads only the first 72 bytes of its input, so a long password would be accepted by
//! typing its prefix. Every password is therefore first reduced to
//! `base64(HMAC-SHA-256(key = bcrypt salt, password))` (44 bytes), as passlib's
//! `bcrypt_sha256` does. Keying the HMAC with the per-hash salt (rather than hashing plainly)
//! stops "password shucking": an unsalted SHA-256 leaked elsewhere cannot be tested against
//! these hashes. The stored value is an ordinary `$2b$` bcrypt string.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::error::AuthError;

/// Longest password accepted, in bytes; anything longer is refused before any hashing.
pub const MAX_BYTES: usize = 1024;

/// Why a new password was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewPasswordError {
    /// Fewer characters than the minimum, which it carries.
    TooShort(usize),
    /// More than [`MAX_BYTES`] bytes.
    TooLong,
    /// The confirmation differs from the password.
    Mismatch,
    /// The password contains the local part of the account's email address.
    ContainsEmail,
    /// Common or easy to guess; carries what zxcvbn says about it, when it says something.
    Guessable(Option<String>),
}

/// The least zxcvbn score accepted: 3 is "safely unguessable", about 10^10 guesses, which
/// resists online guessing and slows an offline attack on a stolen bcrypt hash.
pub const MIN_SCORE: zxcvbn::Score = zxcvbn::Score::Three;
/// zxcvbn's time grows with length; it reads at most this many characters (as its authors
/// advise), beyond which a password is not the guessable kind anyway.
const STRENGTH_CHARS: usize = 100;

impl NewPasswordError {
    /// The message to show next to the form field.
    pub fn message(&self) -> String {
        match self {
            Self::TooShort(min) => format!("Use at least {min} characters."),
            Self::TooLong => format!("Use at most {MAX_BYTES} bytes."),
            Self::Mismatch => "The passwords do not match.".to_owned(),
            Self::ContainsEmail => "Do not use your email address in your password.".to_owned(),
            Self::Guessable(None) => {
                "This password is too easy to guess. Try a few unrelated words.".to_owned()
            }
            Self::Guessable(Some(why)) => {
                format!("This password is too easy to guess: {why} Try a few unrelated words.")
            }
        }
    }

    /// Whether the problem belongs to the confirmation field rather than the password.
    pub fn is_about_confirmation(&self) -> bool {
        matches!(self, Self::Mismatch)
    }
}

/// The rules for a new password (NIST SP 800-63B): any Unicode, at least `min_length`
/// characters, at most `MAX_BYTES` bytes, typed the same twice, not containing the local part
/// of `email` (when it has 4 characters or more, compared case-insensitively), and not common
/// or guessable: zxcvbn scores it at least [`MIN_SCORE`], knowing the email and `site` (so
/// `latchkey2025` is guessable here). Returns every problem found, none if it passes.
///
/// ```
/// use latchkey_auth::password::{validate_new, NewPasswordError};
/// assert!(validate_new("correct horse battery", "correct horse battery", 8, "ann@example.com", "latchkey").is_empty());
/// let problems = validate_new("short", "shirt", 8, "ann@example.com", "latchkey");
/// assert_eq!(problems[..2], [NewPasswordError::TooShort(8), NewPasswordError::Mismatch]);
/// let problems = validate_new("password1234", "password1234", 8, "ann@example.com", "latchkey");
/// assert!(matches!(problems[..], [NewPasswordError::Guessable(_)]));
/// let problems = validate_new("x-Johanna-4-ever", "x-Johanna-4-ever", 8, "johanna@example.com", "latchkey");
/// assert!(problems.contains(&NewPasswordError::ContainsEmail));
/// ```
pub fn validate_new(
    password: &str,
    confirmation: &str,
    min_length: usize,
    email: &str,
    site: &str,
) -> Vec<NewPasswordError> {
    let mut problems = Vec::new();
    if password.len() > MAX_BYTES {
        problems.push(NewPasswordError::TooLong);
    } else if password.chars().count() < min_length {
        problems.push(NewPasswordError::TooShort(min_length));
    }
    if password != confirmation {
        problems.push(NewPasswordError::Mismatch);
    }
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if local.chars().count() >= 4 && password.to_lowercase().contains(&local) {
        problems.push(NewPasswordError::ContainsEmail);
    } else if problems.is_empty() {
        let head: String = password.chars().take(STRENGTH_CHARS).collect();
        let strength = zxcvbn::zxcvbn(&head, &[email, &local, site]);
        if strength.score() < MIN_SCORE {
            let why = strength.feedback().and_then(|f| f.warning()).map(|w| format!("{w}."));
            problems.push(NewPasswordError::Guessable(why));
        }
    }
    problems
}

fn prehash(password: &str, salt: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(salt.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(password.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn salt_string(salt: &[u8; 16]) -> String {
    base64::engine::GeneralPurpose::new(&base64::alphabet::BCRYPT, base64::engine::general_purpose::NO_PAD)
        .encode(salt)
}

/// Hashes synchronously; request code calls [`Hasher::hash`].
pub fn hash_blocking(password: &str, cost: u32) -> Result<String, bcrypt::BcryptError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let parts = bcrypt::hash_with_salt(prehash(password, &salt_string(&salt)), cost, salt)?;
    Ok(parts.format_for_version(bcrypt::Version::TwoB))
}

/// Verifies synchronously; a malformed stored hash simply does not match.
pub fn verify_blocking(password: &str, stored: &str) -> bool {
    let Ok(parts) = stored.parse::<bcrypt::HashParts>() else {
        return false;
    };
    bcrypt::verify(prehash(password, &parts.get_salt()), stored).unwrap_or(false)
}

/// The bcrypt cost of a stored hash, if it is one.
pub fn cost_of(stored: &str) -> Option<u32> {
    stored.parse::<bcrypt::HashParts>().ok().map(|parts| parts.get_cost())
}

/// A password as typed: `Debug` never shows it, and it deserialises from a form field.
///
/// ```
/// use latchkey_auth::password::Password;
/// let password = Password::new("hunter2");
/// assert_eq!(format!("{password:?}"), "Password([redacted])");
/// assert_eq!(password.expose(), "hunter2");
/// ```
#[derive(Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// A password from anywhere but a form field (which deserialises into one directly).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The password itself, for hashing or verifying only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// Hashes and verifies passwords at one cost, on threads of their own.
///
/// bcrypt is meant to be slow (about a quarter of a second at cost 12), so it never runs on
/// the blocking pool that serves database work: there, a burst of logins would hold every
/// thread and every page behind them would wait. Here at most one hash per core runs at a
/// time and the rest wait in a first-come queue of bounded length; past the bound a hash is
/// refused at once with [`AuthError::Busy`] (503 with `Retry-After`). Written by hand: a
/// bounded queue and a few threads, which no crate in the stack offers with a refusal when
/// full.
///
/// ```no_run
/// use latchkey_auth::password::{Hasher, Password};
/// # async fn example() -> Result<(), latchkey_auth::AuthError> {
/// let hasher = Hasher::new(12).await?;
/// let stored = hasher.hash(Password::new("correct horse battery staple")).await?;
/// assert!(hasher.verify(Password::new("correct horse battery staple"), Some(stored)).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hasher {
    cost: u32,
    /// Checked when an unknown email logs in, so a failure takes as long either way.
    dummy: String,
    pool: Arc<HashPool>,
    /// Told how long each hash waited for a thread and how long it ran (for metrics).
    observer: Option<HashObserver>,
}

/// How long one bcrypt run waited for a hashing thread, and how long it ran.
#[derive(Debug, Clone, Copy)]
pub struct HashTiming {
    /// From the request for a thread to the start of the work.
    pub waited: Duration,
    /// The work itself.
    pub took: Duration,
}

/// Receives the [`HashTiming`] of every hash and check.
pub type HashObserver = Arc<dyn Fn(HashTiming) + Send + Sync>;

/// A job for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads and their queue.
struct HashPool {
    /// Unbounded: `admitted` is the bound.
    queue: std::sync::mpsc::Sender<Job>,
    /// One permit per thread and per place in the queue, held by each job from its admission
    /// until it has run. Admission is counted here rather than by a bounded channel's buffer: a
    /// job a thread has not yet taken out of the channel (a niced thread on a busy machine
    /// wakes late) still fills a place there, and would make the pool refuse work it has room
    /// for.
    admitted: Arc<tokio::sync::Semaphore>,
    /// How long a refused client is told to wait: about the time a full queue takes to drain
    /// (at least a second).
    retry_after: Duration,
}

impl HashPool {
    /// Starts `threads` threads (at least one) behind a queue of `capacity` places, for work
    /// that takes about `hash_time` a job.
    fn start(threads: usize, capacity: usize, hash_time: Duration) -> Result<Self, AuthError> {
        let threads = threads.max(1);
        let rounds = u32::try_from(capacity.div_ceil(threads)).unwrap_or(u32::MAX);
        let retry_after = hash_time.saturating_mul(rounds).max(Duration::from_secs(1));
        let places = threads.saturating_add(capacity);
        let admitted = Arc::new(tokio::sync::Semaphore::new(places.min(tokio::sync::Semaphore::MAX_PERMITS)));
        let (queue, jobs) = std::sync::mpsc::channel::<Job>();
        let jobs = Arc::new(std::sync::Mutex::new(jobs));
        for n in 0..threads {
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // One idle thread waits on the queue while holding the lock; the others
                        // wait for the lock. The queue closes when the last `Hasher` is dropped.
                        let next = match jobs.lock() {
                            Ok(jobs) => jobs.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = next else { return };
                        // A panic in one job must not take the thread (and its share of the
                        // pool) with it; the job's caller sees its answer dropped.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .map_err(AuthError::internal)?;
        }
        Ok(Self { queue, admitted, retry_after })
    }

    /// Runs `work` on a hashing thread, or refuses at once when every thread is busy and every
    /// place in the queue taken.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let Ok(permit) = Arc::clone(&self.admitted).try_acquire_owned() else {
            return Err(AuthError::Busy(self.retry_after));
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // Dropped with the job, run or not (a panic, or the threads gone), freeing its place.
            let _permit = permit;
            // The caller may have gone (the client hung up): nobody to tell.
            let _ = answer.send(work());
        });
        if self.queue.send(job).is_err() {
            return Err(AuthError::internal(anyhow::anyhow!("the password hashing threads stopped")));
        }
        answered.await.map_err(|_| AuthError::internal(anyhow::anyhow!("a password hash failed (panicked)")))
    }
}

/// How much lower than the workers a hashing thread runs: 10 steps of nice, where the
/// scheduler gives it about a tenth of a core the workers want (and all of one they leave), and
/// a worker woken by a request takes the core back at once instead of after the hash's time
/// slice. Logins wait; pages do not.
const HASHING_NICENESS: i32 = 10;

/// The lowest priority (highest nice value) there is.
const NICE_MAX: i32 = 19;

/// Lowers the calling (hashing) thread's priority by [`HASHING_NICENESS`] below the thread
/// that started it; Linux keeps a nice value per thread.
#[cfg(target_os = "linux")]
fn lower_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    let thread = Some(rustix::thread::gettid());
    let lowered = getpriority_process(thread)
        .and_then(|nice| setpriority_process(thread, (nice + HASHING_NICENESS).min(NICE_MAX)));
    if let Err(error) = lowered {
        log::warn!("could not lower the password hashing thread's priority: {error}");
    }
}

/// Elsewhere the hashing threads run at the workers' priority.
#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// The hashing threads a [`Hasher`] starts by default: one per core this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Places in the queue per hashing thread by default: at cost 12 a full queue drains in
/// about eight seconds.
pub const DEFAULT_QUEUE_PER_THREAD: usize = 32;

impl Hasher {
    /// A hasher for `cost` (4 to 31) on [`default_threads`] threads with
    /// [`DEFAULT_QUEUE_PER_THREAD`] places each; hashes its dummy password once.
    pub async fn new(cost: u32) -> Result<Self, AuthError> {
        let threads = default_threads();
        Self::with_threads(cost, threads, threads * DEFAULT_QUEUE_PER_THREAD).await
    }

    /// A hasher for `cost` on `threads` threads behind a queue of `queue` places.
    pub async fn with_threads(cost: u32, threads: usize, queue: usize) -> Result<Self, AuthError> {
        // Not on a hashing thread: nothing is served yet, so the lowered priority would only
        // make the start wait on whatever else the machine runs (a cost-16 hash at nice 10
        // beside a busy neighbour takes most of a minute).
        let started = Instant::now();
        let dummy = tokio::task::spawn_blocking(move || hash_blocking("latchkey dummy password", cost))
            .await
            .map_err(AuthError::internal)?
            .map_err(AuthError::internal)?;
        let pool = HashPool::start(threads, queue, started.elapsed())?;
        Ok(Self { cost, dummy, pool: Arc::new(pool), observer: None })
    }

    /// Tells `observer` how long each hash and check waited and ran.
    pub fn with_observer(mut self, observer: HashObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs `work` on a hashing thread, timing it for the observer.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let queued = Instant::now();
        let (value, timing) = self
            .pool
            .run(move || {
                let started = Instant::now();
                let value = work();
                (value, HashTiming { waited: started - queued, took: started.elapsed() })
            })
            .await?;
        if let Some(observer) = &self.observer {
            observer(timing);
        }
        Ok(value)
    }

    /// The bcrypt cost new hashes are made at.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Hashes on a hashing thread.
    pub async fn hash(&self, password: Password) -> Result<String, AuthError> {
        let cost = self.cost;
        self.run(move || hash_blocking(password.expose(), cost)).await?.map_err(AuthError::internal)
    }

    /// Verifies on a hashing thread. With no stored hash (unknown email) it checks the dummy
    /// hash, so that the answer takes as long as for a real account. A password over
    /// [`MAX_BYTES`] never matches and is never hashed.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<bool, AuthError> {
        if password.expose().len() > MAX_BYTES {
            return Ok(false);
        }
        let dummy = self.dummy.clone();
        self.run(move || {
            let matched = verify_blocking(password.expose(), stored.as_deref().unwrap_or(&dummy));
            matched && stored.is_some()
        })
        .await
    }

    /// Whether a stored hash was made at another cost and should be replaced at the next
    /// successful login, so every account costs the same to check.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        cost_of(stored) != Some(self.cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[actix_web::test]
    async fn hashing_threads_run_below_the_thread_that_started_them() -> Result<(), AuthError> {
        use rustix::process::getpriority_process;
        let starter = getpriority_process(None).map_err(AuthError::internal)?;
        let pool = HashPool::start(1, 1, Duration::ZERO)?;
        let hashing = pool.run(|| getpriority_process(Some(rustix::thread::gettid()))).await?;
        assert_eq!(hashing.map_err(AuthError::internal)?, (starter + HASHING_NICENESS).min(NICE_MAX));
        Ok(())
    }

    #[test]
    fn round_trip_and_wrong_password() -> Result<(), bcrypt::BcryptError> {
        let stored = hash_blocking("correct horse battery staple", 4)?;
        assert!(stored.starts_with("$2b$04$"));
        assert!(verify_blocking("correct horse battery staple", &stored));
        assert!(!verify_blocking("correct horse battery stapl", &stored));
        assert!(!verify_blocking("anything", "not a hash"));
        Ok(())
    }

    #[test]
    fn the_72_byte_prefix_of_a_long_password_does_not_match() -> Result<(), bcrypt::BcryptError> {
        let long = "é".repeat(50); // 100 bytes
        let stored = hash_blocking(&long, 4)?;
        assert!(verify_blocking(&long, &stored));
        assert!(!verify_blocking(&long[..72], &stored));
        Ok(())
    }

    #[test]
    fn the_cost_of_a_hash_is_read_back() -> Result<(), bcrypt::BcryptError> {
        assert_eq!(cost_of(&hash_blocking("x", 5)?), Some(5));
        assert_eq!(cost_of("not a hash"), None);
        Ok(())
    }

    #[test]
    fn our_salt_encoding_matches_bcrypts() -> Result<(), bcrypt::BcryptError> {
        let salt = [7u8; 16];
        let parts = bcrypt::hash_with_salt("x", 4, salt)?;
        assert_eq!(parts.get_salt(), salt_string(&salt));
        Ok(())
    }
}

#[cfg(test)]
mod strength_tests {
    use super::*;

    fn problems(password: &str, email: &str) -> Vec<NewPasswordError> {
        validate_new(password, password, 12, email, "latchkey")
    }

    #[test]
    fn common_and_guessable_passwords_are_refused_with_a_reason() {
        for guessable in ["password1234", "123456789012", "latchkey2025", "qwertyuiop12", "aaaaaaaaaaaa"] {
            let found = problems(guessable, "someone@example.com");
            assert!(matches!(found[..], [NewPasswordError::Guessable(_)]), "{guessable}: {found:?}");
        }
        let found = problems("Summer-Johanson-Beach", "johanson@example.com");
        assert_eq!(found, [NewPasswordError::ContainsEmail], "the email's local part, in any case");
        assert!(
            problems("bob-and-the-sea-2025", "bob@example.com").is_empty(),
            "a local part under 4 characters"
        );
    }

    #[test]
    fn strong_passwords_pass() {
        for strong in ["correct horse battery staple", "tangerine-oxbow-quilt-87", "Zq4!mW9#rT2&"] {
            assert!(problems(strong, "someone@example.com").is_empty(), "{strong}");
        }
    }

    /// One thread and one place in the queue, both taken by jobs sent back to back (before the
    /// thread has taken the first out of the channel): the third job is refused at once with
    /// `Busy` (503 with Retry-After), and the first two still finish, in order.
    #[actix_web::test]
    async fn a_full_queue_refuses_at_once_and_the_queued_work_still_runs() -> Result<(), AuthError> {
        let pool = Arc::new(HashPool::start(1, 1, Duration::ZERO)?);
        let (release, held) = std::sync::mpsc::channel::<()>();
        // Both sent at once, however late the thread wakes to take the first.
        let busy = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(move || held.recv().is_ok()).await })
        };
        let queued = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(|| "queued").await })
        };
        // Let the spawned tasks put their jobs in the queue (this runtime has one thread).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let third = tokio::time::timeout(Duration::from_secs(5), pool.run(|| "third")).await;
        let wait = match third {
            Ok(Err(AuthError::Busy(wait))) => Some(wait),
            _ => None,
        };
        assert!(wait.is_some(), "one thread, held, and one place, taken: the third is refused");
        assert!(wait >= Some(Duration::from_secs(1)), "Retry-After of at least a second: {wait:?}");
        release.send(()).map_err(AuthError::internal)?;
        assert!(busy.await.map_err(AuthError::internal)??);
        assert_eq!(queued.await.map_err(AuthError::internal)??, "queued");
        assert_eq!(pool.run(|| 42).await?, 42, "a free pool takes work again");
        Ok(())
    }
}
