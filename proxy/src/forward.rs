//! The attempt loop: pick a backend, send the buffered request, and fail over to the
//! next candidate on a transport error or a 502/503/504 from a spot replica, as long as
//! nothing has reached the client. Once the response header is out, bytes pass through
//! untouched; an upstream failure after that ends the stream with an error event.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::ErrorType;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora_proxy::Session;
use tandemn_config::api::{BackendAuth, Tier};

use crate::backend::{Backend, InflightGuard};
use crate::errors::ProxyError;
use crate::select::{self, NoPick};
use crate::service::{RequestCtx, Router};
use crate::sse::{self, UsageScanner};

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Why an attempt ended before a usable response header.
enum AttemptFailure {
    Transport {
        timeout: bool,
        detail: String,
    },
    /// A retryable status from a spot replica; the response is discarded.
    Status(u16),
}

pub async fn run(router: &Router, session: &mut Session, ctx: &mut RequestCtx, body: Bytes) -> Result<(), ProxyError> {
    let settings = &router.settings;
    let mut table = router.state.snapshot();
    let mut tried: Vec<String> = Vec::new();
    let mut last_failure = None;
    let queue_deadline = Instant::now() + settings.queue_timeout;
    let first_attempt = Instant::now();
    for attempt in 1..=settings.max_attempts {
        let pick = loop {
            let picked = select::pick(&table, &tried, router.now_ms(), &mut rand::rng());
            match picked {
                Ok(pick) => break pick,
                Err(NoPick::NoBackends) if tried.is_empty() => return Err(ProxyError::NoBackends),
                Err(NoPick::NoBackends) => return Err(final_error(last_failure)),
                Err(NoPick::Saturated) => {
                    let left = queue_deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || !router.state.capacity.wait(left).await && Instant::now() >= queue_deadline {
                        return Err(if tried.is_empty() { ProxyError::NoCapacity } else { final_error(last_failure) });
                    }
                    // Waiting may outlive a table swap; look at the newest one.
                    if tried.is_empty() {
                        table = router.state.snapshot();
                    }
                }
            }
        };
        let backend = pick.guard.backend().clone();
        if pick.spilled {
            router.metrics.spillovers.fetch_add(1, Relaxed);
        }
        if attempt > 1 {
            router.metrics.failovers.fetch_add(1, Relaxed);
        }
        ctx.attempts = attempt;
        backend.stats.requests.fetch_add(1, Relaxed);
        // With nowhere else to go, a spot replica's 5xx is the answer the client gets.
        let now_ms = router.now_ms();
        let elsewhere = table.backends().any(|b| {
            b.id != backend.id
                && !tried.contains(&b.id)
                && b.state() == crate::backend::BackendState::Ready
                && b.circuit_allows(now_ms)
        });
        let last_chance = attempt == settings.max_attempts || !elsewhere;
        match send(router, &backend, session.req_header(), &body, &ctx.request_id, last_chance).await {
            Ok((upstream, peer, header)) => {
                let ttfb = first_attempt.elapsed();
                backend.record_success(ttfb);
                router.metrics.observe_ttfb(backend.tier, ttfb);
                ctx.ttfb = Some(ttfb);
                return stream(router, session, ctx, pick.guard, upstream, peer, header).await;
            }
            Err(failure) => {
                router.metrics.upstream_failures.fetch_add(1, Relaxed);
                match &failure {
                    AttemptFailure::Transport { detail, .. } => {
                        tracing::warn!(backend = %backend.id, %detail, attempt, "upstream attempt failed");
                        backend.record_failure(router.now_ms());
                    }
                    AttemptFailure::Status(status) => {
                        tracing::warn!(backend = %backend.id, status, attempt, "upstream refused, trying another");
                        backend.record_status(*status);
                    }
                }
                tried.push(backend.id.clone());
                last_failure = Some(failure);
            }
        }
    }
    Err(final_error(last_failure))
}

fn final_error(failure: Option<AttemptFailure>) -> ProxyError {
    match failure {
        Some(AttemptFailure::Transport { timeout: true, .. }) => ProxyError::UpstreamTimeout,
        Some(AttemptFailure::Transport { detail, .. }) => ProxyError::UpstreamUnavailable(detail),
        Some(AttemptFailure::Status(status)) => ProxyError::UpstreamUnavailable(format!("status {status}")),
        None => ProxyError::NoBackends,
    }
}

