#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail by panicking")]

//! Integration tests: the real server on a random port, real SQLite, PostgreSQL and Redis,
//! driven over HTTP by `support::Browser` (reqwest, cookies on, redirects off). Each test has
//! its own database. `support` holds what the tests share.
//!
//! PostgreSQL and Redis come from `TEST_POSTGRES_URL` and `TEST_REDIS_URL`, which
//! `scripts/test` sets after starting throwaway servers. `browser` drives a headless Chromium
//! through chromedriver (`TEST_CHROMEDRIVER`, `TEST_CHROMIUM`) for what only a browser runs.

mod support;

mod admin;
mod alerts;
mod audit;
mod auth;
mod browser;
mod cli;
mod csrf;
mod devices;
mod email;
mod email_confirmation;
mod example;
mod http;
mod key_rotation;
mod lifecycle;
mod login_cache;
mod logins;
mod metrics;
mod migrations;
mod pages;
mod passkeys;
mod password_policy;
mod preferences;
mod reauth;
mod resilience;
mod second_factor;
mod sessions;
mod shop;
mod shutdown;
mod throttle;
