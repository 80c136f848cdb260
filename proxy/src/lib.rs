//! Tandemn's data plane: the Pingora proxy that routes OpenAI-compatible traffic across
//! spot replicas and serverless endpoints. It holds no cloud clients; backends arrive
//! as `BackendSpec`s and live in one swapped `RouteTable`.
//!
//! ```text
//! accept ─► connection::RouterApp (max_connections; each head: header_timeout, 64 KiB)
//!   ─► Pingora HTTP/1 (keep-alive timeout, pipelined requests in order)
//! client ─► request_filter ─┬─ /router/*, /metrics ─► admin (admin key)
//!                           ├─ client auth ─► admission (max_concurrent_requests)
//!                           ├─ read body (≤ max_body_bytes, else 413)
//!                           └─ forward::run
//!                                ├─ select::pick on one table snapshot (spot first)
//!                                ├─ send; on connect error, timeout or spot 502/503/504
//!                                │  try the next backend (nothing sent to the client yet);
//!                                │  a request is never written twice to one backend
//!                                └─ stream: header, then bytes as they come; an upstream
//!                                   failure ends SSE with an error event; a client that
//!                                   leaves, or stalls a write past write_timeout, cancels
//!                                   the upstream request
//! logging: one access line per request
//! ```

pub mod admin;
pub mod backend;
pub mod connection;
pub mod errors;
pub mod forward;
pub mod health;
pub mod metrics;
pub mod routing;
pub mod select;
pub mod server;
pub mod service;
pub mod sse;

pub use routing::RoutingState;
pub use service::{Router, RouterService, RouterSettings};
