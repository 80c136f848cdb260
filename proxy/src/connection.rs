//! Client connections before Pingora sees them: the connection cap, and a stream wrapper
//! that gives every request head a total deadline and a size limit. Pingora only times
//! each read of a head, so one byte every few seconds would otherwise hold a connection
//! (and its buffer) forever.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::service::{Router, RouterService};

/// Longest request head (request line and headers) the router reads. Real clients send
/// a few hundred bytes; Pingora's own limit is 1 MiB, which lets idle connections hold
/// a lot of memory.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Where a connection is in its request cycle; the wrapper only times heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// A request head is arriving: it must be whole before the deadline.
    Head = 0,
    /// The head was parsed; the body and the response have their own timeouts.
    Request = 1,
    /// Between requests (keep-alive idle time is Pingora's keepalive timeout); the next
    /// byte starts a new head.
    Idle = 2,
}

/// What the service tells the wrapper about the request cycle.
#[derive(Debug)]
pub struct ConnectionState {
    phase: AtomicU8,
}

impl ConnectionState {
    fn phase(&self) -> Phase {
        match self.phase.load(Relaxed) {
            0 => Phase::Head,
            1 => Phase::Request,
            _ => Phase::Idle,
        }
    }

    /// The head was parsed: stop its deadline.
    pub fn head_complete(&self) {
        self.phase.store(Phase::Request as u8, Relaxed);
    }

    /// The response is done: the next byte that arrives starts a new head.
    pub fn request_done(&self) {
        self.phase.store(Phase::Idle as u8, Relaxed);
    }
}

/// The state of the connection a session runs on, if it came through `RouterApp`.
pub fn state_of(session: &pingora::protocols::http::ServerSession) -> Option<&ConnectionState> {
    let stream = session.stream()?;
    stream.as_any().downcast_ref::<GuardedStream>().map(|guarded| guarded.state.as_ref())
}

/// A client stream whose request heads must arrive whole, within `header_timeout` of
/// their first byte (of the accept, for the first one), and within `MAX_HEAD_BYTES`.
pub struct GuardedStream {
    inner: Stream,
    state: Arc<ConnectionState>,
    header_timeout: Duration,
    /// Armed while a head arrives.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    head_bytes: usize,
    _slot: ConnectionSlot,
}

impl GuardedStream {
    fn new(inner: Stream, header_timeout: Duration, slot: ConnectionSlot) -> Self {
        Self {
            inner,
            state: Arc::new(ConnectionState { phase: AtomicU8::new(Phase::Head as u8) }),
            header_timeout,
            deadline: Some(Box::pin(tokio::time::sleep(header_timeout))),
            head_bytes: 0,
            _slot: slot,
        }
    }
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream").field("phase", &self.state.phase()).finish_non_exhaustive()
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.state.phase() {
            Phase::Request => this.deadline = None,
            Phase::Idle => {}
            Phase::Head => {
                if this.head_bytes > MAX_HEAD_BYTES {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("request head larger than {MAX_HEAD_BYTES} bytes"),
                    )));
                }
                let timeout = this.header_timeout;
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the request head did not arrive within {timeout:?}"),
                    )));
                }
            }
        }
        let before = buf.filled().len();
        // A head may not pass the limit by a whole read buffer: reads are cut to what is
        // still allowed (one byte more, to tell an exact fit from an overflow).
        let allowed = match this.state.phase() {
            Phase::Head => (MAX_HEAD_BYTES + 1).saturating_sub(this.head_bytes),
            Phase::Idle => MAX_HEAD_BYTES + 1,
            Phase::Request => usize::MAX,
        };
        let polled = if buf.remaining() > allowed {
            let mut scratch = [0_u8; 8192];
            let mut limited = ReadBuf::new(&mut scratch[..allowed.min(8192)]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
            buf.put_slice(limited.filled());
            polled
        } else {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        };
        let read = buf.filled().len() - before;
        if read > 0 {
            match this.state.phase() {
                Phase::Idle => {
                    // The first bytes of the next request: its head is timed from now.
                    this.state.phase.store(Phase::Head as u8, Relaxed);
                    this.deadline = Some(Box::pin(tokio::time::sleep(this.header_timeout)));
                    this.head_bytes = read;
                }
                Phase::Head => this.head_bytes += read,
                Phase::Request => {}
            }
        }
        polled
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.inner.as_mut()).await;
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// Open client connections, and the cap on them.
pub struct ConnectionStats {
    pub open: AtomicU64,
    pub refused: AtomicU64,
    /// `max_connections`, lowered at start when the open-file limit holds fewer.
    limit: AtomicU64,
    /// When a refusal was last logged (ms on the router clock), so a flood logs once a second.
    last_refusal_log_ms: AtomicU64,
}

