//! The fake's HTTP/1.1 front: the bearer check, FastAPI-shaped 422s for bodies with a
//! missing or mistyped field, the async-request envelope (`200 null` plus
//! `X-Skypilot-Request-ID`), and the `RequestPayload` JSON of `/api/get` and
//! `/api/status`. Decisions about clusters are made in `state`, not here.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::state::{Refresh, Request, RequestStatus, Shared};
use super::task::TaskSpec;
use super::{ApiError, FakeError, InstanceStatus, USER_HASH, USER_NAME, base64};

type Reply = Response<Full<Bytes>>;

/// Task YAMLs are small; a bigger body is a client bug.
const BODY_LIMIT: usize = 4 << 20;

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let shared = shared.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |request| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(route(shared, request).await) }
                        });
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(socket), service).await;
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "fake SkyPilot: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn route(shared: Arc<Shared>, request: HttpRequest<Incoming>) -> Reply {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    if path != "/api/health" && !authorized(&shared, &request) {
        return json_reply(StatusCode::UNAUTHORIZED, &json!({"detail": "Invalid or expired service account token"}));
    }
    let body = if method == Method::POST { Some(read_json(request).await) } else { None };
    let body = match body.transpose() {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let body = body.unwrap_or(Value::Null);
    match (method, path.as_str()) {
        (Method::GET, "/api/health") => json_reply(StatusCode::OK, &health()),
        (Method::GET, "/api/get") => api_get(&shared, &query).await,
        (Method::GET, "/api/status") => api_status(&shared, &query),
        (Method::GET, "/enabled_clouds") => {
            accepted(shared.submit("sky.enabled_clouds", &Value::Null, None, |_| async { Ok(json!(["AWS"])) }))
        }
        (Method::POST, "/launch") => launch(&shared, &body),
        (Method::POST, "/status") => status(&shared, &body),
        (Method::POST, "/endpoints") => endpoints(&shared, &body),
        (Method::POST, "/down") => down(&shared, &body),
        (Method::POST, "/validate") => validate(&body),
        (Method::POST, "/api/cancel") => cancel(&shared, &body),
        (Method::POST, "/fake/preempt") => reclaim(&shared, &body, InstanceStatus::Terminated).await,
        (Method::POST, "/fake/stop") => reclaim(&shared, &body, InstanceStatus::Stopped).await,
        (Method::POST, "/fake/fail_launches") => fail_launches(&shared, &body),
        (Method::POST, "/fake/hang") => hang(&shared, &body),
        (Method::GET, "/fake/clusters") => json_reply(StatusCode::OK, &json!(shared.records())),
        (_, path) if ROUTES.contains(&path) => {
            json_reply(StatusCode::METHOD_NOT_ALLOWED, &json!({"detail": "Method Not Allowed"}))
        }
        _ => json_reply(StatusCode::NOT_FOUND, &json!({"detail": "Not Found"})),
    }
}

const ROUTES: &[&str] = &[
    "/api/health",
    "/api/get",
    "/api/status",
    "/enabled_clouds",
    "/launch",
    "/status",
    "/endpoints",
    "/down",
    "/validate",
    "/api/cancel",
    "/fake/preempt",
    "/fake/stop",
    "/fake/fail_launches",
    "/fake/hang",
    "/fake/clusters",
];

fn authorized(shared: &Shared, request: &HttpRequest<Incoming>) -> bool {
    let Some(token) = &shared.config.token else {
        return true;
    };
    // The scheme is matched case-insensitively, as the real middleware does.
    let given = request.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(' '));
    given.is_some_and(|(scheme, value)| scheme.eq_ignore_ascii_case("bearer") && value == token)
}

fn health() -> Value {
    json!({
        "status": "healthy",
        "api_version": "62",
        "version": "0.14.1",
        "version_on_disk": "0.14.1",
        "commit": "tandemn-fake-skypilot",
        "basic_auth_enabled": false,
        "telemetry_enabled": false,
        "user": null,
    })
}

// ---- the real routes ----

fn launch(shared: &Arc<Shared>, body: &Value) -> Reply {
    let fields = [("task", Kind::Str, true), ("cluster_name", Kind::Str, true), ("dryrun", Kind::Bool, false)];
    if let Some(reply) = invalid_body(body, &fields) {
        return reply;
    }
    let name = text(body, "cluster_name");
    let task = text(body, "task");
    let dryrun = body["dryrun"].as_bool().unwrap_or(false);
    let fake = shared.clone();
    accepted(shared.submit("sky.launch", body, Some(name.clone()), move |id| fake.launch(id, name, task, dryrun)))
}

