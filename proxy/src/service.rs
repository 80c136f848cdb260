//! The Pingora service. `request_filter` does the whole job: admin routes, client auth,
//! admission, reading the body (bounded), then `forward::run` with its own attempt loop.
//! Pingora's built-in proxy loop is not used because in 0.9 it replays at most 64 KiB
//! of a request body and cannot retry on an upstream status (see ARCHITECTURE.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use tandemn_config::api::{BackendId, BackendLoad, BackendSpec, LoadSnapshot, LoadSource, RouteSink, Secret};

use crate::backend::BackendState;
use crate::connection::{self, ConnectionStats};
use crate::errors::ProxyError;
use crate::metrics::Metrics;
use crate::routing::RoutingState;
use crate::{admin, forward};

/// How the router treats clients, and its timeouts and limits.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub api_keys: Vec<Secret>,
    pub admin_key: Option<Secret>,
    /// Keys that open `GET /router/health` and nothing else: what `tandemn status` keeps,
    /// so the admin key itself is never stored.
    pub health_keys: Vec<Secret>,
    /// No client auth at all (explicit opt-in).
    pub public: bool,
    /// `/router/health` without the admin key.
    pub health_public: bool,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_body_bytes: u64,
    pub max_concurrent_requests: u64,
    pub queue_timeout: Duration,
    pub max_attempts: u32,
    /// How long an idle keep-alive client connection is kept between requests.
    pub keepalive_timeout: Duration,
    /// The total time a request head may take to arrive, from its first byte.
    pub header_timeout: Duration,
    /// The longest a write to a client may stall: a client that stops reading is
    /// dropped, which frees its backend slot and cancels the upstream request.
    pub write_timeout: Duration,
    /// Open client connections; more are answered 503 and closed.
    pub max_connections: u64,
}

/// Everything the router shares between requests, the admin API and background work.
pub struct Router {
    pub state: Arc<RoutingState>,
    pub settings: RouterSettings,
    pub metrics: Metrics,
    pub connector: Connector,
    pub started: Instant,
    /// Milliseconds spot was ready, counted by the health service.
    pub spot_ready_ms: AtomicU64,
    pub connections: ConnectionStats,
    /// Shutting down: new requests are refused while the ones in flight finish.
    pub draining: AtomicBool,
}

impl Router {
    pub fn new(state: Arc<RoutingState>, settings: RouterSettings) -> Self {
        let mut options = pingora::connectors::ConnectorOptions::new(1);
        options.keepalive_pool_size = 4096;
        Self {
            state,
            connections: ConnectionStats::new(settings.max_connections),
            settings,
            metrics: Metrics::default(),
            connector: Connector::new(Some(options)),
            started: Instant::now(),
            spot_ready_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
        }
    }

    /// What the provisioner observes: demand, in-flight and each backend's share. Resets
    /// the in-flight peak, so each snapshot covers the time since the previous one.
    pub fn load_snapshot(&self) -> LoadSnapshot {
        let now_ms = self.now_ms();
        let inflight = self.metrics.inflight.load(Relaxed);
        let backends = self
            .state
            .snapshot()
            .backends()
            .map(|b| BackendLoad {
                id: BackendId::new(&b.id),
                tier: b.tier,
                url: b.url.to_string(),
                inflight: b.inflight(),
                ready: b.state() == BackendState::Ready && !b.circuit_open(now_ms),
            })
            .collect();
        LoadSnapshot {
            arrived: self.metrics.arrived.load(Relaxed),
            inflight,
            peak_inflight: self.metrics.peak_inflight.swap(inflight, Relaxed).max(inflight),
            spot_requests: self.metrics.spot.requests.load(Relaxed),
            serverless_requests: self.metrics.serverless.requests.load(Relaxed),
            backends,
        }
    }

    /// Milliseconds since the router started: the clock circuit breakers use.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl LoadSource for Router {
    fn snapshot(&self) -> LoadSnapshot {
        self.load_snapshot()
    }
}

impl RouteSink for Router {
    fn publish(&self, backends: &[BackendSpec]) -> Result<(), String> {
        self.state.publish(backends).map(|_| ())
    }
}

/// Per-request state for logging.
#[derive(Default)]
pub struct RequestCtx {
    pub request_id: String,
    pub started: Option<Instant>,
    pub status: u16,
    pub backend: Option<String>,
    pub attempts: u32,
    pub ttfb: Option<Duration>,
    pub output_tokens: Option<u64>,
    pub error: Option<&'static str>,
}

/// The `ProxyHttp` face of a shared `Router`.
pub struct RouterService(pub Arc<Router>);

