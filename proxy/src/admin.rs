//! The admin API: `/router/health`, `/router/config` and `/metrics`, behind the admin key
//! (only `/router/health` may be opened by `health_public`).

use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora_proxy::Session;
use serde::Deserialize;
use serde_json::{Value, json};
use tandemn_config::api::{BackendSpec, Tier};

use crate::backend::BackendState;
use crate::errors::ProxyError;
use crate::routing::RouteTable;
use crate::service::{Router, client_authorized};

/// `POST /router/config`: the whole backend set, replacing the current one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdate {
    pub backends: Vec<BackendSpec>,
}

const MAX_ADMIN_BODY: usize = 1 << 20;

pub async fn handle(router: &Router, session: &mut Session) -> Result<(ResponseHeader, Bytes), ProxyError> {
    let path = session.req_header().uri.path().to_string();
    let method = session.req_header().method.clone();
    let reads_health = path == "/router/health" && method == "GET";
    let open = reads_health && router.settings.health_public;
    let admin_keys = router.settings.admin_key.iter().cloned().collect::<Vec<_>>();
    let health_only = reads_health && client_authorized(session, &router.settings.health_keys);
    if !open && !health_only && !client_authorized(session, &admin_keys) {
        router.metrics.rejected_unauthorized.fetch_add(1, Relaxed);
        return Err(ProxyError::Unauthorized);
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/router/health") => Ok(json_response(&health(router))),
        ("POST", "/router/config") => {
            let body = read_body(session).await?;
            let update: ConfigUpdate = serde_json::from_slice(&body)
                .map_err(|e| ProxyError::BadRequest(format!("invalid backend configuration: {e}")))?;
            let version = router.state.publish(&update.backends).map_err(ProxyError::BadRequest)?;
            tracing::info!(version, backends = update.backends.len(), "backends replaced through the admin API");
            Ok(json_response(&json!({"status": "ok", "version": version})))
        }
        ("GET", "/metrics") => {
            let text = router.metrics.render(&router.state.snapshot());
            Ok(response("text/plain; version=0.0.4", Bytes::from(text)))
        }
        (_, "/router/health" | "/router/config" | "/metrics") => Err(ProxyError::MethodNotAllowed),
        _ => Err(ProxyError::NotFound),
    }
}

async fn read_body(session: &mut Session) -> Result<Bytes, ProxyError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| ProxyError::BadRequest(format!("could not read the request body: {e}")))?
    {
        if body.len() + chunk.len() > MAX_ADMIN_BODY {
            return Err(ProxyError::BodyTooLarge { limit: MAX_ADMIN_BODY as u64 });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `ready` when a spot replica takes traffic, `warming` when replicas exist but none is
/// ready yet, `cold` when there are none: the predecessor's three states.
pub fn spot_state(table: &RouteTable, now_ms: u64) -> &'static str {
    if table.spot.iter().any(|b| b.state() == BackendState::Ready && b.circuit_allows(now_ms)) {
        "ready"
    } else if table.spot.is_empty() {
        "cold"
    } else {
        "warming"
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

pub fn health(router: &Router) -> Value {
    let table = router.state.snapshot();
    let now_ms = router.now_ms();
    let metrics = &router.metrics;
    let spot = metrics.tier(Tier::Spot).requests.load(Relaxed);
    let serverless = metrics.tier(Tier::Serverless).requests.load(Relaxed);
    let total = spot + serverless;
    let pct = |n: u64| if total == 0 { 0.0 } else { round2(n as f64 * 100.0 / total as f64) };
    let uptime = round2(router.started.elapsed().as_secs_f64());
    let spot_ready = round2(router.spot_ready_ms.load(Relaxed) as f64 / 1000.0);
    let state = spot_state(&table, now_ms);
    let backends: Vec<Value> = table
        .backends()
        .map(|b| {
            let s = &b.stats;
            json!({
                "id": b.id, "tier": b.tier, "url": b.url.to_string(), "state": b.state().as_str(),
                "circuit": if b.circuit_open(now_ms) { "open" } else { "closed" },
                "inflight": b.inflight(), "capacity": b.capacity,
                "requests": s.requests.load(Relaxed), "failures": s.failures.load(Relaxed),
                "consecutive_failures": s.consecutive_failures.load(Relaxed),
                "ttfb_ewma_ms": round2(s.ttfb_ewma_us.load(Relaxed) as f64 / 1000.0),
                "output_tokens": s.output_tokens.load(Relaxed),
                "responses": {"2xx": s.responses_2xx.load(Relaxed), "4xx": s.responses_4xx.load(Relaxed),
                              "5xx": s.responses_5xx.load(Relaxed)},
            })
        })
        .collect();
    json!({
        "status": "ok",
        "skyserve_ready": state == "ready",
        "spot_state": state,
        "route_stats": {
            "total": total, "spot": spot, "serverless": serverless, "rejected": metrics.rejected(),
            "pct_spot": pct(spot), "pct_serverless": pct(serverless),
            "uptime_seconds": uptime, "spot_ready_seconds": spot_ready,
        },
        "uptime_seconds": uptime,
        "spot_ready_seconds": spot_ready,
        "inflight": metrics.inflight.load(Relaxed),
        "spillovers": metrics.spillovers.load(Relaxed),
        "failovers": metrics.failovers.load(Relaxed),
        "table_version": table.version,
        "backends": backends,
    })
}

fn json_response(value: &Value) -> (ResponseHeader, Bytes) {
    response("application/json", Bytes::from(value.to_string()))
}

fn response(content_type: &str, body: Bytes) -> (ResponseHeader, Bytes) {
    let mut header = ResponseHeader::build(200, Some(2)).expect("200 is a valid status");
    let _ = header.insert_header("content-type", content_type);
    let _ = header.insert_header("content-length", body.len().to_string());
    (header, body)
}
