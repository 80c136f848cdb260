//! The admin API: `/router/health`, `/router/config` and `/metrics`, behind the admin key
//! (only `/router/health` may be opened by `health_public`). Its error messages explain
//! the operator's own input, with the JSON path, but never repeat a value from it: a
//! misplaced secret must not come back in an answer (or a log that records answers).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora_proxy::Session;
use serde::Deserialize;
use serde_json::{Value, json};
use tandemn_config::api::{BackendSpec, Tier};

use crate::backend::BackendState;
use crate::errors::ProxyError;
use crate::routing::RouteTable;
use crate::service::{Router, RouterSettings, client_authorized, declared_length};

/// `POST /router/config`: the whole backend set, replacing the current one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdate {
    pub backends: Vec<BackendSpec>,
}

const MAX_ADMIN_BODY: usize = 1 << 20;
/// The most an admin request body may take to arrive in full: without a total deadline a
/// client trickling a byte at a time holds the request for as long as it likes.
pub const ADMIN_BODY_DEADLINE: Duration = Duration::from_secs(10);

/// The admin body deadline under `settings`: no longer than a client body may take (the
/// router's `idle_timeout` bounds those), and never more than [`ADMIN_BODY_DEADLINE`].
pub fn admin_body_deadline(settings: &RouterSettings) -> Duration {
    ADMIN_BODY_DEADLINE.min(settings.idle_timeout)
}

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
            let reading = tokio::time::timeout(admin_body_deadline(&router.settings), read_body(session));
            let body = match reading.await.unwrap_or(Err(ProxyError::RequestTimeout)) {
                Ok(body) => body,
                Err(error) => {
                    // The rest of the body is unread (or endless): do not let Pingora
                    // drain it to keep the connection.
                    session.set_keepalive(None);
                    return Err(error);
                }
            };
            let update = parse_update(&body).map_err(ProxyError::BadRequest)?;
            let version = router.state.publish(&update.backends).map_err(ProxyError::BadRequest)?;
            tracing::info!(version, backends = update.backends.len(), "backends replaced through the admin API");
            Ok(json_response(&json!({"status": "ok", "version": version})))
        }
        ("GET", "/metrics") => {
            let mut text = router.metrics.render(&router.state.snapshot());
            text += &router.connections.render();
            Ok(response("text/plain; version=0.0.4", Bytes::from(text)))
        }
        (_, "/router/health" | "/router/config" | "/metrics") => Err(ProxyError::MethodNotAllowed),
        _ => Err(ProxyError::NotFound),
    }
}