fn status(shared: &Arc<Shared>, body: &Value) -> Reply {
    let fields = [
        ("cluster_names", Kind::StrListOrNull, false),
        ("refresh", Kind::Refresh, false),
        ("include_handle", Kind::Bool, false),
        ("include_credentials", Kind::Bool, false),
        ("all_users", Kind::Bool, false),
    ];
    if let Some(reply) = invalid_body(body, &fields) {
        return reply;
    }
    let names = strings(&body["cluster_names"]);
    let refresh = match body["refresh"].as_str() {
        Some("AUTO") => Refresh::Auto,
        Some("FORCE") => Refresh::Force,
        _ => Refresh::None,
    };
    let include_handle = body["include_handle"].as_bool().unwrap_or(true);
    let fake = shared.clone();
    accepted(shared.submit("sky.status", body, None, move |_| async move {
        Ok(Value::Array(fake.status(names.as_deref(), refresh, include_handle)))
    }))
}

fn endpoints(shared: &Arc<Shared>, body: &Value) -> Reply {
    if let Some(reply) = invalid_body(body, &[("cluster", Kind::Str, true), ("port", Kind::PortOrNull, false)]) {
        return reply;
    }
    let name = text(body, "cluster");
    let port = match &body["port"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let port = match port.map(u16::try_from) {
        Some(Ok(port)) => Some(port),
        Some(Err(_)) => {
            return unprocessable(vec![field_error("port", "int_type", "Input should be a valid port", &body["port"])]);
        }
        None => None,
    };
    let fake = shared.clone();
    let cluster = Some(name.clone());
    accepted(shared.submit("sky.endpoints", body, cluster, move |_| async move { fake.endpoints(&name, port) }))
}

fn down(shared: &Arc<Shared>, body: &Value) -> Reply {
    let fields = [("cluster_name", Kind::Str, true), ("purge", Kind::Bool, false), ("graceful", Kind::Bool, false)];
    if let Some(reply) = invalid_body(body, &fields) {
        return reply;
    }
    let name = text(body, "cluster_name");
    let fake = shared.clone();
    let cluster = Some(name.clone());
    accepted(shared.submit("sky.down", body, cluster, move |_| async move { fake.down(&name).await }))
}

/// Synchronous, as the real one: 200 `null`, or 400 with the exception inside `detail`.
/// Like the real `/validate` it checks the schema, not whether the catalog has the GPU.
fn validate(body: &Value) -> Reply {
    if let Some(reply) = invalid_body(body, &[("dag", Kind::Str, true), ("request_options", Kind::Any, true)]) {
        return reply;
    }
    match TaskSpec::all_from_yaml(&text(body, "dag")) {
        Ok(_) => json_reply(StatusCode::OK, &Value::Null),
        Err(error) => json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"detail": {"type": error.kind, "message": error.message, "args": [error.message],
                               "attributes": {}, "stacktrace": null}}),
        ),
    }
}

fn cancel(shared: &Arc<Shared>, body: &Value) -> Reply {
    let fields = [("request_ids", Kind::StrListOrNull, false), ("all_users", Kind::Bool, false)];
    if let Some(reply) = invalid_body(body, &fields) {
        return reply;
    }
    let ids = strings(&body["request_ids"]);
    let fake = shared.clone();
    accepted(shared.submit(
        "sky.api_cancel",
        body,
        None,
        move |_| async move { Ok(json!(fake.cancel(ids.as_deref()))) },
    ))
}

/// Blocks until the request is finished: 200 with the payload, or 500 with it under `detail`.
async fn api_get(shared: &Shared, query: &str) -> Reply {
    let Some(id) = query_values(query, "request_id").into_iter().next() else {
        return unprocessable(vec![json!({"type": "missing", "loc": ["query", "request_id"],
                                         "msg": "Field required", "input": null})]);
    };
    match shared.finished_request(&id).await {
        None => json_reply(StatusCode::NOT_FOUND, &json!({"detail": format!("Request '{id}' not found")})),
        Some(request) if request.status == RequestStatus::Failed => {
            json_reply(StatusCode::INTERNAL_SERVER_ERROR, &json!({"detail": payload(&request, true)}))
        }
        Some(request) => json_reply(StatusCode::OK, &payload(&request, true)),
    }
}

