//! The simulator's HTTP/1.1 server: a task per connection, admission through
//! `max_num_seqs` decode slots (or, in serverless mode, slots on the `Fleet`'s
//! containers), and SSE bodies paced against absolute deadlines so delays never drift.

use std::convert::Infallible;
use std::future::pending;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::config::{Jitter, MockConfig};
use super::openai::{self, ChunkTemplate, Endpoint, Generation, Rejection, ResponseIds};
use super::serverless::{Billing, Fleet, Lease};

pub type Body = BoxBody<Bytes, io::Error>;

/// A running simulator. Dropping it stops the server and closes every connection.
pub struct MockVllm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl MockVllm {
    /// Serves on 127.0.0.1 at a port the OS picks.
    pub async fn start(config: MockConfig) -> io::Result<Self> {
        Self::bind(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn bind(config: MockConfig, addr: SocketAddr) -> io::Result<Self> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(config.max_num_seqs as usize)),
            fleet: config.serverless.clone().map(Fleet::new),
            config,
            started: Instant::now(),
            created,
            stats: Stats::default(),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Ok(Self { addr, shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base of every endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// The serverless billing record `/billing` serves; `None` outside serverless mode.
    pub fn billing(&self) -> Option<Billing> {
        self.shared.fleet.as_ref().map(|fleet| fleet.billing())
    }

    /// Polls the counters until `done` holds, for at most five seconds (tests use it
    /// instead of sleeping and hoping). Panics with the last counters if it never holds.
    pub async fn wait_until(&self, done: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
        for _ in 0..500 {
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("mock-vllm never reached the expected state; last counters {:?}", self.stats());
    }

    /// Waits until the server stops by itself (`exit_after_secs`).
    pub async fn stopped(&mut self) {
        let _ = (&mut self.server).await;
    }
}

impl Drop for MockVllm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Shared {
    config: MockConfig,
    started: Instant,
    created: u64,
    slots: Arc<Semaphore>,
    /// Serverless mode's containers; when set they admit requests instead of `slots`.
    fleet: Option<Arc<Fleet>>,
    stats: Stats,
}

/// Counters that tests and `/metrics` read.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    running: AtomicU64,
    waiting: AtomicU64,
    completed: AtomicU64,
    aborted: AtomicU64,
    rejected: AtomicU64,
    injected_errors: AtomicU64,
    hangs: AtomicU64,
    deaths: AtomicU64,
    chunks: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    lateness: Lateness,
}

/// How late each token left compared with its deadline: the simulator's own timing
/// error, so a benchmark can tell its lateness from the client's or a proxy's.
#[derive(Default)]
struct Lateness {
    /// Cumulative-on-read counts per bucket of `LATENESS_BOUNDS_US`, plus one for +Inf.
    buckets: [AtomicU64; LATENESS_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

const LATENESS_BOUNDS_US: [u64; 14] =
    [100, 250, 500, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 50_000, 100_000];

impl Lateness {
    fn record(&self, late: Duration) {
        let us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENESS_BOUNDS_US.iter().position(|&bound| us <= bound).unwrap_or(LATENESS_BOUNDS_US.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn prometheus(&self, labels: &str) -> String {
        let name = "mock_vllm_token_lateness_seconds";
        let mut out = format!(
            "# HELP {name} How late each streamed token left compared with its deadline.\n# TYPE {name} histogram\n"
        );
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let bound = LATENESS_BOUNDS_US.get(i).map_or("+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
            out.push_str(&format!("{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}\n"));
        }
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        out.push_str(&format!("{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {cumulative}\n"));
        out
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Generation requests received (chat and completions).
    pub requests: u64,
    /// Requests holding a decode slot (or a serverless container's slot) now.
    pub running: u64,
    /// Requests queued for a slot, or waiting out a container's cold start, now.
    pub waiting: u64,
    pub completed: u64,
    /// Generations stopped because the client went away.
    pub aborted: u64,
    /// Requests answered 4xx, or refused while booting.
    pub rejected: u64,
    pub injected_errors: u64,
    pub hangs: u64,
    pub deaths: u64,
    /// SSE frames written.
    pub chunks: u64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Relaxed),
            running: self.running.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            completed: self.completed.load(Relaxed),
            aborted: self.aborted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            injected_errors: self.injected_errors.load(Relaxed),
            hangs: self.hangs.load(Relaxed),
            deaths: self.deaths.load(Relaxed),
            chunks: self.chunks.load(Relaxed),
            prompt_tokens: self.prompt_tokens.load(Relaxed),
            generation_tokens: self.generation_tokens.load(Relaxed),
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    let exit = async {
        match shared.config.exit_after_secs {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
            None => pending().await,
        }
    };
    tokio::pin!(exit);
    // Lives as long as the server, so idle containers stop even if no request comes.
    let scale_down = async {
        match &shared.fleet {
            Some(fleet) => fleet.scale_down().await,
            None => pending().await,
        }
    };
    tokio::pin!(scale_down);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let _ = socket.set_nodelay(true);
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
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(%error, "mock-vllm: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut exit => break,
            never = &mut scale_down => match never {},
        }
    }
    // Dropping `connections` aborts every connection mid-flight, as a preemption would.
}

async fn route(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let booting = shared.started.elapsed() < shared.config.boot();
    let path = request.uri().path().to_string();
    if let Some(key) = &shared.config.api_key
        && (path.starts_with("/v1/") || path == "/billing")
        && request.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {key}"))
    {
        // vLLM's own answer to a missing or wrong key.
        shared.stats.rejected.fetch_add(1, Relaxed);
        return json(StatusCode::UNAUTHORIZED, &serde_json::json!({"error": "Unauthorized"}));
    }
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/health") if booting => empty(StatusCode::SERVICE_UNAVAILABLE),
        (Method::GET, "/health") => empty(StatusCode::OK),
        (Method::GET, "/metrics") => text(StatusCode::OK, "text/plain; version=0.0.4", metrics(&shared)),
        (Method::GET, "/billing") => billing(&shared),
        (_, "/v1/models" | "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings") if booting => {
            if path != "/v1/models" && path != "/v1/embeddings" {
                shared.stats.requests.fetch_add(1, Relaxed);
            }
            shared.stats.rejected.fetch_add(1, Relaxed);
            let rejection = Rejection {
                status: 503,
                kind: "ServiceUnavailableError",
                message: "The server is still loading the model; try again later.".to_string(),
            };
            reject(&rejection)
        }
        (Method::GET, "/v1/models") => {
            let config = &shared.config;
            json(StatusCode::OK, &openai::models(&config.served_model_name, shared.created, config.max_model_len))
        }
        (Method::POST, "/v1/chat/completions") => generate(shared, request, Endpoint::Chat).await,
        (Method::POST, "/v1/completions") => generate(shared, request, Endpoint::Completion).await,
        (Method::POST, "/v1/embeddings") => embed(&shared, request).await,
        (
            _,
            "/health"
            | "/metrics"
            | "/billing"
            | "/v1/models"
            | "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings",
        ) => json(StatusCode::METHOD_NOT_ALLOWED, &serde_json::json!({"detail": "Method Not Allowed"})),
        _ => json(StatusCode::NOT_FOUND, &serde_json::json!({"detail": "Not Found"})),
    }
}

async fn embed(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let answer = match read_body(request).await {
        Ok(body) => openai::embeddings(&body, &shared.config.served_model_name, shared.created),
        Err(rejection) => Err(rejection),
    };
    match answer {
        Ok(answer) => {
            // Serverless: an embedding needs a container too, warm or cold.
            let _lease = match &shared.fleet {
                Some(fleet) => Some(place(fleet).await),
                None => None,
            };
            json(StatusCode::OK, &answer)
        }
        Err(rejection) => reject(&rejection),
    }
}

fn billing(shared: &Shared) -> Response<Body> {
    match &shared.fleet {
        Some(fleet) => {
            json(StatusCode::OK, &serde_json::to_value(fleet.billing()).expect("a billing record always serializes"))
        }
        None => reject(&Rejection {
            status: 404,
            kind: "NotFoundError",
            message: "/billing exists only in serverless mode (--serverless-containers-max)".to_string(),
        }),
    }
}

async fn generate(shared: Arc<Shared>, request: Request<Incoming>, endpoint: Endpoint) -> Response<Body> {
    let stats = &shared.stats;
    let config = &shared.config;
    let number = stats.requests.fetch_add(1, Relaxed);
    let arrived = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed ^ number.wrapping_mul(0x9e37_79b9_7f4a_7c15));

    let generation = match read_body(request).await {
        Ok(body) => openai::parse_generation(endpoint, &body, &config.served_model_name),
        Err(rejection) => Err(rejection),
    };
    let generation = match generation.and_then(|g| fits_context(g, config)) {
        Ok(generation) => generation,
        Err(rejection) => {
            stats.rejected.fetch_add(1, Relaxed);
            return reject(&rejection);
        }
    };
    if rng.random_bool(config.error_rate) {
        stats.injected_errors.fetch_add(1, Relaxed);
        let status = config.error_status;
        let kind = if status == 503 { "ServiceUnavailableError" } else { "InternalServerError" };
        return reject(&Rejection { status, kind, message: "mock-vllm: injected fault".to_string() });
    }
    if rng.random_bool(config.hang_rate) {
        stats.hangs.fetch_add(1, Relaxed);
        pending::<()>().await;
    }

    let admission = admit(&shared).await;
    stats.running.fetch_add(1, Relaxed);
    stats.prompt_tokens.fetch_add(u64::from(generation.prompt_tokens), Relaxed);
    let slot = Slot { _admission: admission, shared: shared.clone(), finished: false };

    let ids = ResponseIds {
        id: format!("{}-{:032x}", if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" }, rng.random::<u128>()),
        created: shared.created,
        model: config.served_model_name.clone(),
        endpoint,
    };
    let total = generation.max_tokens.unwrap_or(config.default_max_tokens);
    let first_token_at = Instant::now() + delay(config.ttft_ms, config, &mut rng);
    if generation.stream {
        let die_after = config.die_after_chunks.filter(|_| rng.random_bool(config.die_rate));
        let middle = ids.middle_chunk_template();
        let state =
            StreamState { slot, ids, middle, rng, generation, total, sent: 0, next_at: first_token_at, die_after };
        let body = StreamBody::new(stream::unfold(state, next_frame));
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream; charset=utf-8")
            .header("cache-control", "no-cache")
            .body(BodyExt::boxed(body))
            .expect("static headers are valid");
    }

    let mut slot = slot;
    let mut done_at = first_token_at;
    let mut text = String::new();
    for i in 0..total {
        if i > 0 {
            done_at += delay(config.itl_ms, config, &mut rng);
        }
        text.push_str(token(&mut rng));
    }
    tokio::time::sleep_until(done_at.into()).await;
    slot.finish(total);
    let finish = finish_reason(&generation);
    tracing::trace!(elapsed = ?arrived.elapsed(), "mock-vllm: answered");
    json(StatusCode::OK, &ids.completion(&text, finish, generation.prompt_tokens, total))
}

fn fits_context(generation: Generation, config: &MockConfig) -> Result<Generation, Rejection> {
    let completion = generation.max_tokens.unwrap_or(config.default_max_tokens);
    let requested = u64::from(generation.prompt_tokens) + u64::from(completion);
    if requested > u64::from(config.max_model_len) {
        return Err(Rejection::bad_request(format!(
            "This model's maximum context length is {} tokens. However, you requested {requested} tokens \
             ({} in the messages, {completion} in the completion). Please reduce the length of the messages \
             or completion.",
            config.max_model_len, generation.prompt_tokens
        )));
    }
    Ok(generation)
}

fn finish_reason(generation: &Generation) -> &'static str {
    if generation.max_tokens.is_some() { "length" } else { "stop" }
}

/// What lets a generation run; dropping it frees the slot for the next request.
enum Admission {
    /// One of the one vLLM's `max_num_seqs` decode slots.
    DecodeSlot { _permit: OwnedSemaphorePermit },
    /// A slot on a serverless container, past its cold start.
    Container { _lease: Lease },
}

/// Waits for a slot, counted in `waiting` meanwhile (a cold start counts as waiting).
/// If the client goes away, hyper drops this future and the place in line with it.
async fn admit(shared: &Shared) -> Admission {
    let _waiting = Waiting::count(&shared.stats.waiting);
    match &shared.fleet {
        Some(fleet) => Admission::Container { _lease: place(fleet).await },
        None => {
            let permit = shared.slots.clone().acquire_owned().await.expect("the slot semaphore is never closed");
            Admission::DecodeSlot { _permit: permit }
        }
    }
}

/// A slot on a container, once the container has finished its cold start.
async fn place(fleet: &Arc<Fleet>) -> Lease {
    let lease = fleet.acquire().await;
    lease.ready().await;
    lease
}

/// Counts one waiting request until dropped, however the wait ends.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn count(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Relaxed);
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Holds a slot; counts the generation as aborted if dropped unfinished
/// (the client went away and hyper dropped the body).
struct Slot {
    _admission: Admission,
    shared: Arc<Shared>,
    finished: bool,
}

impl Slot {
    fn finish(&mut self, tokens: u32) {
        self.finished = true;
        self.shared.stats.completed.fetch_add(1, Relaxed);
        self.shared.stats.generation_tokens.fetch_add(u64::from(tokens), Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.stats.running.fetch_sub(1, Relaxed);
        if !self.finished {
            self.shared.stats.aborted.fetch_add(1, Relaxed);
        }
    }
}

struct StreamState {
    slot: Slot,
    ids: ResponseIds,
    middle: ChunkTemplate,
    rng: StdRng,
    generation: Generation,
    total: u32,
    sent: u32,
    next_at: Instant,
    die_after: Option<u32>,
}

/// The next SSE frame: one token per frame; the last also carries usage and `[DONE]`.
async fn next_frame(mut state: StreamState) -> Option<(Result<Frame<Bytes>, io::Error>, StreamState)> {
    if state.sent == state.total {
        return None;
    }
    if state.die_after.is_some_and(|n| state.sent >= n) {
        // Die when the next token was due, so the chunks already sent reach the client.
        tokio::time::sleep_until(state.next_at.into()).await;
        state.slot.finished = true;
        state.slot.shared.stats.deaths.fetch_add(1, Relaxed);
        state.total = state.sent;
        return Some((Err(io::Error::other("mock-vllm: injected death mid-stream")), state));
    }
    tokio::time::sleep_until(state.next_at.into()).await;
    state.slot.shared.stats.lateness.record(Instant::now().saturating_duration_since(state.next_at));
    state.sent += 1;
    let last = state.sent == state.total;
    let finish = last.then(|| finish_reason(&state.generation));
    let text = token(&mut state.rng);
    let first = state.sent == 1;
    let mut frame = if first || last { sse(&state.ids.chunk(text, first, finish)) } else { state.middle.render(text) };
    if last {
        if state.generation.include_usage {
            frame.push_str(&sse(&state.ids.usage_chunk(state.generation.prompt_tokens, state.total)));
        }
        frame.push_str("data: [DONE]\n\n");
        state.slot.finish(state.total);
    } else {
        let config = &state.slot.shared.config;
        state.next_at += delay(config.itl_ms, config, &mut state.rng);
    }
    state.slot.shared.stats.chunks.fetch_add(1, Relaxed);
    Some((Ok(Frame::data(Bytes::from(frame))), state))
}

fn sse(event: &Value) -> String {
    format!("data: {event}\n\n")
}

/// A delay of `base_ms` spread by the configured jitter, never negative.
fn delay(base_ms: f64, config: &MockConfig, rng: &mut StdRng) -> Duration {
    let spread = config.jitter_ms;
    let offset = if spread <= 0.0 {
        0.0
    } else {
        match config.jitter {
            Jitter::Uniform => rng.random_range(-spread..=spread),
            Jitter::Normal => {
                // Box–Muller: one standard normal sample from two uniforms.
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
                spread * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            }
        }
    };
    Duration::from_secs_f64((base_ms + offset).max(0.0) / 1000.0)
}

const VOCABULARY: &[&str] = &[
    " the", " a", " model", " token", " spot", " GPU", " serves", " fast", " and", " cheap", " request", " hello",
    " world", " stream", " of", " to", " in", " router", " replica", " cloud", ".", ",", " is", " it",
];

fn token(rng: &mut StdRng) -> &'static str {
    VOCABULARY[rng.random_range(0..VOCABULARY.len())]
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, Rejection> {
    request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| Rejection::bad_request(format!("could not read the request body: {e}")))
}

fn metrics(shared: &Shared) -> String {
    let stats = shared.stats.snapshot();
    let labels = format!("model_name=\"{}\",engine=\"0\"", shared.config.served_model_name);
    // Serverless: the share of the slots of every container the endpoint may run.
    let capacity = match &shared.fleet {
        Some(fleet) => f64::from(fleet.sim().containers_max) * f64::from(fleet.sim().concurrency),
        None => f64::from(shared.config.max_num_seqs),
    };
    let kv_usage = stats.running as f64 / capacity;
    let mut families = vec![
        ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", stats.running as f64),
        ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", stats.waiting as f64),
        ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", kv_usage),
        ("vllm:request_success_total", "counter", "Count of successfully processed requests.", stats.completed as f64),
        ("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", stats.prompt_tokens as f64),
        ("vllm:generation_tokens_total", "counter", "Number of generation tokens.", stats.generation_tokens as f64),
        ("mock_vllm_requests_total", "counter", "Generation requests received.", stats.requests as f64),
        ("mock_vllm_aborted_total", "counter", "Generations stopped by a client disconnect.", stats.aborted as f64),
        (
            "mock_vllm_injected_errors_total",
            "counter",
            "Requests answered with an injected error.",
            stats.injected_errors as f64,
        ),
        ("mock_vllm_hangs_total", "counter", "Requests left hanging by fault injection.", stats.hangs as f64),
        ("mock_vllm_deaths_total", "counter", "Streams killed mid-way by fault injection.", stats.deaths as f64),
    ];
    if let Some(fleet) = &shared.fleet {
        let billing = fleet.billing();
        families.extend([
            (
                "mock_serverless_containers",
                "gauge",
                "Serverless containers running (cold-starting, serving or idling).",
                f64::from(billing.running),
            ),
            (
                "mock_serverless_cold_starts_total",
                "counter",
                "Serverless containers started, each with a cold start.",
                billing.cold_starts as f64,
            ),
        ]);
    }
    let mut out = String::new();
    for (name, kind, help, value) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {value}\n"));
    }
    out.push_str(&shared.stats.lateness.prometheus(&labels));
    out
}

fn empty(status: StatusCode) -> Response<Body> {
    text(status, "text/plain", String::new())
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed())
        .expect("static headers are valid")
}

fn json(status: StatusCode, value: &Value) -> Response<Body> {
    text(status, "application/json", value.to_string())
}

fn reject(rejection: &Rejection) -> Response<Body> {
    let status = StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &openai::error_body(rejection))
}