#[async_trait]
impl ProxyHttp for RouterService {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// No downstream modules: bytes pass through untouched (no compression), and no
    /// per-chunk module call.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let router = &self.0;
        ctx.started = Some(Instant::now());
        if let Some(connection) = connection::state_of(&session.downstream_session) {
            connection.head_complete();
        }
        configure_downstream(session, &router.settings);
        ctx.request_id = session
            .req_header()
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| valid_request_id(v))
            .map_or_else(new_request_id, str::to_string);
        let path = session.req_header().uri.path();
        if path.starts_with("/router/") || path == "/metrics" {
            let outcome = admin::handle(router, session).await;
            return respond(session, ctx, outcome).await;
        }
        if !router.settings.public && !client_authorized(session, &router.settings.api_keys) {
            router.metrics.rejected_unauthorized.fetch_add(1, Relaxed);
            return respond(session, ctx, Err(ProxyError::Unauthorized)).await;
        }
        if router.draining.load(Relaxed) {
            return respond(session, ctx, Err(ProxyError::ShuttingDown)).await;
        }
        router.metrics.arrived.fetch_add(1, Relaxed);
        let Some(_admitted) = Admission::enter(&router.metrics, router.settings.max_concurrent_requests) else {
            router.metrics.rejected_overloaded.fetch_add(1, Relaxed);
            return respond(session, ctx, Err(ProxyError::Overloaded)).await;
        };
        // A body that may not come gets its 413 before a go-ahead.
        let declared = declared_length(session);
        if declared.is_some_and(|length| length > router.settings.max_body_bytes) {
            router.metrics.rejected_too_large.fetch_add(1, Relaxed);
            return respond(session, ctx, Err(ProxyError::BodyTooLarge { limit: router.settings.max_body_bytes }))
                .await;
        }
        if expects_continue(session) && session.write_continue_response().await.is_err() {
            router.metrics.client_aborts.fetch_add(1, Relaxed);
            ctx.error = Some("client_gone");
            return Ok(true);
        }
        // A slow sender must not hold an admission place for long.
        let reading =
            tokio::time::timeout(router.settings.idle_timeout, read_body(session, router.settings.max_body_bytes));
        let body = match reading.await.unwrap_or(Err(ProxyError::RequestTimeout)) {
            Ok(body) => body,
            Err(error) => {
                if matches!(error, ProxyError::BodyTooLarge { .. }) {
                    router.metrics.rejected_too_large.fetch_add(1, Relaxed);
                }
                return respond(session, ctx, Err(error)).await;
            }
        };
        match forward::run(router, session, ctx, body).await {
            Ok(()) => Ok(true),
            // Headers are out; closing the connection is the only honest signal left.
            Err(ProxyError::BrokenResponse) => {
                Error::e_explain(ErrorType::ConnectionClosed, "the upstream failed after the response started")
            }
            Err(error) => {
                if matches!(error, ProxyError::NoCapacity | ProxyError::NoBackends) {
                    router.metrics.rejected_no_capacity.fetch_add(1, Relaxed);
                }
                respond(session, ctx, Err(error)).await
            }
        }
    }

    /// Only reached for a response that broke after its header went out: nothing more may
    /// be written, and the connection must not be reused.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        _error: &pingora::Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if session.response_written().is_none() {
            let _ = session.respond_error(502).await;
        }
        FailToProxy { error_code: 502, can_reuse_downstream: false }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        // request_filter answers every request, so Pingora never asks for a peer.
        Error::e_explain(ErrorType::InternalError, "the router forwards in request_filter")
    }

    async fn logging(&self, session: &mut Session, _error: Option<&pingora::Error>, ctx: &mut RequestCtx) {
        if let Some(connection) = connection::state_of(&session.downstream_session) {
            connection.request_done();
        }
        let elapsed = ctx.started.map_or(Duration::ZERO, |s| s.elapsed());
        tracing::info!(
            target: "tandemn::access",
            request_id = %ctx.request_id,
            method = %session.req_header().method,
            path = %session.req_header().uri.path(),
            status = ctx.status,
            backend = ctx.backend.as_deref().unwrap_or("-"),
            attempts = ctx.attempts,
            ttfb_ms = ctx.ttfb.map_or(-1.0, |t| t.as_secs_f64() * 1000.0),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            output_tokens = ctx.output_tokens.unwrap_or(0),
            error = ctx.error.unwrap_or("-"),
        );
    }
}

/// Holds one of the router's `max_concurrent_requests` places for the whole request,
/// streaming included.
struct Admission<'a> {
    inflight: &'a AtomicU64,
}

