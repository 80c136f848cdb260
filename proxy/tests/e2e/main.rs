//! End-to-end tests of the router with mock-vllm upstreams on loopback.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

mod admin;
mod exposure;
mod failover;
mod hardening;
mod harness;
mod raw;
mod routing;
mod security;
mod streaming;