impl ConnectionStats {
    pub fn new(limit: u64) -> Self {
        Self {
            open: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
            last_refusal_log_ms: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Relaxed)
    }

    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Relaxed);
    }

    /// Prometheus text for the connection gauge, its cap and the refusals.
    pub fn render(&self) -> String {
        let families = [
            ("tandemn_connections", "gauge", "Open client connections.", self.open.load(Relaxed)),
            ("tandemn_connections_max", "gauge", "router.max_connections as in force.", self.limit()),
            (
                "tandemn_connections_refused_total",
                "counter",
                "Client connections refused at router.max_connections.",
                self.refused.load(Relaxed),
            ),
        ];
        families
            .iter()
            .map(|(name, kind, help, value)| format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"))
            .collect()
    }
}

/// One of the `max_connections` places, held for the connection's life.
pub struct ConnectionSlot {
    router: Arc<Router>,
}

impl ConnectionSlot {
    fn take(router: &Arc<Router>) -> Option<Self> {
        let limit = router.connections.limit();
        let open = &router.connections.open;
        open.fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1)).ok()?;
        Some(Self { router: router.clone() })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.router.connections.open.fetch_sub(1, Relaxed);
    }
}

/// The router's Pingora application: caps connections and wraps each client stream
/// before the HTTP proxy takes it.
pub struct RouterApp {
    pub proxy: Arc<HttpProxy<RouterService>>,
    pub router: Arc<Router>,
}

/// What a client past the connection cap gets before its connection closes.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: \
application/json\r\nx-tandemn-error: too_many_connections\r\nretry-after: 1\r\ncontent-length: 111\r\n\r\n\
{\"error\": {\"message\": \"the router has too many open connections\", \"type\": \"too_many_connections\", \"code\": 503}}";

#[async_trait]
impl ServerApp for RouterApp {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Some(slot) = ConnectionSlot::take(&self.router) else {
            self.refuse(&mut stream).await;
            return None;
        };
        let guarded: Stream = Box::new(GuardedStream::new(stream, self.router.settings.header_timeout, slot));
        // Connections never come back here: the HTTP app runs every request on it.
        ServerApp::process_new(&self.proxy, guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

impl RouterApp {
    async fn refuse(&self, stream: &mut Stream) {
        let stats = &self.router.connections;
        stats.refused.fetch_add(1, Relaxed);
        let now = self.router.now_ms();
        let last = stats.last_refusal_log_ms.load(Relaxed);
        if (now.saturating_sub(last) >= 1000 || last == 0)
            && stats.last_refusal_log_ms.compare_exchange(last, now.max(1), Relaxed, Relaxed).is_ok()
        {
            tracing::warn!(
                limit = stats.limit(),
                refused = stats.refused.load(Relaxed),
                "connection refused: the router is at router.max_connections open connections"
            );
        }
        // Best effort and brief: the client is told why, but cannot hold this task.
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.write_all(TOO_MANY_CONNECTIONS)).await;
    }
}

/// Raises the open-file soft limit to the hard limit (every connection costs a file
/// descriptor, and a proxied one two) and returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
        }
    }
}

/// How many client connections fit in `fd_limit` descriptors: each may hold an upstream
/// connection too, and some are kept for listeners, pools, logs and the state store.
pub fn connections_for(fd_limit: u64) -> u64 {
    fd_limit.saturating_sub(64) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_descriptors_bound_connections() {
        assert_eq!(connections_for(256), 96);
        assert_eq!(connections_for(10), 0);
        assert_eq!(connections_for(1 << 20), ((1 << 20) - 64) / 2);
    }

    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize =
            head.lines().find_map(|line| line.strip_prefix("content-length: ")).unwrap().parse().unwrap();
        assert_eq!(body.len(), length);
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
