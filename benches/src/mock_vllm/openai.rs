//! The JSON vLLM's OpenAI server speaks: request parsing and the response, chunk
//! and error bodies, shaped as vLLM shapes them.

use serde_json::{Value, json};

/// Which OpenAI endpoint a generation request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// The parts of a generation request the simulator acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub endpoint: Endpoint,
    pub stream: bool,
    pub include_usage: bool,
    pub prompt_tokens: u32,
    /// `max_tokens` as requested, if it was.
    pub max_tokens: Option<u32>,
}

/// A request the server rejects: HTTP status, vLLM error type and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: 400, kind: "BadRequestError", message: message.into() }
    }
}

/// Parses and checks a `/v1/chat/completions` or `/v1/completions` body.
pub fn parse_generation(endpoint: Endpoint, body: &[u8], served_model: &str) -> Result<Generation, Rejection> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| Rejection::bad_request(format!("invalid JSON body: {e}")))?;
    let Some(request) = request.as_object() else {
        return Err(Rejection::bad_request("the request body must be a JSON object"));
    };
    check_model(request.get("model"), served_model)?;
    let prompt_chars = match endpoint {
        Endpoint::Chat => match request.get("messages").and_then(Value::as_array) {
            Some(messages) if !messages.is_empty() => messages.iter().map(|m| text_len(m.get("content"))).sum(),
            _ => return Err(Rejection::bad_request("`messages` must be a non-empty list")),
        },
        Endpoint::Completion => match request.get("prompt") {
            Some(prompt @ (Value::String(_) | Value::Array(_))) => text_len(Some(prompt)),
            _ => return Err(Rejection::bad_request("`prompt` is required")),
        },
    };
    let max_tokens = match request.get("max_completion_tokens").or_else(|| request.get("max_tokens")) {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64().and_then(|v| u32::try_from(v).ok()) {
            Some(n) if n >= 1 => Some(n),
            _ => {
                return Err(Rejection::bad_request(format!("max_tokens must be at least 1, got {value}")));
            }
        },
    };
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = stream
        && request.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    Ok(Generation { endpoint, stream, include_usage, prompt_tokens: estimate_tokens(prompt_chars), max_tokens })
}

/// Checks `model` against the served name, as vLLM does (404 for another model).
pub fn check_model(model: Option<&Value>, served_model: &str) -> Result<(), Rejection> {
    match model {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(name)) if name == served_model => Ok(()),
        Some(other) => Err(Rejection {
            status: 404,
            kind: "NotFoundError",
            message: format!("The model `{}` does not exist.", other.as_str().unwrap_or("?")),
        }),
    }
}

/// Characters of text in a message content, prompt or input (strings, lists, parts).
pub fn text_len(value: Option<&Value>) -> usize {
    match value {
        Some(Value::String(s)) => s.len(),
        Some(Value::Array(items)) => items.iter().map(|i| text_len(Some(i)).max(text_len(i.get("text")))).sum(),
        _ => 0,
    }
}

/// About four characters per token, as for English text; never zero.
pub fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX).max(1)
}

pub fn error_body(rejection: &Rejection) -> Value {
    json!({"error": {"message": rejection.message, "type": rejection.kind, "param": null, "code": rejection.status}})
}

/// Names and timestamps shared by every chunk of one response.
pub struct ResponseIds {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub endpoint: Endpoint,
}

impl ResponseIds {
    /// One streamed token. The first chat chunk also carries the assistant role.
    pub fn chunk(&self, text: &str, first: bool, finish_reason: Option<&str>) -> Value {
        match self.endpoint {
            Endpoint::Chat => {
                let delta =
                    if first { json!({"role": "assistant", "content": text}) } else { json!({"content": text}) };
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
                })
            }
            Endpoint::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason,
                             "stop_reason": null}],
            }),
        }
    }

    /// The middle chunks of a stream differ only in their token, so they are rendered
    /// once around a placeholder and then filled in by copying: cheap per token.
    pub fn middle_chunk_template(&self) -> ChunkTemplate {
        const PLACEHOLDER: &str = "\u{1}";
        let rendered = format!("data: {}\n\n", self.chunk(PLACEHOLDER, false, None));
        let (before, after) = rendered.split_once("\\u0001").expect("serde_json escapes U+0001 as \\u0001");
        ChunkTemplate { before: before.to_string(), after: after.to_string() }
    }

    /// The final `stream_options.include_usage` chunk: no choices, only usage.
    pub fn usage_chunk(&self, prompt_tokens: u32, completion_tokens: u32) -> Value {
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [], "usage": usage(prompt_tokens, completion_tokens),
        })
    }

    /// A whole non-streamed answer.
    pub fn completion(&self, text: &str, finish_reason: &str, prompt_tokens: u32, completion_tokens: u32) -> Value {
        let usage = usage(prompt_tokens, completion_tokens);
        match self.endpoint {
            Endpoint::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
                             "logprobs": null, "finish_reason": finish_reason, "stop_reason": null}],
                "usage": usage, "prompt_logprobs": null,
            }),
            Endpoint::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason,
                             "stop_reason": null}],
                "usage": usage,
            }),
        }
    }
}