impl<'a> Admission<'a> {
    fn enter(metrics: &'a Metrics, limit: u64) -> Option<Self> {
        let inflight = &metrics.inflight;
        let before = inflight.fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1)).ok()?;
        metrics.peak_inflight.fetch_max(before + 1, Relaxed);
        Some(Self { inflight })
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Relaxed);
    }
}

/// Per-request settings of the client connection (Pingora resets some per request).
fn configure_downstream(session: &mut Session, settings: &RouterSettings) {
    // Pingora keeps an HTTP/1.1 connection forever unless told a timeout.
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(settings.keepalive_timeout.as_secs().max(1)));
    }
    session.set_write_timeout(Some(settings.write_timeout));
    // Requests sent before the previous answer wait their turn in Pingora's buffer.
    session.set_pipelining_enabled(true);
    // A client that half-closes after its request still gets the answer; one that is
    // really gone is noticed by `forward::client_gone`.
    session.set_abort_on_close(false);
}

/// `Expect: 100-continue` on HTTP/1.1: the client waits (curl: 1 s) for a go-ahead
/// before it sends the body.
fn expects_continue(session: &Session) -> bool {
    let header = session.req_header();
    header.version == pingora::http::Version::HTTP_11
        && header
            .headers
            .get_all("expect")
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("100-continue")))
}

/// A client's `x-request-id` is kept only if it is a plain token: it goes into log lines
/// (where spaces or `=` could forge fields), upstream requests and responses.
fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `Authorization: Bearer <key>` or `x-api-key: <key>`, compared in constant time. An
/// empty token never matches, whatever the keys are.
pub fn client_authorized(session: &Session, keys: &[Secret]) -> bool {
    let headers = &session.req_header().headers;
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let presented = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    presented.map(str::trim).filter(|token| !token.is_empty()).is_some_and(|token| {
        keys.iter()
            .filter(|key| !key.expose().trim().is_empty())
            .fold(false, |found, key| found | constant_time_eq(token, key.expose()))
    })
}

/// Compares without leaking where the first difference is.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut difference = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        difference |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    difference == 0
}

/// The request's `Content-Length`, if it declares a valid one.
pub(crate) fn declared_length(session: &Session) -> Option<u64> {
    session.req_header().headers.get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

async fn read_body(session: &mut Session, limit: u64) -> std::result::Result<Bytes, ProxyError> {
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(ProxyError::BodyTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(error) => return Err(ProxyError::BodyUnreadable(error.to_string())),
        }
    }
}

/// Writes a response the router made itself (an admin answer or an error).
async fn respond(
    session: &mut Session,
    ctx: &mut RequestCtx,
    outcome: std::result::Result<(pingora::http::ResponseHeader, Bytes), ProxyError>,
) -> Result<bool> {
    let (header, body) = match outcome {
        Ok(answer) => answer,
        Err(error) => {
            // After a refusal (a failed key above all) the client gets no second try on
            // this connection, and an unread body is not drained.
            session.set_keepalive(None);
            let kind = error.parts().1;
            ctx.error = Some(kind);
            // The client gets a fixed message; what went wrong in detail is for the log.
            if let Some(detail) = error.detail() {
                tracing::warn!(request_id = %ctx.request_id, kind, detail, "the router answered with an error");
            }
            error.response(&ctx.request_id)
        }
    };
    ctx.status = header.status.as_u16();
    // A client that is gone cannot be told anything; the request still ends here.
    if session.write_response_header(Box::new(header), false).await.is_ok() {
        let _ = session.write_response_body(Some(body), true).await;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison_is_exact() {
        assert!(constant_time_eq("key-123", "key-123"));
        assert!(!constant_time_eq("key-123", "key-124"));
        assert!(!constant_time_eq("key-123", "key-1234"));
        assert!(!constant_time_eq("", "x"));
        assert!(constant_time_eq("", ""));
    }

    #[test]
    fn only_plain_request_ids_are_kept() {
        for good in ["abc", "3f2a-01:b.c_d", &"a".repeat(128)] {
            assert!(valid_request_id(good), "{good}");
        }
        for bad in ["", "a b", "0 method=POST status=200", "a\"b", "a=b", &"a".repeat(129), "ü"] {
            assert!(!valid_request_id(bad), "{bad}");
        }
    }

    #[test]
    fn admission_is_bounded_released_and_its_peak_kept() {
        let metrics = Metrics::default();
        let first = Admission::enter(&metrics, 2).unwrap();
        let _second = Admission::enter(&metrics, 2).unwrap();
        assert!(Admission::enter(&metrics, 2).is_none());
        drop(first);
        assert_eq!(metrics.inflight.load(Relaxed), 1);
        assert!(Admission::enter(&metrics, 2).is_some());
        assert_eq!(metrics.peak_inflight.load(Relaxed), 2);
    }
}
