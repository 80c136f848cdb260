//! Active health for spot replicas only: a background service probes each one's
//! `GET /health` on an interval and moves it between Ready and Down. Serverless
//! endpoints are never probed, since a probe would wake containers and defeat scale to
//! zero; they rely on the passive circuit breaker. The same tick counts spot-ready time.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::admin::spot_state;
use crate::backend::{Backend, BackendState};
use crate::service::Router;

/// Consecutive failed probes that take a Ready replica Down (one success brings it back).
const DOWN_AFTER: u32 = 2;
/// How often host names of backends are looked up again (serverless endpoints move).
const DNS_REFRESH: Duration = Duration::from_secs(30);

pub struct HealthService {
    pub router: Arc<Router>,
    pub interval: Duration,
    pub timeout: Duration,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        let mut last_dns = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {}
            }
            let table = self.router.state.snapshot();
            let now = Instant::now();
            if spot_state(&table, self.router.now_ms()) == "ready" {
                let elapsed = u64::try_from((now - last).as_millis()).unwrap_or(0);
                self.router.spot_ready_ms.fetch_add(elapsed, Relaxed);
            }
            last = now;
            let probes = table.spot.iter().filter(|b| b.state() != BackendState::Draining).map(|b| self.probe(b));
            // Concurrently: one slow replica does not delay the others.
            futures_util::future::join_all(probes).await;
            if last_dns.elapsed() >= DNS_REFRESH {
                last_dns = Instant::now();
                let named = table.backends().filter(|b| b.url.host.parse::<std::net::IpAddr>().is_err());
                let lookups = named.map(|b| async move {
                    if let Err(error) = crate::forward::refresh_address(b).await {
                        // Keep the last good address; the next refresh tries again.
                        tracing::warn!(backend = %b.id, %error, "DNS refresh failed");
                    }
                });
                futures_util::future::join_all(lookups).await;
            }
        }
    }
}

impl HealthService {
    async fn probe(&self, backend: &Arc<Backend>) {
        let healthy = tokio::time::timeout(self.timeout, self.healthy(backend)).await.unwrap_or(false);
        let failures = &backend.stats.probe_failures;
        if healthy {
            failures.store(0, Relaxed);
            if backend.transition(BackendState::Down, BackendState::Ready) {
                tracing::info!(backend = %backend.id, "spot replica is healthy again");
            }
        } else if failures.fetch_add(1, Relaxed) + 1 >= DOWN_AFTER
            && backend.transition(BackendState::Ready, BackendState::Down)
        {
            tracing::warn!(backend = %backend.id, "spot replica failed its health probes; taking it out");
        }
    }

    async fn healthy(&self, backend: &Backend) -> bool {
        let Ok(peer) = crate::forward::peer(&self.router, backend).await else { return false };
        let Ok((mut session, _)) = self.router.connector.get_http_session(&peer).await else { return false };
        let path = format!("{}/health", backend.url.base_path);
        let Ok(mut request) = RequestHeader::build("GET", path.as_bytes(), None) else { return false };
        let _ = request.insert_header("host", backend.url.authority());
        if session.write_request_header(Box::new(request)).await.is_err()
            || session.finish_request_body().await.is_err()
        {
            return false;
        }
        if session.read_response_header().await.is_err() {
            return false;
        }
        let ok = session.response_header().is_some_and(|h| h.status.is_success());
        // Drain the (small) body so the connection can be pooled.
        while let Ok(Some(_)) = session.read_response_body().await {}
        if session.response_done() {
            self.router.connector.release_http_session(session, &peer, Some(Duration::from_secs(60))).await;
        }
        ok
    }
}
