//! A typed client of the SkyPilot API server's REST routes (0.14.1, API version 62):
//! `/api/health`, `/launch`, `/status`, `/endpoints`, `/down`, `/validate`,
//! `/enabled_clouds`, and the request routes `/api/get`, `/api/status`, `/api/stream`.
//!
//! Every POST only schedules a request: the server answers at once with its id in
//! `X-Skypilot-Request-ID`, and `GET /api/get` blocks until the request is done. A failed
//! request comes back as HTTP 500 with the whole payload under `detail` and the
//! exception as a JSON *string* in `detail.error`. This module turns all of that into
//! values and classified [`ProviderError`]s; it never decides what a status means for a
//! replica (that is [`super::SkyPilotSpot`]'s job). Every call has a deadline, and no
//! message leaves it with an ANSI escape, a line break or a secret in it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tandemn_config::api::Secret;

use crate::provider::{ProviderError, ReplicaId};
use crate::rest::{self, Redactor};

/// Where a local `sky api start` listens.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:46580";
/// The oldest API version whose routes and shapes this client speaks (SkyPilot 0.14.1).
pub const MIN_API_VERSION: u32 = 62;
/// Default deadline of a call that answers at once (health, scheduling a request,
/// `/api/status`).
pub const CALL_DEADLINE: Duration = Duration::from_secs(20);
/// Default wait for a short request's result (`/status`, `/endpoints`, `/enabled_clouds`).
pub const SHORT_WAIT: Duration = Duration::from_secs(120);

/// `endpoint` as it may be shown: user information in it (a credential, which
/// [`SkyClient::new`] refuses) becomes `***`.
pub fn shown_endpoint(endpoint: &str) -> String {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("", endpoint));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let sep = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{sep}***{}", &rest[at..])
        }
        None => endpoint.to_string(),
    }
}

/// A SkyPilot request id: server-generated, returned in `X-Skypilot-Request-ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl RequestId {
    /// Letters, digits, `-` and `_` only: it goes into a URL query.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty()
            || text.len() > 128
            || !text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(format!("`{}` is not a SkyPilot request id", rest::cap(text, 80)));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RequestId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<RequestId> for String {
    fn from(id: RequestId) -> String {
        id.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `GET /api/health` says about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub api_version: u32,
    pub version: String,
    pub commit: Option<String>,
    pub basic_auth_enabled: bool,
}

/// How fresh `/status` must be. `Auto` asks the cloud about spot clusters whose cached
/// status is older than 2 s: the only way a preempted spot cluster is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    None,
    Auto,
    Force,
}

impl Refresh {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Auto => "AUTO",
            Self::Force => "FORCE",
        }
    }
}

/// SkyPilot's `ClusterStatus` (`sky/utils/status_lib.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterStatus {
    Init,
    Up,
    Stopped,
    Autostopping,
    Pending,
    /// A status this client does not know (a newer server).
    Other(String),
}

impl<'de> Deserialize<'de> for ClusterStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            "INIT" => Self::Init,
            "UP" => Self::Up,
            "STOPPED" => Self::Stopped,
            "AUTOSTOPPING" => Self::Autostopping,
            "PENDING" => Self::Pending,
            _ => Self::Other(text),
        })
    }
}

/// One cluster of `/status`: the fields of `StatusResponse` Tandemn reads. The pickled
/// `handle` and the credentials are neither asked for nor parsed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterRecord {
    pub name: String,
    pub status: ClusterStatus,
    /// Unix seconds.
    #[serde(default)]
    pub launched_at: Option<u64>,
    /// Unix seconds of the last status change.
    #[serde(default)]
    pub status_updated_at: Option<u64>,
    #[serde(default)]
    pub cloud: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// `1x[spot](gpus=L4:1, g6.xlarge, ...)`; the instance type is cut at 15 characters.
    #[serde(default)]
    pub resources_str: Option<String>,
    /// The same, uncut: `1x[spot](gpus=L4:1, cpus=4, mem=16, g6.xlarge, disk=100, ...)`.
    #[serde(default)]
    pub resources_str_full: Option<String>,
    #[serde(default)]
    pub last_event: Option<String>,
    #[serde(default)]
    pub init_status_reason: Option<String>,
}

impl ClusterRecord {
    /// The instance type and whether it is spot, from the resources string.
    pub fn instance(&self) -> Option<(String, bool)> {
        let text = self.resources_str_full.as_deref().or(self.resources_str.as_deref())?;
        parse_resources(text)
    }
}

/// The instance type and the spot flag of a resources string such as
/// `1x[spot](gpus=L4:1, cpus=4, mem=16, g6.xlarge, disk=100, ports=['8000'])`: the
/// element that looks like `family.size` (no `=`, no quote, not cut with `...`).
pub fn parse_resources(text: &str) -> Option<(String, bool)> {
    let open = text.find('(')?;
    let spot = text[..open].contains("[spot]");
    let inner = text[open + 1..].strip_suffix(')').unwrap_or(&text[open + 1..]);
    let instance = inner.split(',').map(str::trim).find(|element| {
        element.contains('.')
            && !element.ends_with("...")
            && element.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    })?;
    Some((instance.to_string(), spot))
}