/// One attempt: connect, send the request and read the response header.
async fn send(
    router: &Router,
    backend: &Backend,
    downstream: &RequestHeader,
    body: &Bytes,
    request_id: &str,
    last_chance: bool,
) -> Result<(HttpSession, HttpPeer, ResponseHeader), AttemptFailure> {
    let peer = peer(router, backend).await.map_err(|detail| AttemptFailure::Transport { timeout: false, detail })?;
    let transport = |e: pingora::BError| AttemptFailure::Transport {
        timeout: matches!(e.etype(), ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout),
        detail: e.to_string(),
    };
    let (mut upstream, _reused) = router.connector.get_http_session(&peer).await.map_err(transport)?;
    upstream.set_read_timeout(Some(router.settings.first_byte_timeout));
    upstream.set_write_timeout(Some(router.settings.first_byte_timeout));
    let request = upstream_request(downstream, backend, body.len(), request_id);
    upstream.write_request_header(Box::new(request)).await.map_err(transport)?;
    if !body.is_empty() {
        upstream.write_request_body(body.clone(), true).await.map_err(transport)?;
    }
    upstream.finish_request_body().await.map_err(transport)?;
    upstream.read_response_header().await.map_err(transport)?;
    let header = upstream.response_header().cloned().ok_or_else(|| AttemptFailure::Transport {
        timeout: false,
        detail: "the upstream sent no response header".to_string(),
    })?;
    let status = header.status.as_u16();
    if backend.tier == Tier::Spot && matches!(status, 502..=504) && !last_chance {
        return Err(AttemptFailure::Status(status));
    }
    Ok((upstream, peer, header))
}

/// Where and how to connect to `backend`; fails only when its name does not resolve.
/// Host names resolve once and then come from the cache the health service refreshes,
/// so no request waits for DNS after the first.
pub(crate) async fn peer(router: &Router, backend: &Backend) -> Result<HttpPeer, String> {
    let address = match (backend.url.host.parse(), backend.resolved.load_full()) {
        (Ok(ip), _) => SocketAddr::new(ip, backend.url.port),
        (Err(_), Some(cached)) => *cached,
        (Err(_), None) => refresh_address(backend).await?,
    };
    // A resolved address: HttpPeer::new does no lookup (and cannot panic) for it.
    let mut peer = HttpPeer::new(address, backend.url.tls, backend.url.host.clone());
    let options = peer.get_mut_peer_options().expect("HTTP peers have options");
    options.connection_timeout = Some(router.settings.connect_timeout);
    options.idle_timeout = Some(Duration::from_secs(60));
    Ok(peer)
}

/// Resolves a backend's host name off the async threads and caches the answer.
pub(crate) async fn refresh_address(backend: &Backend) -> Result<SocketAddr, String> {
    let address = resolve(&backend.url.host, backend.url.port).await?;
    backend.resolved.store(Some(Arc::new(address)));
    Ok(address)
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    let target = format!("{host}:{port}");
    let lookup = tokio::task::spawn_blocking(move || target.to_socket_addrs().map(|mut a| a.next()));
    match lookup.await {
        Ok(Ok(Some(address))) => Ok(address),
        Ok(Ok(None)) => Err(format!("{host} has no address")),
        Ok(Err(error)) => Err(format!("cannot resolve {host}: {error}")),
        Err(error) => Err(format!("cannot resolve {host}: {error}")),
    }
}

/// The request as the backend sees it: same method, path and query (under the
/// backend's base path), minus hop-by-hop headers and the client's credentials, plus
/// the backend's own credentials.
fn upstream_request(downstream: &RequestHeader, backend: &Backend, body_len: usize, request_id: &str) -> RequestHeader {
    let mut request = downstream.clone();
    if !backend.url.base_path.is_empty() {
        let path_and_query = downstream.uri.path_and_query().map_or("/", |p| p.as_str());
        let joined = format!("{}{path_and_query}", backend.url.base_path);
        if let Ok(uri) = joined.parse() {
            request.set_uri(uri);
        }
    }
    for name in HOP_BY_HOP.iter().chain(&["authorization", "x-api-key", "content-length", "host"]) {
        request.remove_header(*name);
    }
    let set = |request: &mut RequestHeader, name: &'static str, value: &str| {
        // Values come from validated config or were already valid request headers.
        let _ = request.insert_header(name, value);
    };
    set(&mut request, "host", &backend.url.authority());
    set(&mut request, "content-length", &body_len.to_string());
    set(&mut request, "x-request-id", request_id);
    match &backend.auth {
        BackendAuth::None => {}
        BackendAuth::Bearer { token } => set(&mut request, "authorization", &format!("Bearer {}", token.expose())),
        BackendAuth::Modal { key, secret } => {
            set(&mut request, "modal-key", key.expose());
            set(&mut request, "modal-secret", secret.expose());
        }
        BackendAuth::CloudRun { id_token } => {
            set(&mut request, "x-serverless-authorization", &format!("Bearer {}", id_token.expose()));
        }
    }
    request
}

