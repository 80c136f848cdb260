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
use crate::sse::{self, StreamBreak, UsageScanner};

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
    let request = session.req_header().clone();
    // Checked once at the root; each backend's base path is joined when sent.
    upstream_target(request.raw_path(), "").map_err(ProxyError::BadRequest)?;
    for attempt in 1..=settings.max_attempts {
        let pick = loop {
            let picked = select::pick(&table, &tried, router.now_ms(), &mut rand::rng());
            match picked {
                Ok(pick) => break pick,
                Err(NoPick::NoBackends) if !tried.is_empty() => return Err(final_error(last_failure)),
                // Nothing was ever configured: nothing is coming to wait for.
                Err(NoPick::NoBackends) if table.backends().next().is_none() && !router.state.had_backends() => {
                    return Err(ProxyError::NoBackends);
                }
                Err(none) => {
                    let left = queue_deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(match none {
                            NoPick::NoBackends => ProxyError::NoBackends,
                            NoPick::Saturated if tried.is_empty() => ProxyError::NoCapacity,
                            NoPick::Saturated => final_error(last_failure),
                        });
                    }
                    // Woken or timed out, look once more: a slot freed just before this
                    // request started waiting would otherwise be missed. With nothing
                    // usable at all (every backend down, or a dead endpoint being
                    // replaced), look again every so often: a probe that brings one back
                    // wakes nobody.
                    let slice = if none == NoPick::NoBackends { left.min(NO_BACKEND_RECHECK) } else { left };
                    router.state.capacity.wait(slice).await;
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
        let attempt_started = Instant::now();
        let sent = tokio::select! {
            sent = send(router, &backend, &request, &body, &ctx.request_id, last_chance) => Some(sent),
            () = client_leaves(session) => None,
        };
        let Some(sent) = sent else {
            // Nobody is waiting for the answer: dropping the attempt closes its connection,
            // which stops the generation upstream.
            router.metrics.client_aborts.fetch_add(1, Relaxed);
            ctx.error = Some("client_gone");
            return Ok(());
        };
        match sent {
            Ok((upstream, peer, header)) => {
                let ttfb = attempt_started.elapsed();
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
    let unreachable = |detail| AttemptFailure::Transport { timeout: false, detail };
    // Never silently dropped: a base path that cannot take this target fails the attempt.
    let target = upstream_target(downstream.raw_path(), &backend.url.base_path).map_err(unreachable)?;
    let request = upstream_request(downstream, target, backend, body.len(), request_id);
    let peer = peer(router, backend).await.map_err(unreachable)?;
    let transport = |e: pingora::BError| AttemptFailure::Transport {
        timeout: matches!(e.etype(), ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout),
        detail: e.to_string(),
    };
    // A pooled connection the backend closed while idle is skipped before anything is
    // written. Once the whole request went out the exchange is never repeated on this
    // backend: the backend may have read it, and a repeated POST is a second, billed
    // generation. Only a write that failed (the backend had reset the connection, so it
    // never had the whole request) is tried again on a new connection.
    let mut tries_left = 4;
    let (upstream, header) = loop {
        let (mut upstream, reused) = router.connector.get_http_session(&peer).await.map_err(transport)?;
        if reused && upstream_closed(&upstream) && tries_left > 1 {
            tries_left -= 1;
            continue;
        }
        match exchange(router, &mut upstream, request.clone(), body).await {
            Ok(header) => break (upstream, header),
            Err(Exchange::Incomplete(_)) if reused && tries_left > 1 => tries_left -= 1,
            Err(Exchange::Incomplete(error) | Exchange::Sent(error)) => return Err(transport(error)),
        }
    };
    let status = header.status.as_u16();
    if backend.tier == Tier::Spot && matches!(status, 502..=504) && !last_chance {
        return Err(AttemptFailure::Status(status));
    }
    Ok((upstream, peer, header))
}

/// How an exchange failed: while the request was being written (the backend reset the
/// connection, so it cannot have the whole request), or after it was sent.
enum Exchange {
    Incomplete(pingora::BError),
    Sent(pingora::BError),
}

/// Whether the backend already closed a pooled connection (its FIN or reset arrived).
fn upstream_closed(upstream: &HttpSession) -> bool {
    const TCP_CLOSE: u8 = 7;
    const TCP_CLOSE_WAIT: u8 = 8;
    upstream
        .digest()
        .and_then(|digest| digest.socket_digest.as_ref())
        .and_then(|socket| socket.tcp_info())
        .is_some_and(|info| matches!(info.tcpi_state, TCP_CLOSE | TCP_CLOSE_WAIT))
}

/// Writes the request and reads the final response header (informational 1xx headers
/// are skipped; `Expect` is never forwarded, so a 100 is not expected, but a backend may
/// still send one, or a 103).
async fn exchange(
    router: &Router,
    upstream: &mut HttpSession,
    request: RequestHeader,
    body: &Bytes,
) -> Result<ResponseHeader, Exchange> {
    upstream.set_read_timeout(Some(router.settings.first_byte_timeout));
    upstream.set_write_timeout(Some(router.settings.first_byte_timeout));
    let write = async {
        upstream.write_request_header(Box::new(request)).await?;
        if !body.is_empty() {
            upstream.write_request_body(body.clone(), true).await?;
        }
        upstream.finish_request_body().await
    };
    write.await.map_err(Exchange::Incomplete)?;
    let read = async {
        for _ in 0..8 {
            upstream.read_response_header().await?;
            let header = upstream.response_header().cloned();
            match header {
                Some(header) if header.status.is_informational() => continue,
                Some(header) => return Ok(header),
                None => break,
            }
        }
        pingora::Error::e_explain(ErrorType::InvalidHTTPHeader, "the upstream sent no final response header")
    };
    read.await.map_err(Exchange::Sent)
}

/// The request target the backend gets: the client's origin-form path and query under
/// the backend's base path. `raw_target` is the target as the client sent it (Pingora's
/// URI holds only part of absolute and other forms). Refuses anything but origin form
/// (`*`, absolute and authority forms, paths without a leading `/`), targets that are not
/// UTF-8 or not a valid URI, and `.` or `..` segments (also percent-encoded), which could
/// climb out of the base path.
pub fn upstream_target(raw_target: &[u8], base_path: &str) -> Result<http::Uri, String> {
    if !raw_target.starts_with(b"/") {
        return Err("the request target must be a path starting with `/`".to_string());
    }
    let target = std::str::from_utf8(raw_target).map_err(|_| "the request target is not UTF-8".to_string())?;
    let uri: http::Uri = target.parse().map_err(|_| "the request target is not a valid path".to_string())?;
    let path = uri.path().to_ascii_lowercase();
    // An encoded `/` or `\` (or a raw `\`) is a separator to some backends once decoded,
    // which would make `..%2f` a way out of the base path.
    if path.contains("%2f") || path.contains("%5c") || path.contains('\\') {
        return Err("the request path must not contain an encoded `/` or a `\\`".to_string());
    }
    let dot_segment = path.split('/').any(|segment| {
        let decoded = segment.replace("%2e", ".");
        decoded == "." || decoded == ".."
    });
    if dot_segment {
        return Err("the request path must not contain `.` or `..` segments".to_string());
    }
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{base_path}{path_and_query}")
        .parse()
        .map_err(|_| "the request target cannot be joined to the backend's base path".to_string())
}

/// Resolves when the client has gone away; checks every so often, never per chunk.
async fn client_leaves(session: &mut Session) {
    let mut probed = false;
    loop {
        tokio::time::sleep(CLIENT_CHECK_AFTER).await;
        if client_gone(session, &mut probed).await {
            return;
        }
    }
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
    // TCP plus TLS: a stalled handshake must not outlive the connect budget by much.
    options.total_connection_timeout = Some(router.settings.connect_timeout * 2);
    options.idle_timeout = Some(POOL_IDLE);
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
    match tokio::time::timeout(DNS_TIMEOUT, lookup).await {
        Ok(Ok(Ok(Some(address)))) => Ok(address),
        Ok(Ok(Ok(None))) => Err(format!("{host} has no address")),
        Ok(Ok(Err(error))) => Err(format!("cannot resolve {host}: {error}")),
        Ok(Err(error)) => Err(format!("cannot resolve {host}: {error}")),
        Err(_) => Err(format!("resolving {host} took longer than {DNS_TIMEOUT:?}")),
    }
}

/// The request as the backend sees it: same method, path and query (under the
/// backend's base path), minus hop-by-hop headers and the client's credentials, plus
/// the backend's own credentials.
fn upstream_request(
    downstream: &RequestHeader,
    target: http::Uri,
    backend: &Backend,
    body_len: usize,
    request_id: &str,
) -> RequestHeader {
    let mut request = downstream.clone();
    request.set_uri(target);
    request.set_version(pingora::http::Version::HTTP_11);
    for name in connection_listed(&downstream.headers) {
        request.remove_header(&name);
    }
    for name in HOP_BY_HOP.iter().chain(&["authorization", "x-api-key", "content-length", "host", "expect"]) {
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

/// Header names a `Connection` header lists: hop-by-hop for this message only.
fn connection_listed(headers: &pingora::http::HMap) -> Vec<String> {
    headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty() && name != "close" && name != "keep-alive")
        .collect()
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
    for name in connection_listed(&response.headers) {
        response.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        response.remove_header(name);
    }
    // `x-tandemn-*` headers are the router's own word: an upstream cannot speak for it.
    let forged: Vec<String> = response
        .headers
        .keys()
        .map(|name| name.as_str().to_string())
        .filter(|name| name.starts_with("x-tandemn-"))
        .collect();
    for name in forged {
        response.remove_header(&name);
    }
    if event_stream {
        // A length makes some clients and proxies wait for the whole body; SSE must flow.
        response.remove_header("content-length");
    }
    let has_body = !matches!(response.status.as_u16(), 204 | 304) && session.req_header().method != "HEAD";
    if has_body
        && response.headers.get("content-length").is_none()
        && session.req_header().version == pingora::http::Version::HTTP_11
    {
        // Without a length or chunking the body would end only when the connection
        // closes: every stream would cost the client a new connection.
        let _ = response.insert_header("transfer-encoding", "chunked");
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
    let mut broken = false;
    let mut pending = None;
    let mut last_data = Instant::now();
    let mut probed = true; // the response has started: no probe, writes tell
    // One timer for the whole stream (not one per chunk): it ticks while the stream lasts,
    // and a tick only matters once the upstream has been quiet that long.
    let mut quiet_check = tokio::time::interval(CLIENT_CHECK_AFTER);
    quiet_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    quiet_check.reset();
    while !finished {
        // A client that leaves is noticed when a write fails. Only when the upstream has
        // been silent for a while does the router look at the client connection itself,
        // which costs a read: not worth it per chunk.
        let step = match pending.take() {
            Some(step) => step,
            None => tokio::select! {
                chunk = upstream.read_response_body() => Step::Upstream(chunk),
                _ = quiet_check.tick() => {
                    if last_data.elapsed() < CLIENT_CHECK_AFTER { continue; }
                    Step::Quiet
                }
            },
        };
        let step = match step {
            Step::Upstream(Ok(Some(bytes))) => Step::Upstream(Ok(Some(coalesce(&mut upstream, bytes, &mut pending)))),
            other => other,
        };
        match step {
            Step::Upstream(Ok(Some(bytes))) => {
                last_data = Instant::now();
                usage.scan(&bytes);
                // End the response with its last bytes: a keep-alive client may send its
                // next request the moment it has them. A read error already waiting (a
                // body shorter than its length) is not an end, whatever Pingora's body
                // state says.
                let failed_next = matches!(pending, Some(Step::Upstream(Err(_))));
                finished = upstream.response_done() && !failed_next;
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
                backend.record_failure(router.now_ms());
                let why = error.to_string();
                broken = fail_mid_stream(router, session, ctx, &backend, event_stream, StreamBreak::Failed, &why).await;
                break;
            }
            // The read is restarted at every quiet check, so its own timer never runs out.
            Step::Quiet if last_data.elapsed() >= router.settings.idle_timeout => {
                let silence = format!("no data from the upstream for {:?}", router.settings.idle_timeout);
                broken =
                    fail_mid_stream(router, session, ctx, &backend, event_stream, StreamBreak::Silent, &silence).await;
                break;
            }
            Step::Quiet => {
                if client_gone(session, &mut probed).await {
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
        router.connector.release_http_session(upstream, &peer, Some(POOL_IDLE)).await;
    }
    drop(guard);
    if broken { Err(ProxyError::BrokenResponse) } else { Ok(()) }
}

/// After the first byte the request cannot move. An event stream gets a last error event
/// and a clean end; any other body must not look complete, so the connection is closed
/// instead (returns true: the caller reports a broken response).
async fn fail_mid_stream(
    router: &Router,
    session: &mut Session,
    ctx: &mut RequestCtx,
    backend: &Backend,
    event_stream: bool,
    cause: StreamBreak,
    why: &str,
) -> bool {
    router.metrics.stream_errors.fetch_add(1, Relaxed);
    router.metrics.upstream_failures.fetch_add(1, Relaxed);
    ctx.error = Some("upstream_failed_mid_stream");
    tracing::warn!(request_id = %ctx.request_id, backend = %backend.id, why, "upstream failed after the first byte");
    if event_stream {
        let _ = session.write_response_body(Some(sse::stream_error_event(&ctx.request_id, cause)), true).await;
        false
    } else {
        session.set_keepalive(None);
        true
    }
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

/// How often a request waiting with no usable backend looks for one.
const NO_BACKEND_RECHECK: Duration = Duration::from_millis(100);
/// How long the upstream may be silent before the router checks the client is still there.
const CLIENT_CHECK_AFTER: Duration = Duration::from_millis(250);
/// Idle pooled connections are closed before uvicorn's (vLLM's) 5 s keep-alive would.
const POOL_IDLE: Duration = Duration::from_secs(4);
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// One look at the client connection that consumes no request bytes: a pipelined next
/// request is kept for its turn (Pingora stashes it) and a client that only half-closed
/// still gets its answer. After a FIN the router cannot tell a half-close from a close
/// by reading, so before the response starts it sends one `100 Continue` (HTTP/1.1
/// clients must skip 1xx responses): a closed socket answers it with a reset, which the
/// next look sees in the TCP state.
async fn client_gone(session: &mut Session, probed: &mut bool) -> bool {
    use futures_util::FutureExt;
    let half_closed = |session: &Session| session.as_http1().is_some_and(|h1| h1.is_half_closed());
    if !half_closed(session) {
        let keepalive = session.get_keepalive();
        if matches!(session.read_body_or_idle(true).now_or_never(), Some(Err(_))) {
            return true;
        }
        if !half_closed(session) {
            return false;
        }
        // Pingora stops keep-alive at the FIN, but requests the client pipelined before
        // it are already buffered: they are answered, then the connection closes.
        session.set_keepalive(keepalive);
    }
    if socket_reset(session) {
        return true;
    }
    let http11 = session.req_header().version == pingora::http::Version::HTTP_11;
    if !*probed && http11 && session.response_written().is_none() {
        *probed = true;
        return session.write_continue_response().await.is_err();
    }
    false
}

/// The client's socket was reset (TCP state CLOSE): nobody reads what is sent.
fn socket_reset(session: &Session) -> bool {
    const TCP_CLOSE: u8 = 7;
    session
        .digest()
        .and_then(|digest| digest.socket_digest.as_ref())
        .and_then(|socket| socket.tcp_info())
        .is_some_and(|info| info.tcpi_state == TCP_CLOSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_origin_form_targets_under_the_base_path_are_forwarded() {
        let joined = upstream_target(b"/v1/chat/completions?x=1", "/v2/abc/openai").unwrap();
        assert_eq!(joined.to_string(), "/v2/abc/openai/v1/chat/completions?x=1");
        assert_eq!(upstream_target(b"/", "").unwrap().to_string(), "/");
        for bad in [
            &b"*"[..],
            b"v1/models",
            b"http://elsewhere/v1/models",
            b"elsewhere:443",
            b"/v1/../admin",
            b"/v1/%2E%2e/admin",
            b"/./v1",
            b"/v1/\xff",
            b"/v1 /x",
            b"/v1/..%2f..%2fother/x",
            b"/v1/%2E%2E%5Cother",
            b"/v1/..\\..\\other",
            b"",
        ] {
            assert!(upstream_target(bad, "/base").is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(upstream_target(b"/v1/\xff", "").is_err());
        assert!(upstream_target(&[b'/', 0xff], "").is_err(), "not UTF-8");
    }
}