/// An SSE token chunk with a hole where the token goes.
pub struct ChunkTemplate {
    before: String,
    after: String,
}

impl ChunkTemplate {
    /// The whole `data: …\n\n` event; `token` must need no JSON escaping.
    pub fn render(&self, token: &str) -> String {
        let mut event = String::with_capacity(self.before.len() + token.len() + self.after.len());
        event.push_str(&self.before);
        event.push_str(token);
        event.push_str(&self.after);
        event
    }
}

fn usage(prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
           "completion_tokens": completion_tokens})
}

pub fn models(served_model: &str, created: u64, max_model_len: u32) -> Value {
    json!({"object": "list", "data": [{
        "id": served_model, "object": "model", "created": created, "owned_by": "vllm",
        "root": served_model, "parent": null, "max_model_len": max_model_len,
    }]})
}

/// `/v1/embeddings`: a small deterministic unit vector per input.
pub fn embeddings(body: &[u8], served_model: &str, created: u64) -> Result<Value, Rejection> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| Rejection::bad_request(format!("invalid JSON body: {e}")))?;
    check_model(request.get("model"), served_model)?;
    let inputs: Vec<&str> = match request.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect()
        }
        _ => {
            return Err(Rejection::bad_request("`input` must be a string or a non-empty list of strings"));
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"index": index, "object": "embedding", "embedding": embed(text)}))
        .collect();
    let tokens: u32 = inputs.iter().map(|t| estimate_tokens(t.len())).sum();
    Ok(json!({
        "id": format!("embd-{created:x}"), "object": "list", "created": created, "model": served_model,
        "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    }))
}

fn embed(text: &str) -> Vec<f32> {
    const DIMENSIONS: usize = 16;
    // FNV-1a per dimension: the same text always maps to the same vector.
    let raw: Vec<f32> = (0..DIMENSIONS)
        .map(|d| {
            let hash = text
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64 ^ d as u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
            (hash % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    raw.iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_requests_are_parsed_like_vllm() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"12345678"}],"max_tokens":5,
                        "stream":true,"stream_options":{"include_usage":true}}"#;
        let parsed = parse_generation(Endpoint::Chat, body, "m").unwrap();
        assert_eq!(
            parsed,
            Generation {
                endpoint: Endpoint::Chat,
                stream: true,
                include_usage: true,
                prompt_tokens: 2,
                max_tokens: Some(5)
            }
        );
        let completion = parse_generation(Endpoint::Completion, br#"{"prompt":"hi"}"#, "m").unwrap();
        assert_eq!((completion.stream, completion.include_usage, completion.max_tokens), (false, false, None));
    }

    #[test]
    fn bad_requests_are_rejected_with_vllm_errors() {
        let cases: &[(&[u8], u16, &str)] = &[
            (b"not json", 400, "invalid JSON"),
            (br#"{"messages":[]}"#, 400, "`messages`"),
            (br#"{"model":"other","messages":[{"content":"x"}]}"#, 404, "The model `other` does not exist."),
            (br#"{"messages":[{"content":"x"}],"max_tokens":0}"#, 400, "max_tokens"),
            (br#"{"messages":[{"content":"x"}],"max_tokens":"5"}"#, 400, "max_tokens"),
        ];
        for (body, status, text) in cases {
            let rejection = parse_generation(Endpoint::Chat, body, "m").unwrap_err();
            assert_eq!(rejection.status, *status);
            assert!(rejection.message.contains(text), "{rejection:?}");
            let body = error_body(&rejection);
            assert_eq!(body["error"]["code"], *status);
            assert!(body["error"]["param"].is_null() && body["error"]["type"].is_string());
        }
    }

    #[test]
    fn templates_render_exactly_what_serde_would() {
        for endpoint in [Endpoint::Chat, Endpoint::Completion] {
            let ids = ResponseIds { id: "x-1".into(), created: 7, model: "org/\"odd\" name".into(), endpoint };
            let expected = format!("data: {}\n\n", ids.chunk(" token", false, None));
            assert_eq!(ids.middle_chunk_template().render(" token"), expected);
        }
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embeddings(br#"{"input":["a","b"]}"#, "m", 1).unwrap();
        let b = embeddings(br#"{"input":["a","b"]}"#, "m", 1).unwrap();
        assert_eq!(a, b);
        let vector: Vec<f64> =
            a["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
        assert_ne!(a["data"][0]["embedding"], a["data"][1]["embedding"]);
        assert_eq!(embeddings(br#"{"input":3}"#, "m", 1).unwrap_err().status, 400);
    }
}