/// The current status of requests, without waiting (unknown ids are left out).
fn api_status(shared: &Shared, query: &str) -> Reply {
    let ids = query_values(query, "request_ids");
    let all_status = query_values(query, "all_status").first().is_some_and(|v| v == "true");
    let requests = shared.requests((!ids.is_empty()).then_some(ids.as_slice()), all_status);
    json_reply(StatusCode::OK, &Value::Array(requests.iter().map(|r| payload(r, false)).collect()))
}

/// The real `RequestPayload`: `return_value` and `error` are JSON *strings* (`"null"`
/// when empty). `full` is `/api/get`'s form; `/api/status` shows a readable one.
fn payload(request: &Request, full: bool) -> Value {
    let (return_value, error) = match (&request.outcome, full) {
        (Some(Ok(value)), true) => (value.to_string(), "null".to_string()),
        (Some(Err(error)), true) => ("null".to_string(), error_json(error)),
        _ => ("null".to_string(), "null".to_string()),
    };
    let body = request.body.to_string();
    let entrypoint =
        if full { base64(request.name.as_bytes()) } else { request.name.trim_start_matches("sky.").to_string() };
    let short = matches!(request.name, "sky.status" | "sky.endpoints" | "sky.enabled_clouds" | "sky.api_cancel");
    json!({
        "request_id": request.id,
        "name": request.name,
        "entrypoint": entrypoint,
        "request_body": if full { base64(body.as_bytes()) } else { body },
        "status": request.status.as_str(),
        "created_at": request.created_at,
        "user_id": USER_HASH,
        "return_value": return_value,
        "error": error,
        "pid": null,
        "schedule_type": if short { "short" } else { "long" },
        "user_name": USER_NAME,
        "cluster_name": request.cluster_name,
        "status_msg": null,
        "should_retry": false,
        "finished_at": request.finished_at,
    })
}

/// `{"object": <base64>, "type", "message"}` as one JSON string.
fn error_json(error: &ApiError) -> String {
    let object = json!({"type": error.kind, "message": error.message}).to_string();
    json!({"object": base64(object.as_bytes()), "type": error.kind, "message": error.message}).to_string()
}

// ---- the fake's controls ----

async fn reclaim(shared: &Shared, body: &Value, to: InstanceStatus) -> Reply {
    if let Some(reply) = invalid_body(body, &[("cluster", Kind::Str, true)]) {
        return reply;
    }
    match shared.reclaim(&text(body, "cluster"), to).await {
        Ok(record) => json_reply(StatusCode::OK, &json!(record)),
        Err(error @ FakeError::NoSuchCluster(_)) => {
            json_reply(StatusCode::NOT_FOUND, &json!({"detail": error.to_string()}))
        }
        Err(error) => json_reply(StatusCode::CONFLICT, &json!({"detail": error.to_string()})),
    }
}

fn fail_launches(shared: &Shared, body: &Value) -> Reply {
    let fields = [("count", Kind::Count, true), ("type", Kind::Str, false), ("message", Kind::Str, false)];
    if let Some(reply) = invalid_body(body, &fields) {
        return reply;
    }
    let count = body["count"].as_u64().and_then(|c| u32::try_from(c).ok()).unwrap_or(u32::MAX);
    let kind = body["type"].as_str().unwrap_or("ResourcesUnavailableError");
    let message = body["message"].as_str().map_or_else(
        || "Failed to provision all possible launchable resources. Relax the task's resource requirements.".to_string(),
        str::to_string,
    );
    shared.fail_launches(count, ApiError::new(kind, message));
    json_reply(StatusCode::OK, &json!({"count": count}))
}

fn hang(shared: &Shared, body: &Value) -> Reply {
    if let Some(reply) = invalid_body(body, &[("seconds", Kind::Seconds, true)]) {
        return reply;
    }
    let seconds = body["seconds"].as_f64().unwrap_or_default();
    shared.hang(Duration::from_secs_f64(seconds));
    json_reply(StatusCode::OK, &json!({"seconds": seconds}))
}

// ---- bodies ----

/// A body field's type, as the real pydantic model declares it.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    StrListOrNull,
    PortOrNull,
    Refresh,
    Count,
    Seconds,
    Any,
}

/// The 422 listing every problem with the body at once, as FastAPI does; `None` if it is fine.
fn invalid_body(body: &Value, fields: &[(&str, Kind, bool)]) -> Option<Reply> {
    let Some(object) = body.as_object() else {
        return Some(unprocessable(vec![json!({"type": "model_attributes_type", "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from", "input": body})]));
    };
    let errors: Vec<Value> =
        fields.iter().filter_map(|(name, kind, required)| field_problem(object, name, *kind, *required)).collect();
    (!errors.is_empty()).then(|| unprocessable(errors))
}