async fn read_body(session: &mut Session) -> Result<Bytes, ProxyError> {
    if declared_length(session).is_some_and(|length| length > MAX_ADMIN_BODY as u64) {
        return Err(ProxyError::BodyTooLarge { limit: MAX_ADMIN_BODY as u64 });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) =
        session.read_request_body().await.map_err(|error| ProxyError::BodyUnreadable(error.to_string()))?
    {
        if body.len() + chunk.len() > MAX_ADMIN_BODY {
            return Err(ProxyError::BodyTooLarge { limit: MAX_ADMIN_BODY as u64 });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A `POST /router/config` body, or what is wrong with it: where (the JSON path and the
/// line and column) and what, without any value from the body.
pub fn parse_update(body: &[u8]) -> Result<ConfigUpdate, String> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let update: ConfigUpdate = serde_path_to_error::deserialize(&mut json).map_err(|error| describe(&error))?;
    // Trailing bytes after the object are a corrupted body too.
    json.end().map_err(|error| describe_json(&error, None))?;
    Ok(update)
}

fn describe(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    // `.` is the root and `?` a place serde could not name: neither helps the reader.
    describe_json(error.inner(), (path != "." && path != "?").then_some(path.as_str()))
}

fn describe_json(error: &serde_json::Error, path: Option<&str>) -> String {
    let position = format!("line {} column {}", error.line(), error.column());
    let text = error.to_string();
    let message = text.strip_suffix(&format!(" at {position}")).unwrap_or(&text);
    let message = without_values(message);
    match path {
        Some(path) => format!("invalid backend configuration at `{path}` ({position}): {message}"),
        _ => format!("invalid backend configuration ({position}): {message}"),
    }
}

/// A serde message with the offending value taken out: `invalid type: string "sk-…",
/// expected …` keeps the kind (`string`) and what was expected; `unknown variant `sk-…``
/// drops the variant. Field names and expected values are the router's own words.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // The value sits between the kind and the last ", expected" (which comes from
            // the router's types, so a value cannot fake it by containing the words).
            let (found, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, ""));
            let kind = found.split(['`', '"']).next().unwrap_or(found).trim_end();
            let expected = if expected.is_empty() { String::new() } else { format!(", expected {expected}") };
            return format!("{prefix}{kind}{expected}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let tail = ["`, expected ", "`, there are no variants"]
            .iter()
            .filter_map(|end| rest.rfind(end).map(|at| &rest[at + 1..]))
            .next()
            .unwrap_or("");
        return format!("unknown variant{tail}");
    }
    message.to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_place_and_never_a_value() {
        let b = r#"{"tier":"spot","url":"http://127.0.0.1:1","capacity":1"#;
        let cases = [
            (
                format!(r#"{{"backends":[{b},"auth":"sk-live-1"}}]}}"#),
                "at `backends[0].auth` (line 1 column 86): unknown variant, expected one of `none`",
            ),
            (
                format!(r#"{{"backends":[{b},"auth":{{"bearer":"sk-live-2"}}}}]}}"#),
                "at `backends[0].auth.bearer` (line 1 column 96): invalid type: string, expected struct variant",
            ),
            (
                format!(r#"{{"backends":[{b},"auth":{{"bearer":{{"token":"sk-live-3","extra":1}}}}}}]}}"#),
                "at `backends[0].auth.bearer.extra` (line 1 column 113): unknown field `extra`, expected `token`",
            ),
            (
                format!(r#"{{"backends":[{b},"auth":{{"bearer":{{"token":["sk-live-4"]}}}}}}]}}"#),
                "at `backends[0].auth.bearer.token` (line 1 column 94): invalid type: sequence, expected a string",
            ),
            (
                format!(r#"{{"backends":[{b},"auth":{{"sk-live-5":{{"token":"x"}}}}}}]}}"#),
                "at `backends[0].auth` (line 1 column 87): unknown variant",
            ),
            (
                format!(r#"{{"backends":[{b},"auth":{{"modal":{{"key":"sk-live-6"}}}}}}]}}"#),
                "at `backends[0].auth.modal` (line 1 column 103): missing field `secret`",
            ),
            (
                format!(r#"{{"backends":[{b},"auth":{{"bearer":{{"token":"sk-live-7"}}}}}}]"#),
                "(line 1 column 109): EOF while parsing an object",
            ),
            (format!(r#"{{"backends":[{b}}}]}} "sk-live-8""#), "(line 1 column 72): trailing characters"),
            (
                format!("{{\"backends\":[{b},\"auth\":{{\"bearer\":{{\"token\":\"sk-live-9\u{1}\"}}}}}}]}}"),
                "at `backends[0].auth.bearer.token` (line 1 column 105): control character",
            ),
            (
                r#"{"backends":[{"tier":"spto","url":"http://127.0.0.1:1","capacity":1}]}"#.to_string(),
                "at `backends[0].tier` (line 1 column 27): unknown variant, expected `spot` or `serverless`",
            ),
            (
                r#"{"backends":[{"tier":"spot","url":"http://127.0.0.1:1","capacity":-1}]}"#.to_string(),
                "at `backends[0].capacity` (line 1 column 68): invalid value: integer, expected u32",
            ),
            (
                r#"{"backends":[{"tier":"spot","capacity":1}]}"#.to_string(),
                "at `backends[0]` (line 1 column 41): missing field `url`",
            ),
            (
                r#"{"backendz":[]}"#.to_string(),
                "at `backendz` (line 1 column 11): unknown field `backendz`, expected `backends`",
            ),
            ("not json".to_string(), "(line 1 column 2): expected ident"),
            (String::new(), "(line 1 column 0): EOF while parsing a value"),
        ];
        for (body, expected) in cases {
            let error = parse_update(body.as_bytes()).unwrap_err();
            assert!(error.starts_with(&format!("invalid backend configuration {expected}")), "{body}\n{error}");
            assert!(!error.contains("sk-live"), "a value was echoed: {error}");
        }
        assert!(parse_update(format!(r#"{{"backends":[{b}}}]}}"#).as_bytes()).is_ok());
    }

    #[test]
    fn values_are_cut_out_of_serde_messages() {
        let cases = [
            (r#"invalid type: string "sk-1", expected u32"#, "invalid type: string, expected u32"),
            (r#"invalid type: string "a", expected x", expected u32"#, "invalid type: string, expected u32"),
            ("invalid value: integer `-1`, expected u32", "invalid value: integer, expected u32"),
            ("invalid type: map, expected a string", "invalid type: map, expected a string"),
            (
                "unknown variant `sk-1`, expected `spot` or `serverless`",
                "unknown variant, expected `spot` or `serverless`",
            ),
            ("unknown variant `a`, expected `b`, expected `spot`", "unknown variant, expected `spot`"),
            ("unknown variant `sk-1`, there are no variants", "unknown variant, there are no variants"),
            ("missing field `url`", "missing field `url`"),
        ];
        for (message, expected) in cases {
            assert_eq!(without_values(message), expected, "{message}");
        }
    }
}
