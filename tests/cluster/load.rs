//! A bounded load of logged-in visitors, and what each of their requests got: a status, or
//! the error of a request that got none (a refused or dropped connection).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::task::JoinHandle;

use crate::support::Browser;

/// One request: when it was sent, and its status or the error it ended with.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub sent: Instant,
    pub result: Result<u16, String>,
}

/// Visitors each requesting `path` in a loop, with a short pause between requests, until
/// [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    visitors: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    pub fn start(browsers: Vec<Browser>, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let visitors = browsers
            .into_iter()
            .map(|browser| {
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let result = match browser.request(Method::GET, path).send().await {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                // Read the body: a connection dropped mid-answer is an error too.
                                match response.bytes().await {
                                    Ok(_) => Ok(status),
                                    Err(e) => Err(format!("{status}, then the body failed: {e}")),
                                }
                            }
                            Err(e) => Err(format!("{e:?}")),
                        };
                        outcomes.push(Outcome { sent, result });
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    outcomes
                })
            })
            .collect();
        Load { stop, visitors }
    }

    pub async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut outcomes = Vec::new();
        for visitor in self.visitors {
            outcomes.extend(visitor.await.expect("a visitor task"));
        }
        outcomes.sort_by_key(|outcome| outcome.sent);
        Tally { outcomes }
    }
}

/// Every request of a load.
pub struct Tally {
    pub outcomes: Vec<Outcome>,
}

impl Tally {
    /// How many requests got each status or error, for messages.
    pub fn summary(&self) -> String {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for outcome in &self.outcomes {
            let key = match &outcome.result {
                Ok(status) => status.to_string(),
                Err(error) => format!("error {error}"),
            };
            *counts.entry(key).or_default() += 1;
        }
        format!("{} requests: {counts:?}", self.outcomes.len())
    }

    /// The requests that got something other than one of `allowed`, or no status at all.
    pub fn unexpected(&self, allowed: &[u16]) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| !o.result.as_ref().is_ok_and(|s| allowed.contains(s))).collect()
    }

    /// How many requests got `status`.
    pub fn count(&self, status: u16) -> usize {
        self.outcomes.iter().filter(|o| o.result == Ok(status)).count()
    }

    /// The outcomes of requests sent at or after `since`.
    pub fn since(&self, since: Instant) -> Tally {
        Tally { outcomes: self.outcomes.iter().filter(|o| o.sent >= since).cloned().collect() }
    }
}