/// A request's state (`RequestStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestState {
    Pending,
    Waiting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Other(String),
}

impl RequestState {
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl<'de> Deserialize<'de> for RequestState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            "PENDING" => Self::Pending,
            "WAITING" => Self::Waiting,
            "RUNNING" => Self::Running,
            "SUCCEEDED" => Self::Succeeded,
            "FAILED" => Self::Failed,
            "CANCELLED" => Self::Cancelled,
            _ => Self::Other(text),
        })
    }
}

/// One request as `/api/status` lists it (without its result or error).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RequestInfo {
    pub request_id: RequestId,
    /// `sky.launch`, `sky.status`, ...
    pub name: String,
    pub status: RequestState,
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<f64>,
    #[serde(default)]
    pub finished_at: Option<f64>,
}

impl RequestInfo {
    pub fn is_launch(&self) -> bool {
        self.name == "sky.launch" || self.name == "launch"
    }
}

/// A client of one SkyPilot API server. Cheap to clone.
#[derive(Clone)]
pub struct SkyClient {
    http: reqwest::Client,
    /// Without a trailing `/`.
    endpoint: String,
    token: Option<Secret>,
    redactor: Redactor,
    deadlines: Deadlines,
}

/// How long each kind of call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// A call the server answers at once.
    pub call: Duration,
    /// Waiting for a short request's result (`/status`, `/endpoints`).
    pub wait: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self { call: CALL_DEADLINE, wait: SHORT_WAIT }
    }
}