fn field_problem(object: &Map<String, Value>, name: &str, kind: Kind, required: bool) -> Option<Value> {
    let Some(value) = object.get(name) else {
        return required.then(|| {
            json!({"type": "missing", "loc": ["body", name], "msg": "Field required",
                                       "input": Value::Object(object.clone())})
        });
    };
    let (ok, error_type, message) = match kind {
        Kind::Str => (value.is_string(), "string_type", "Input should be a valid string"),
        Kind::Bool => (value.is_boolean(), "bool_type", "Input should be a valid boolean"),
        Kind::StrListOrNull => (
            value.is_null() || value.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            "list_type",
            "Input should be a valid list of strings",
        ),
        Kind::PortOrNull => (
            value.is_null() || value.is_u64() || value.as_str().is_some_and(|s| s.parse::<u16>().is_ok()),
            "int_type",
            "Input should be a valid integer",
        ),
        Kind::Refresh => (
            matches!(value.as_str(), Some("NONE" | "AUTO" | "FORCE")),
            "enum",
            "Input should be 'NONE', 'AUTO' or 'FORCE'",
        ),
        Kind::Count => (value.is_u64(), "int_type", "Input should be a valid integer"),
        Kind::Seconds => {
            (value.as_f64().is_some_and(|s| s.is_finite() && s >= 0.0), "float_type", "Input should be a number ≥ 0")
        }
        Kind::Any => (true, "", ""),
    };
    (!ok).then(|| field_error(name, error_type, message, value))
}

fn field_error(name: &str, error_type: &str, message: &str, input: &Value) -> Value {
    json!({"type": error_type, "loc": ["body", name], "msg": message, "input": input})
}

/// The JSON body; an empty one counts as missing, as FastAPI treats it.
async fn read_json(request: HttpRequest<Incoming>) -> Result<Value, Reply> {
    let bytes = match Limited::new(request.into_body(), BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(json_reply(StatusCode::PAYLOAD_TOO_LARGE, &json!({"detail": "Request body too large"}))),
    };
    if bytes.is_empty() {
        return Err(unprocessable(vec![
            json!({"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}),
        ]));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        unprocessable(vec![json!({"type": "json_invalid", "loc": ["body", e.column()], "msg": "JSON decode error",
                                  "input": {}, "ctx": {"error": e.to_string()}})])
    })
}

fn text(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_default().to_string()
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|items| items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
}

/// Every value of `key` in a query string (`a=1&a=2`), percent-decoded.
fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(k, _)| percent_decode(k) == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- replies ----

/// The async envelope of every real POST (and of `GET /enabled_clouds`).
fn accepted(request_id: String) -> Reply {
    let mut reply = json_reply(StatusCode::OK, &Value::Null);
    if let Ok(value) = request_id.parse() {
        reply.headers_mut().insert("x-skypilot-request-id", value);
    }
    reply
}

fn unprocessable(errors: Vec<Value>) -> Reply {
    json_reply(StatusCode::UNPROCESSABLE_ENTITY, &json!({"detail": errors}))
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_repeat_and_decode() {
        let query = "request_ids=a%2Db&request_ids=c+d&all_status=true&x";
        assert_eq!(query_values(query, "request_ids"), ["a-b", "c d"]);
        assert_eq!(query_values(query, "all_status"), ["true"]);
        assert_eq!(query_values(query, "x"), [""]);
        assert!(query_values(query, "missing").is_empty());
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn body_checks_list_every_problem_with_its_location() {
        let fields = [("task", Kind::Str, true), ("cluster_name", Kind::Str, true), ("dryrun", Kind::Bool, false)];
        let cases = [
            (json!({"task": "x", "cluster_name": "c"}), vec![]),
            (json!({"task": "x"}), vec![("cluster_name", "missing")]),
            (
                json!({"task": 1, "dryrun": "yes"}),
                vec![("task", "string_type"), ("cluster_name", "missing"), ("dryrun", "bool_type")],
            ),
        ];
        for (body, expected) in cases {
            let object = body.as_object().unwrap();
            let problems: Vec<(String, String)> = fields
                .iter()
                .filter_map(|(name, kind, required)| field_problem(object, name, *kind, *required))
                .map(|p| (p["loc"][1].as_str().unwrap().to_string(), p["type"].as_str().unwrap().to_string()))
                .collect();
            let expected: Vec<(String, String)> =
                expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
            assert_eq!(problems, expected, "{body}");
        }
    }
}
