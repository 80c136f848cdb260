//! One request and what the client saw of it: time to the first event, every gap
//! between token events, total latency, output tokens, the serving backend and, for a
//! failure, how far the request got.

use std::time::{Duration, Instant};

use memchr::memmem;
use serde_json::{Value, json};

/// Which OpenAI endpoint the load uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    Chat,
    Completions,
}

/// What one request produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub ttft: Option<Duration>,
    /// Gaps between consecutive token events, in microseconds.
    pub gaps_us: Vec<u32>,
    pub latency: Duration,
    pub output_tokens: u64,
    pub error: Option<String>,
    /// How far a failed request got before it failed.
    pub stage: Option<FailureStage>,
    /// The `x-tandemn-error` header of an error status: the router's reason for it.
    pub router_error: Option<String>,
    pub backend: Option<String>,
}

/// Where a request failed. A client can retry one that failed before its response
/// started (no harm done); a stream that breaks after its `200` has cost it the tokens
/// it already read, and only the router's error event says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureStage {
    /// No response at all: connect, reset or timeout before a status line.
    BeforeResponse,
    /// An error status (4xx, 5xx) instead of an answer.
    ErrorStatus,
    /// A `200` whose body failed before its first event (first byte, when not streaming).
    BeforeFirstEvent,
    /// A `200` whose body failed after at least one event.
    MidStream,
}

impl FailureStage {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureStage::BeforeResponse => "before_response",
            FailureStage::ErrorStatus => "error_status",
            FailureStage::BeforeFirstEvent => "before_first_event",
            FailureStage::MidStream => "mid_stream",
        }
    }

    /// Whether the client had started to receive the answer (a `200`).
    pub fn started(self) -> bool {
        matches!(self, FailureStage::BeforeFirstEvent | FailureStage::MidStream)
    }
}

/// The fixed parts of every request in a run.
pub struct Target {
    pub client: reqwest::Client,
    pub url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub api: Api,
    pub stream: bool,
}

impl Target {
    pub fn body(&self, input_tokens: u32, output_tokens: u32) -> Value {
        // About four characters per token, as the simulator and most tokenizers count.
        let prompt = "word ".repeat(input_tokens.max(1) as usize);
        let mut body = match self.api {
            Api::Chat => json!({"model": self.model, "messages": [{"role": "user", "content": prompt}]}),
            Api::Completions => json!({"model": self.model, "prompt": prompt}),
        };
        body["max_tokens"] = json!(output_tokens.max(1));
        if self.stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    pub async fn send(&self, input_tokens: u32, output_tokens: u32) -> Outcome {
        let path = match self.api {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
        };
        let mut request = self.client.post(format!("{}{path}", self.url)).json(&self.body(input_tokens, output_tokens));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let started = Instant::now();
        let mut outcome = Outcome::default();
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return failed(outcome, started, FailureStage::BeforeResponse, classify(&error)),
        };
        outcome.backend = response.headers().get("x-tandemn-backend").and_then(|v| v.to_str().ok()).map(str::to_string);
        let status = response.status();
        if !status.is_success() {
            outcome.router_error =
                response.headers().get("x-tandemn-error").and_then(|v| v.to_str().ok()).map(str::to_string);
            let _ = response.bytes().await;
            return failed(outcome, started, FailureStage::ErrorStatus, format!("status_{}", status.as_u16()));
        }
        if self.stream {
            read_stream(outcome, response, started).await
        } else {
            read_whole(outcome, response, started).await
        }
    }
}

fn failed(mut outcome: Outcome, started: Instant, stage: FailureStage, kind: String) -> Outcome {
    outcome.latency = started.elapsed();
    outcome.error = Some(kind);
    outcome.stage = Some(stage);
    outcome
}

fn classify(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".to_string()
    } else if error.is_connect() {
        "connect".to_string()
    } else if error.is_body() || error.is_decode() {
        "truncated".to_string()
    } else {
        "transport".to_string()
    }
}