impl std::fmt::Debug for SkyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkyClient")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl SkyClient {
    /// `SKYPILOT_API_SERVER_ENDPOINT` (default [`DEFAULT_ENDPOINT`]) and, when set,
    /// `SKYPILOT_SERVICE_ACCOUNT_TOKEN`, sent as `Authorization: Bearer`: the same
    /// variables the `sky` CLI reads.
    pub fn from_env() -> Result<Self, ProviderError> {
        let endpoint = std::env::var("SKYPILOT_API_SERVER_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = match std::env::var("SKYPILOT_SERVICE_ACCOUNT_TOKEN") {
            Ok(value) if !value.is_empty() => Some(
                Secret::parse(value)
                    .map_err(|e| ProviderError::Invalid(format!("SKYPILOT_SERVICE_ACCOUNT_TOKEN: {e}")))?,
            ),
            _ => None,
        };
        Self::new(&endpoint, token)
    }

    /// A client of the server at `endpoint` (`http://` or `https://`, no credentials in
    /// it), with an optional service-account token.
    pub fn new(endpoint: &str, token: Option<Secret>) -> Result<Self, ProviderError> {
        let endpoint = endpoint.trim().trim_end_matches('/');
        let rest = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://")).ok_or_else(|| {
            ProviderError::Invalid(format!(
                "SkyPilot API server endpoint `{}` must start with http:// or https://",
                rest::cap(endpoint, 100)
            ))
        })?;
        if rest.is_empty() || rest.contains('@') || rest.contains(char::is_whitespace) {
            return Err(ProviderError::Invalid(
                "SkyPilot API server endpoint must be http(s)://host[:port] without user information (the token goes in SKYPILOT_SERVICE_ACCOUNT_TOKEN)".to_string(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ProviderError::Invalid(format!("cannot build an HTTP client: {e}")))?;
        let mut redactor = Redactor::new();
        if let Some(token) = &token {
            redactor.add(token);
        }
        Ok(Self { http, endpoint: endpoint.to_string(), token, redactor, deadlines: Deadlines::default() })
    }

    /// The same client with other deadlines (a reconciler that must not wait two minutes).
    pub fn with_deadlines(self, deadlines: Deadlines) -> Self {
        Self { deadlines, ..self }
    }

    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    /// The server's address, as configured (never holds a secret).
    pub fn api_endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Hides `secret` (a replica key, say) in every message this client produces.
    pub fn hide(&mut self, secret: &Secret) {
        self.redactor.add(secret);
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The server's version, refusing one older than [`MIN_API_VERSION`].
    pub async fn health(&self) -> Result<ServerInfo, ProviderError> {
        let (status, _, body) = self.send(self.http.get(self.url("/api/health")), self.deadlines.call).await?;
        if status != 200 {
            return Err(self.http_error(status, None, &body));
        }
        parse_health(&body, &self.redactor)
    }

    /// The clouds the server has enabled (lower-case canonical names: `aws`, `gcp`),
    /// as `sky check` last found them.
    pub async fn enabled_clouds(&self) -> Result<Vec<String>, ProviderError> {
        let request = self.http.get(self.url("/enabled_clouds")).query(&[("expand", "false")]);
        let id = self.schedule(request).await?;
        let value = self.get(&id, self.deadlines.wait).await?;
        let clouds: Vec<String> = serde_json::from_value(value)
            .map_err(|e| self.shape_error(&format!("enabled_clouds result is not a list of names: {e}")))?;
        Ok(clouds.into_iter().map(|c| c.to_ascii_lowercase()).collect())
    }

    /// Schedules a launch of `cluster` with `task_yaml` and returns at once with the
    /// request id. `dryrun` runs the optimizer only (nothing is provisioned).
    pub async fn launch(&self, cluster: &ReplicaId, task_yaml: &str, dryrun: bool) -> Result<RequestId, ProviderError> {
        let body = json!({
            "task": task_yaml,
            "cluster_name": cluster.as_str(),
            "dryrun": dryrun,
            "retry_until_up": false,
        });
        self.schedule(self.http.post(self.url("/launch")).json(&body)).await
    }

    /// A request's state without waiting for it; `None` when the server does not know it
    /// (never made, or forgotten after the server's retention).
    pub async fn request_status(&self, id: &RequestId) -> Result<Option<RequestInfo>, ProviderError> {
        let request = self.http.get(self.url("/api/status")).query(&[("request_ids", id.as_str())]);
        let (status, headers, body) = self.send(request, self.deadlines.call).await?;
        if status != 200 {
            return Err(self.http_error(status, rest::retry_after(&headers), &body));
        }
        let list: Vec<RequestInfo> =
            serde_json::from_str(&body).map_err(|e| self.shape_error(&format!("/api/status answer: {e}")))?;
        Ok(list.into_iter().find(|r| &r.request_id == id))
    }

    /// Requests not finished yet, optionally only those on `cluster`.
    pub async fn active_requests(&self, cluster: Option<&str>) -> Result<Vec<RequestInfo>, ProviderError> {
        let mut request = self.http.get(self.url("/api/status"));
        if let Some(cluster) = cluster {
            request = request.query(&[("cluster_name", cluster)]);
        }
        let (status, headers, body) = self.send(request, self.deadlines.call).await?;
        if status != 200 {
            return Err(self.http_error(status, rest::retry_after(&headers), &body));
        }
        serde_json::from_str(&body).map_err(|e| self.shape_error(&format!("/api/status answer: {e}")))
    }

    /// Waits up to `deadline` for the request to finish and returns its result (the
    /// parsed `return_value`), or its error, classified.
    pub async fn get(&self, id: &RequestId, deadline: Duration) -> Result<Value, ProviderError> {
        let request = self.http.get(self.url("/api/get")).query(&[("request_id", id.as_str())]);
        let (status, headers, body) = self.send_raw(request, deadline).await.map_err(|e| {
            if e.is_timeout() {
                // The request goes on on the server; a later call finds it done.
                ProviderError::transient(format!("SkyPilot request {id} did not finish within {}s", deadline.as_secs()))
            } else {
                self.unreachable(&e)
            }
        })?;
        parse_get(id, status, rest::retry_after(&headers), &body, &self.redactor)
    }

    /// The request's log as plain text, as far as it is written (no following), without
    /// colours or secrets.
    pub async fn logs(&self, id: &RequestId, deadline: Duration) -> Result<String, ProviderError> {
        let request = self.http.get(self.url("/api/stream")).query(&[
            ("request_id", id.as_str()),
            ("format", "plain"),
            ("follow", "false"),
        ]);
        let (status, headers, body) = self.send(request, deadline).await?;
        if status != 200 {
            return Err(self.http_error(status, rest::retry_after(&headers), &body));
        }
        Ok(self.redactor.scrub(&body))
    }

    /// The clusters (all, or those named), with neither credentials nor the pickled
    /// handle: with them, `/status` fails outright when a cluster's SSH key is missing.
    pub async fn status(
        &self,
        clusters: Option<&[ReplicaId]>,
        refresh: Refresh,
    ) -> Result<Vec<ClusterRecord>, ProviderError> {
        let names: Option<Vec<&str>> = clusters.map(|c| c.iter().map(ReplicaId::as_str).collect());
        let body = json!({
            "cluster_names": names,
            "refresh": refresh.as_str(),
            "all_users": true,
            "include_credentials": false,
            "include_handle": false,
        });
        let id = self.schedule(self.http.post(self.url("/status")).json(&body)).await?;
        let value = self.get(&id, self.deadlines.wait).await?;
        serde_json::from_value(value).map_err(|e| self.shape_error(&format!("/status result: {e}")))
    }

    /// `http://host:port` of the cluster's `port`, `None` while the port has no address.
    /// A cluster that does not exist or is not up is `NotFound`.
    pub async fn endpoint(&self, cluster: &ReplicaId, port: u16) -> Result<Option<String>, ProviderError> {
        let body = json!({ "cluster": cluster.as_str(), "port": port });
        let id = self.schedule(self.http.post(self.url("/endpoints")).json(&body)).await?;
        let value = self.get(&id, self.deadlines.wait).await?;
        parse_endpoints(&value, port).map_err(|e| self.shape_error(&e))
    }

    /// Cancels the given requests (those already finished stay as they are).
    pub async fn cancel(&self, ids: &[RequestId]) -> Result<(), ProviderError> {
        let body = json!({ "request_ids": ids.iter().map(RequestId::as_str).collect::<Vec<_>>() });
        let id = self.schedule(self.http.post(self.url("/api/cancel")).json(&body)).await?;
        self.get(&id, self.deadlines.wait).await.map(drop)
    }

    /// Tears the cluster down and waits up to `deadline` for it. Idempotent: a cluster
    /// that does not exist counts as down.
    pub async fn down(&self, cluster: &ReplicaId, deadline: Duration) -> Result<(), ProviderError> {
        let body = json!({ "cluster_name": cluster.as_str(), "purge": false });
        let id = self.schedule(self.http.post(self.url("/down")).json(&body)).await?;
        match self.get(&id, deadline).await {
            // Only SkyPilot's own "no such cluster": a down request the server lost is not done.
            Err(ProviderError::NotFound(m)) if m.starts_with("ClusterDoesNotExist") => Ok(()),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Checks a task YAML against the server's schema and catalog (synchronous). Does not
    /// check that the accelerator exists: a dry-run launch does.
    pub async fn validate(&self, task_yaml: &str) -> Result<(), ProviderError> {
        let body = json!({ "dag": task_yaml, "request_options": null });
        let (status, headers, text) =
            self.send(self.http.post(self.url("/validate")).json(&body), self.deadlines.call).await?;
        if status == 200 {
            return Ok(());
        }
        Err(self.http_error(status, rest::retry_after(&headers), &text))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    /// Sends a request that schedules work and returns its id.
    async fn schedule(&self, request: reqwest::RequestBuilder) -> Result<RequestId, ProviderError> {
        let request = self.authorize(request).timeout(self.deadlines.call);
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status().as_u16();
        let id = response.headers().get("x-skypilot-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after = rest::retry_after(response.headers());
        let body = response.text().await.map_err(|e| self.unreachable(&e))?;
        if status != 200 {
            return Err(self.http_error(status, retry_after, &body));
        }
        let id = id.ok_or_else(|| self.shape_error("the answer has no X-Skypilot-Request-ID header"))?;
        RequestId::parse(&id).map_err(|e| self.shape_error(&e))
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Duration,
    ) -> Result<(u16, reqwest::header::HeaderMap, String), ProviderError> {
        self.send_raw(request, deadline).await.map_err(|e| self.unreachable(&e))
    }

    async fn send_raw(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Duration,
    ) -> Result<(u16, reqwest::header::HeaderMap, String), reqwest::Error> {
        let response = self.authorize(request).timeout(deadline).send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await?;
        Ok((status, headers, body))
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    fn unreachable(&self, error: &reqwest::Error) -> ProviderError {
        let hint = format!("is `sky api start` running at {}?", self.endpoint);
        rest::transport_error(error, "SkyPilot API server", &hint, &self.redactor)
    }

    fn http_error(&self, status: u16, retry_after: Option<Duration>, body: &str) -> ProviderError {
        parse_error(status, retry_after, body, &self.redactor)
    }

    fn shape_error(&self, what: &str) -> ProviderError {
        ProviderError::Api { status: 200, excerpt: self.redactor.clean(&format!("unexpected SkyPilot answer: {what}")) }
    }
}

/// `/api/health`'s answer, refusing a server older than [`MIN_API_VERSION`].
pub fn parse_health(body: &str, redactor: &Redactor) -> Result<ServerInfo, ProviderError> {
    #[derive(Deserialize)]
    struct Raw {
        api_version: Value,
        version: Option<String>,
        commit: Option<String>,
        #[serde(default)]
        basic_auth_enabled: bool,
    }
    let raw: Raw = serde_json::from_str(body).map_err(|e| ProviderError::Api {
        status: 200,
        excerpt: redactor.clean(&format!("/api/health answer is not SkyPilot's ({e}): {body}")),
    })?;
    // 0.14.1 sends the version as a string ("62"); older servers sent a number.
    let api_version = match &raw.api_version {
        Value::String(s) => s.parse::<u32>().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
    .ok_or_else(|| ProviderError::Api {
        status: 200,
        excerpt: redactor.clean(&format!("/api/health has no api_version: {body}")),
    })?;
    let version = raw.version.unwrap_or_else(|| "unknown".to_string());
    if api_version < MIN_API_VERSION {
        return Err(ProviderError::Invalid(format!(
            "the SkyPilot API server is version {version} (API {api_version}); Tandemn needs API {MIN_API_VERSION} or newer: upgrade the SkyPilot API server to 0.14 or newer"
        )));
    }
    Ok(ServerInfo { api_version, version, commit: raw.commit, basic_auth_enabled: raw.basic_auth_enabled })
}

/// `/api/get`'s answer: the result on 200, the classified error on 500, `NotFound` for
/// an id the server does not know.
pub fn parse_get(
    id: &RequestId,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    redactor: &Redactor,
) -> Result<Value, ProviderError> {
    match status {
        200 => {
            let payload: Value = serde_json::from_str(body).map_err(|e| ProviderError::Api {
                status,
                excerpt: redactor.clean(&format!("request {id}: the answer is not JSON ({e})")),
            })?;
            match payload.get("return_value") {
                // `return_value` is JSON inside a JSON string.
                Some(Value::String(text)) => serde_json::from_str(text).map_err(|e| ProviderError::Api {
                    status,
                    excerpt: redactor.clean(&format!("request {id}: return_value is not JSON ({e})")),
                }),
                Some(Value::Null) | None => Ok(Value::Null),
                Some(other) => Ok(other.clone()),
            }
        }
        404 => Err(ProviderError::NotFound(redactor.clean(&format!("SkyPilot request {id}: {}", detail_text(body))))),
        500 => {
            let detail = serde_json::from_str::<Value>(body).ok().and_then(|v| v.get("detail").cloned());
            match detail.as_ref().and_then(request_error) {
                Some((kind, message)) => Err(classify(&kind, &message, 500, redactor)),
                None => Err(parse_error(status, retry_after, body, redactor)),
            }
        }
        _ => Err(parse_error(status, retry_after, body, redactor)),
    }
}

/// The `{type, message}` of a failed request's payload (`detail.error` is a JSON string,
/// `"null"` when there is none).
fn request_error(payload: &Value) -> Option<(String, String)> {
    let error: Value = match payload.get("error")? {
        Value::String(text) => serde_json::from_str(text).ok()?,
        other => other.clone(),
    };
    let kind = error.get("type")?.as_str()?.to_string();
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default().to_string();
    Some((kind, message))
}

/// An HTTP error answer: FastAPI's `{"detail": ...}`, where `detail` is a string, a list
/// of field errors (422) or a serialized exception `{type, message}` (400 from `/validate`).
pub fn parse_error(status: u16, retry_after: Option<Duration>, body: &str, redactor: &Redactor) -> ProviderError {
    let detail = serde_json::from_str::<Value>(body).ok().and_then(|v| v.get("detail").cloned());
    match (status, &detail) {
        (422, Some(Value::Array(fields))) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| {
                    let loc = f.get("loc").and_then(Value::as_array).map_or_else(String::new, |loc| {
                        loc.iter()
                            .map(|part| part.as_str().map_or_else(|| part.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join(".")
                    });
                    let msg = f.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                    format!("{loc}: {msg}")
                })
                .collect();
            ProviderError::Invalid(
                redactor.clean(&format!("the SkyPilot API server refused the request body: {}", fields.join("; "))),
            )
        }
        (400, Some(detail @ Value::Object(_))) if detail.get("type").is_some() => {
            let kind = detail.get("type").and_then(Value::as_str).unwrap_or_default();
            let message = detail.get("message").and_then(Value::as_str).unwrap_or_default();
            match classify(kind, message, status, redactor) {
                // What /validate refuses is the task itself.
                ProviderError::Api { excerpt, .. } => ProviderError::Invalid(excerpt),
                other => other,
            }
        }
        _ => rest::classify_http(status, retry_after, redactor.clean(&detail_text(body))),
    }
}

/// `detail` as text, or the body itself when it is not FastAPI's shape.
fn detail_text(body: &str) -> String {
    match serde_json::from_str::<Value>(body).ok().and_then(|v| v.get("detail").cloned()) {
        Some(Value::String(text)) => text,
        Some(other) => other.to_string(),
        None => body.to_string(),
    }
}

/// A SkyPilot exception (`type`, `message`), classified by its type and, for cloud errors
/// that SkyPilot wraps, by its message.
pub fn classify(kind: &str, message: &str, status: u16, redactor: &Redactor) -> ProviderError {
    let shown = redactor.clean(&format!("{kind}: {message}"));
    let lower = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(&n.to_ascii_lowercase()));
    let quota = has(&[
        "quota",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "InstanceLimitExceeded",
        "SpotMaxPriceTooLow",
        "limit exceeded",
    ]);
    let credentials = has(&[
        "NoCredentialsError",
        "Unable to locate credentials",
        "InvalidClientTokenId",
        "AuthFailure",
        "UnauthorizedOperation",
        "ExpiredToken",
        "SignatureDoesNotMatch",
        "credentials",
    ]);
    let network = has(&["ConnectionError", "EndpointConnectionError", "ConnectTimeout", "ReadTimeout", "timed out"]);
    match kind {
        "ClusterDoesNotExist" | "ClusterNotUpError" => ProviderError::NotFound(shown),
        "NoCloudAccessError"
        | "InvalidCloudCredentials"
        | "CloudUserIdentityError"
        | "PermissionDeniedError"
        | "NoWorkspaceAccessError"
        | "ApiServerAuthenticationError" => ProviderError::Auth(shown),
        _ if quota => ProviderError::Quota(shown),
        "ResourcesUnavailableError" | "KubeAPIUnreachableError" => ProviderError::NoCapacity(shown),
        _ if credentials => ProviderError::Auth(shown),
        "InvalidClusterNameError"
        | "InvalidSkyPilotConfigError"
        | "ValueError"
        | "InvalidCloudConfigs"
        | "NotSupportedError"
        | "ResourcesMismatchError"
        | "ProvisionUnsupportedError"
        | "UserRequestRejectedByPolicy"
        | "ClusterOwnerIdentityMismatchError" => ProviderError::Invalid(shown),
        "ServerTemporarilyUnavailableError"
        | "RequestInterruptedError"
        | "NetworkError"
        | "ConnectionError"
        | "ConcurrentWorkerExhaustedError" => ProviderError::transient(shown),
        _ if network => ProviderError::transient(shown),
        _ => ProviderError::Api { status, excerpt: shown },
    }
}

/// `/endpoints`' result `{"8000": "host:port"}` as `http://host:port`.
pub fn parse_endpoints(value: &Value, port: u16) -> Result<Option<String>, String> {
    let map: BTreeMap<String, String> =
        serde_json::from_value(value.clone()).map_err(|e| format!("/endpoints result is not a port map: {e}"))?;
    let Some(address) = map.get(&port.to_string()) else { return Ok(None) };
    let address = address.trim();
    if address.is_empty() {
        return Ok(None);
    }
    if address.contains("://") {
        return Ok(Some(address.to_string()));
    }
    if address.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return Err(format!("/endpoints address `{}` is not host:port", rest::cap(address, 100)));
    }
    Ok(Some(format!("http://{address}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> RequestId {
        RequestId::parse("7f3c2a10-1d2e-4c5b-9a8f-0123456789ab").unwrap()
    }

    /// A failed request's payload as `/api/get` sends it (provider-validation.md §1.3).
    fn failed(kind: &str, message: &str) -> String {
        let error = json!({"object": "gASVAAAA", "type": kind, "message": message}).to_string();
        json!({"detail": {"request_id": "x", "name": "sky.down", "status": "FAILED", "return_value": "null", "error": error}})
            .to_string()
    }

    #[test]
    fn a_shown_endpoint_hides_user_information() {
        let cases = [
            ("http://127.0.0.1:46580", "http://127.0.0.1:46580"),
            ("http://user:pw@host:1/x@y", "http://***@host:1/x@y"),
            ("https://a@b@host", "https://***@host"),
            ("user:pw@host", "***@host"),
        ];
        for (endpoint, shown) in cases {
            assert_eq!(shown_endpoint(endpoint), shown, "{endpoint}");
        }
    }

    #[test]
    fn get_parses_the_result_inside_a_json_string() {
        let redactor = Redactor::new();
        let ok = |return_value: &str| {
            json!({"request_id": "x", "name": "sky.status", "status": "SUCCEEDED", "return_value": return_value, "error": "null"})
                .to_string()
        };
        let cases = [
            (ok("[]"), json!([])),
            (ok(r#"{"job_id":null,"handle":"gAROLg=="}"#), json!({"job_id": null, "handle": "gAROLg=="})),
            (ok(r#"{"8000":"127.0.0.2:8000"}"#), json!({"8000": "127.0.0.2:8000"})),
            (ok("null"), Value::Null),
        ];
        for (body, want) in cases {
            assert_eq!(parse_get(&id(), 200, None, &body, &redactor).unwrap(), want, "{body}");
        }
    }

    #[test]
    fn failed_requests_are_classified_by_skypilot_error_type() {
        let redactor = Redactor::new();
        type Check = fn(&ProviderError) -> bool;
        let cases: [(&str, &str, Check); 14] = [
            (
                "ClusterDoesNotExist",
                "Cluster 'tandemn-r1' does not exist.",
                |e| matches!(e, ProviderError::NotFound(m) if m.starts_with("ClusterDoesNotExist: ") && m.contains("tandemn-r1")),
            ),
            ("ClusterNotUpError", "Cluster 'tandemn-r1' not found.", |e| matches!(e, ProviderError::NotFound(_))),
            (
                "ResourcesUnavailableError",
                "Catalog does not contain any instances satisfying the request: 1x AWS([Spot], {'FOO': 1}).",
                |e| matches!(e, ProviderError::NoCapacity(_)),
            ),
            (
                "ResourcesUnavailableError",
                "Failed to acquire resources in all zones: MaxSpotInstanceCountExceeded",
                |e| matches!(e, ProviderError::Quota(_)),
            ),
            (
                "NoCloudAccessError",
                "Cloud access is not set up. Run: \x1b[1msky check\x1b[0m",
                |e| matches!(e, ProviderError::Auth(m) if m == "NoCloudAccessError: Cloud access is not set up. Run: sky check"),
            ),
            ("CloudError", "botocore error (NoCredentialsError): Unable to locate credentials", |e| {
                matches!(e, ProviderError::Auth(_))
            }),
            ("InvalidClusterNameError", "Cluster name 'Tandemn_R1!' is invalid", |e| {
                matches!(e, ProviderError::Invalid(_))
            }),
            ("InvalidSkyPilotConfigError", "Invalid resources YAML", |e| matches!(e, ProviderError::Invalid(_))),
            (
                "ValueError",
                "Invalid region 'us-west-9'\nDid you mean one of these: 'us-east-1, us-east-2'?",
                |e| matches!(e, ProviderError::Invalid(m) if !m.contains('\n')),
            ),
            (
                "ConnectionError",
                "HTTPSConnectionPool(host='raw.githubusercontent.com', port=443): Max retries exceeded",
                |e| matches!(e, ProviderError::Transient { .. }),
            ),
            ("CloudError", "requests error (ConnectionError): catalogs/v8/common/accelerators.csv", |e| {
                matches!(e, ProviderError::Transient { .. })
            }),
            ("RequestInterruptedError", "interrupted by an API server restart", |e| {
                matches!(e, ProviderError::Transient { .. })
            }),
            (
                "RuntimeError",
                "something odd",
                |e| matches!(e, ProviderError::Api { status: 500, excerpt } if excerpt == "RuntimeError: something odd"),
            ),
            ("CommandError", "quota exceeded for vCPU", |e| matches!(e, ProviderError::Quota(_))),
        ];
        for (kind, message, check) in cases {
            let error = parse_get(&id(), 500, None, &failed(kind, message), &redactor).unwrap_err();
            assert!(check(&error), "{kind}: {message} -> {error:?}");
        }
    }

    #[test]
    fn http_errors_are_classified() {
        let redactor = Redactor::new();
        let unknown =
            parse_get(&id(), 404, None, r#"{"detail":"Request 'deadbeef' not found"}"#, &redactor).unwrap_err();
        assert!(matches!(&unknown, ProviderError::NotFound(m) if m.contains("deadbeef")), "{unknown:?}");

        let missing =
            r#"{"detail":[{"type":"missing","loc":["body","cluster_name"],"msg":"Field required","input":{}}]}"#;
        let error = parse_error(422, None, missing, &redactor);
        assert!(
            matches!(&error, ProviderError::Invalid(m) if m.contains("body.cluster_name: Field required")),
            "{error:?}"
        );

        let typo = r#"{"detail":{"type":"InvalidSkyPilotConfigError","message":"Invalid resources YAML: Instead of 'use_spotz', did you mean 'use_spot'?","args":[],"attributes":{},"stacktrace":null}}"#;
        let error = parse_error(400, None, typo, &redactor);
        assert!(matches!(&error, ProviderError::Invalid(m) if m.contains("did you mean 'use_spot'")), "{error:?}");
        let odd = r#"{"detail":{"type":"KeyError","message":"'resources'"}}"#;
        assert!(matches!(parse_error(400, None, odd, &redactor), ProviderError::Invalid(_)));

        assert!(matches!(parse_error(401, None, r#"{"detail":"Unauthorized"}"#, &redactor), ProviderError::Auth(_)));
        let busy = parse_error(
            503,
            Some(Duration::from_secs(3)),
            r#"{"detail":"Server is shutting down, please try again later."}"#,
            &redactor,
        );
        assert!(matches!(busy, ProviderError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(3)));
        let html = parse_error(502, None, "<html>bad gateway</html>", &redactor);
        assert!(matches!(html, ProviderError::Transient { .. }));
        assert_eq!(
            parse_error(500, None, "Internal Server Error", &redactor),
            ProviderError::Api { status: 500, excerpt: "Internal Server Error".to_string() }
        );
        // A 500 whose payload carries no error object is not guessed at.
        let bare = json!({"detail": {"status": "FAILED", "error": "null"}}).to_string();
        assert!(matches!(parse_get(&id(), 500, None, &bare, &redactor), Err(ProviderError::Api { status: 500, .. })));
    }

    #[test]
    fn secrets_never_reach_an_error() {
        let mut redactor = Redactor::new();
        redactor.add(&Secret::new("sky_servicetoken"));
        redactor.add(&Secret::new("rk-test-replica-key"));
        let body = failed("ValueError", "bad env VLLM_API_KEY=rk-test-replica-key with header Bearer sky_servicetoken");
        let error = parse_get(&id(), 500, None, &body, &redactor).unwrap_err().to_string();
        assert!(!error.contains("rk-test-replica-key") && !error.contains("sky_servicetoken"), "{error}");
        assert!(error.contains("VLLM_API_KEY=***"), "{error}");
        let long = failed("RuntimeError", &"x".repeat(5000));
        let ProviderError::Api { excerpt, .. } = parse_get(&id(), 500, None, &long, &redactor).unwrap_err() else {
            panic!("an unknown error type is Api")
        };
        assert_eq!(excerpt.chars().count(), rest::MAX_EXCERPT);
    }

    #[test]
    fn health_reads_the_version_and_refuses_old_servers() {
        let redactor = Redactor::new();
        let body = r#"{"status":"healthy","api_version":"62","version":"0.14.1","commit":"7e595970","basic_auth_enabled":false,"telemetry_enabled":false}"#;
        let info = parse_health(body, &redactor).unwrap();
        assert_eq!(
            info,
            ServerInfo {
                api_version: 62,
                version: "0.14.1".into(),
                commit: Some("7e595970".into()),
                basic_auth_enabled: false
            }
        );
        assert_eq!(parse_health(r#"{"api_version":70,"version":"0.16.0"}"#, &redactor).unwrap().api_version, 70);
        let old = parse_health(r#"{"status":"healthy","api_version":"11","version":"0.9.3"}"#, &redactor).unwrap_err();
        assert!(
            matches!(&old, ProviderError::Invalid(m) if m.contains("upgrade the SkyPilot API server to 0.14 or newer")),
            "{old:?}"
        );
        assert!(matches!(parse_health("<html>", &redactor), Err(ProviderError::Api { .. })));
        assert!(matches!(parse_health(r#"{"status":"healthy"}"#, &redactor), Err(ProviderError::Api { .. })));
    }

    #[test]
    fn status_records_parse_and_give_the_instance() {
        let value = json!([{
            "name": "tandemn-r1", "status": "UP", "cloud": "AWS", "region": "us-east-2", "launched_at": 1_764_000_000,
            "resources_str": "1x[spot](gpus=L4:1, g6.xlarge, ...)", "cluster_name_on_cloud": "tandemn-r1-2ea4",
            "autostop": -1, "to_down": false, "nodes": 1, "last_event": "All nodes up; SkyPilot runtime healthy.",
            "storage_mounts_metadata": "gAROLg==", "cluster_hash": "h", "cluster_ever_up": true
        }, {"name": "b", "status": "STOPPED"}, {"name": "c", "status": "HIBERNATING"}]);
        let records: Vec<ClusterRecord> = serde_json::from_value(value).unwrap();
        assert_eq!(records[0].status, ClusterStatus::Up);
        assert_eq!(records[0].launched_at, Some(1_764_000_000));
        assert_eq!(records[0].instance(), Some(("g6.xlarge".to_string(), true)));
        assert_eq!(records[1].status, ClusterStatus::Stopped);
        assert_eq!(records[1].instance(), None);
        assert_eq!(records[2].status, ClusterStatus::Other("HIBERNATING".into()));
    }

    #[test]
    fn resources_strings_give_instance_type_and_spot() {
        let cases = [
            ("1x[spot](gpus=L4:1, g6.xlarge, ...)", Some(("g6.xlarge", true))),
            (
                "1x[spot](gpus=L4:1, cpus=4, mem=16, g6.xlarge, disk=100, ports=['8000', '8001'])",
                Some(("g6.xlarge", true)),
            ),
            ("1x(gpus=A100-80GB:8, p4de.24xlarge, ...)", Some(("p4de.24xlarge", false))),
            (
                "1x[spot](gpus=H100:8, p5.48xlarge, image_id={'us-east-2': 'ami-1'}, disk=100)",
                Some(("p5.48xlarge", true)),
            ),
            ("1x(gpus=L4:1, a.very.long.na..., ...)", None),
            ("-", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_resources(text), want.map(|(t, s)| (t.to_string(), s)), "{text}");
        }
    }

    #[test]
    fn endpoints_become_urls() {
        let cases = [
            (json!({"8000": "127.0.0.2:8000"}), Ok(Some("http://127.0.0.2:8000".to_string()))),
            (json!({"8000": "https://x.example:443"}), Ok(Some("https://x.example:443".to_string()))),
            (json!({"9000": "127.0.0.2:9000"}), Ok(None)),
            (json!({}), Ok(None)),
        ];
        for (value, want) in cases {
            assert_eq!(parse_endpoints(&value, 8000), want, "{value}");
        }
        assert!(parse_endpoints(&json!(["x"]), 8000).is_err());
        assert!(parse_endpoints(&json!({"8000": "a b/c"}), 8000).is_err());
    }

    #[test]
    fn request_ids_and_states_parse() {
        assert!(RequestId::parse("abc-123_x").is_ok());
        for bad in ["", "a b", "x&request_id=y", &"a".repeat(129)] {
            assert!(RequestId::parse(bad).is_err(), "{bad}");
        }
        let list: Vec<RequestInfo> = serde_json::from_value(json!([
            {"request_id": "r1", "name": "sky.launch", "status": "RUNNING", "cluster_name": "svc-a-1", "created_at": 1.5, "return_value": "null", "error": "null"},
            {"request_id": "r2", "name": "sky.status", "status": "SUCCEEDED", "created_at": 2.0, "finished_at": 3.0}
        ]))
        .unwrap();
        assert!(list[0].is_launch() && !list[0].status.is_finished());
        assert!(!list[1].is_launch() && list[1].status.is_finished());
    }

    #[test]
    fn endpoints_must_be_http_without_credentials() {
        assert_eq!(SkyClient::new("http://127.0.0.1:46580/", None).unwrap().api_endpoint(), "http://127.0.0.1:46580");
        for bad in ["127.0.0.1:46580", "ftp://x", "http://", "http://user:pw@host"] {
            let error = SkyClient::new(bad, None).unwrap_err();
            assert!(matches!(&error, ProviderError::Invalid(m) if !m.contains("pw")), "{bad}: {error:?}");
        }
        let client = SkyClient::new("http://h:1", Some(Secret::new("sky_secret"))).unwrap();
        assert!(!format!("{client:?}").contains("sky_secret"));
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_is_transient_with_a_hint() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = SkyClient::new(&format!("http://127.0.0.1:{port}"), Some(Secret::new("sky_tok"))).unwrap();
        let error = client.health().await.unwrap_err();
        let ProviderError::Transient { message, .. } = &error else { panic!("{error:?}") };
        assert!(message.contains(&format!("is `sky api start` running at http://127.0.0.1:{port}?")), "{message}");
        assert!(!message.contains("sky_tok"));
    }
}