/// Writes the response header, then passes body bytes through as they come, until the
/// upstream ends, fails, or the client leaves (which cancels the upstream request).
async fn stream(
    router: &Router,
    session: &mut Session,
    ctx: &mut RequestCtx,
    guard: InflightGuard,
    mut upstream: HttpSession,
    peer: HttpPeer,
    header: ResponseHeader,
) -> Result<(), ProxyError> {
    let backend = Arc::clone(guard.backend());
    backend.record_status(header.status.as_u16());
    router.metrics.tier(backend.tier).requests.fetch_add(1, Relaxed);
    ctx.status = header.status.as_u16();
    ctx.backend = Some(backend.id.clone());
    let event_stream = header
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
    let mut response = header;
    for name in HOP_BY_HOP {
        response.remove_header(name);
    }
    if event_stream {
        // A length makes some clients and proxies wait for the whole body; SSE must flow.
        response.remove_header("content-length");
    }
    let _ = response.insert_header("x-tandemn-backend", backend.id.as_str());
    let _ = response.insert_header("x-request-id", ctx.request_id.as_str());
    let done_at_header = upstream.response_done();
    if session.write_response_header(Box::new(response), done_at_header).await.is_err() {
        router.metrics.client_aborts.fetch_add(1, Relaxed);
        return Ok(());
    }
    upstream.set_read_timeout(Some(router.settings.idle_timeout));
    let mut usage = UsageScanner::default();
    let mut finished = done_at_header;
    let mut pending = None;
    while !finished {
        // A client that leaves is noticed when a write fails. Only when the upstream has
        // been silent for a while does the router look at the client connection itself,
        // which costs a read: not worth it per chunk.
        let step = match pending.take() {
            Some(step) => step,
            None => tokio::select! {
                chunk = upstream.read_response_body() => Step::Upstream(chunk),
                () = tokio::time::sleep(CLIENT_CHECK_AFTER) => Step::Quiet,
            },
        };
        let step = match step {
            Step::Upstream(Ok(Some(bytes))) => Step::Upstream(Ok(Some(coalesce(&mut upstream, bytes, &mut pending)))),
            other => other,
        };
        match step {
            Step::Upstream(Ok(Some(bytes))) => {
                usage.scan(&bytes);
                // End the response with its last bytes: a keep-alive client may send its
                // next request the moment it has them.
                finished = upstream.response_done();
                if session.write_response_body(Some(bytes), finished).await.is_err() {
                    router.metrics.client_aborts.fetch_add(1, Relaxed);
                    ctx.error = Some("client_gone");
                    break;
                }
            }
            Step::Upstream(Ok(None)) => {
                let _ = session.write_response_body(None, true).await;
                finished = true;
            }
            Step::Upstream(Err(error)) => {
                router.metrics.stream_errors.fetch_add(1, Relaxed);
                backend.record_failure(router.now_ms());
                ctx.error = Some("upstream_failed_mid_stream");
                tracing::warn!(backend = %backend.id, %error, "upstream failed after the first byte");
                let tail = if event_stream {
                    Some(sse::error_event(&format!("upstream failed mid-stream: {error}")))
                } else {
                    None
                };
                let _ = session.write_response_body(tail, true).await;
                break;
            }
            Step::Quiet => {
                if client_gone(session).await {
                    router.metrics.client_aborts.fetch_add(1, Relaxed);
                    ctx.error = Some("client_gone");
                    break;
                }
            }
        }
    }
    if let Some(tokens) = usage.tokens() {
        ctx.output_tokens = Some(tokens);
        backend.stats.output_tokens.fetch_add(tokens, Relaxed);
        router.metrics.tier(backend.tier).output_tokens.fetch_add(tokens, Relaxed);
    }
    if finished {
        // A complete exchange leaves a reusable connection; anything else is dropped,
        // which closes it and so cancels the generation upstream.
        router.connector.release_http_session(upstream, &peer, Some(Duration::from_secs(60))).await;
    }
    drop(guard);
    Ok(())
}

enum Step {
    Upstream(pingora::Result<Option<Bytes>>),
    Quiet,
}

/// Chunks that arrived together leave together: joins the body chunks the upstream
/// already delivered (never waiting for more), so a burst costs one write, not one per
/// chunk. Anything that is not data is kept in `pending` for the next turn.
fn coalesce(upstream: &mut HttpSession, first: Bytes, pending: &mut Option<Step>) -> Bytes {
    use futures_util::FutureExt;
    const MAX: usize = 64 * 1024;
    let mut joined: Option<bytes::BytesMut> = None;
    while !upstream.response_done() && joined.as_ref().map_or(first.len(), |j| j.len()) < MAX {
        match upstream.read_response_body().now_or_never() {
            Some(Ok(Some(more))) => {
                joined.get_or_insert_with(|| bytes::BytesMut::from(&first[..])).extend_from_slice(&more);
            }
            Some(other) => {
                *pending = Some(Step::Upstream(other));
                break;
            }
            None => break,
        }
    }
    joined.map_or(first, bytes::BytesMut::freeze)
}

/// How long the upstream may be silent before the router checks the client is still there.
const CLIENT_CHECK_AFTER: Duration = Duration::from_millis(250);

/// One look at the client connection: closed (or sending junk mid-response) means gone.
async fn client_gone(session: &mut Session) -> bool {
    use futures_util::FutureExt;
    // The request body was read in full, so any readiness here is a close or an error.
    matches!(session.read_body_or_idle(true).now_or_never(), Some(Ok(None) | Err(_)))
}