async fn read_whole(mut outcome: Outcome, response: reqwest::Response, started: Instant) -> Outcome {
    match response.bytes().await {
        Ok(body) => {
            outcome.latency = started.elapsed();
            let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            match answer["usage"]["completion_tokens"].as_u64() {
                Some(tokens) => outcome.output_tokens = tokens,
                None => {
                    outcome.error = Some("bad_body".to_string());
                    outcome.stage = Some(FailureStage::MidStream);
                }
            }
            outcome
        }
        Err(error) => failed(outcome, started, FailureStage::BeforeFirstEvent, classify(&error)),
    }
}

/// Reads SSE as it arrives. Each event is stamped with the time of the read that
/// completed it, which is exactly when the client could have used it.
async fn read_stream(mut outcome: Outcome, mut response: reqwest::Response, started: Instant) -> Outcome {
    let mut scan =
        StreamScan { started, last_token: None, token_events: 0, usage_tokens: None, done: false, events: 0 };
    // Bytes of an event split across reads; most reads hold whole events and skip it.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let bytes = match response.chunk().await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break,
            Err(error) => return failed(outcome, started, scan.stage(), classify(&error)),
        };
        let now = Instant::now();
        let result = if partial.is_empty() {
            scan.events(&bytes, now, &mut outcome).map(|used| partial.extend_from_slice(&bytes[used..]))
        } else {
            partial.extend_from_slice(&bytes);
            scan.events(&partial, now, &mut outcome).map(|used| drop(partial.drain(..used)))
        };
        if let Err((stage, kind)) = result {
            return failed(outcome, started, stage, kind.to_string());
        }
    }
    outcome.latency = started.elapsed();
    outcome.output_tokens = scan.usage_tokens.unwrap_or(scan.token_events);
    if !scan.done {
        outcome.error = Some("truncated".to_string());
        outcome.stage = Some(scan.stage());
    }
    outcome
}

struct StreamScan {
    started: Instant,
    last_token: Option<Instant>,
    token_events: u64,
    usage_tokens: Option<u64>,
    done: bool,
    /// Events of any kind read so far.
    events: u64,
}

impl StreamScan {
    /// Where a failure now would be.
    fn stage(&self) -> FailureStage {
        if self.events == 0 { FailureStage::BeforeFirstEvent } else { FailureStage::MidStream }
    }

    /// Handles the complete events at the start of `bytes`; returns how many bytes they
    /// took, or the kind of failure an error event reports.
    fn events(
        &mut self,
        bytes: &[u8],
        now: Instant,
        outcome: &mut Outcome,
    ) -> Result<usize, (FailureStage, &'static str)> {
        let event_end = memmem::Finder::new(b"\n\n");
        let mut consumed = 0;
        while let Some(end) = event_end.find(&bytes[consumed..]) {
            let event = &bytes[consumed..consumed + end];
            consumed += end + 2;
            let Some(data) = event.strip_prefix(b"data: ") else {
                continue;
            };
            outcome.ttft.get_or_insert(now - self.started);
            let stage = self.stage();
            self.events += 1;
            if data == b"[DONE]" {
                self.done = true;
                continue;
            }
            // Parse JSON only for the rare events that need it; token events are counted.
            if memmem::find(data, b"\"error\"").is_some() {
                return Err((stage, "stream_error"));
            }
            if memmem::find(data, b"\"usage\"").is_some() {
                let parsed: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
                if let Some(tokens) = parsed["usage"]["completion_tokens"].as_u64() {
                    self.usage_tokens = Some(tokens);
                }
                if parsed["choices"].as_array().is_some_and(Vec::is_empty) {
                    continue;
                }
            }
            self.token_events += 1;
            if let Some(previous) = self.last_token {
                outcome.gaps_us.push(u32::try_from((now - previous).as_micros()).unwrap_or(u32::MAX));
            }
            self.last_token = Some(now);
        }
        Ok(consumed)
    }
}
