//! mock-vllm over real sockets on 127.0.0.1:0: SSE framing, usage, queueing, boot,
//! every fault mode, the error bodies, and serverless mode (cold starts, scale-out,
//! the FIFO line, scale-down and billing).

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandemn_bench::mock_vllm::{MockConfig, MockVllm, ServerlessSim};

fn fast() -> MockConfig {
    MockConfig { ttft_ms: 1.0, itl_ms: 1.0, ..MockConfig::default() }
}

async fn post(mock: &MockVllm, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new().post(format!("{}{path}", mock.url())).json(&body).send().await.unwrap()
}

fn chat(max_tokens: u32, stream: bool) -> Value {
    json!({"model": "mock-model", "messages": [{"role": "user", "content": "hello there"}],
           "max_tokens": max_tokens, "stream": stream, "stream_options": {"include_usage": true}})
}

fn events(body: &str) -> Vec<&str> {
    assert!(body.ends_with("\n\n"), "SSE bodies end with a blank line");
    body.split_terminator("\n\n").map(|e| e.strip_prefix("data: ").expect("every event is one data line")).collect()
}

#[tokio::test]
async fn streamed_chat_has_exact_sse_framing_and_a_usage_chunk() {
    let mock = MockVllm::start(fast()).await.unwrap();
    let response = post(&mock, "/v1/chat/completions", chat(5, true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream; charset=utf-8");
    assert!(response.headers().get("content-length").is_none(), "streams are chunked");
    let body = response.text().await.unwrap();
    let all = events(&body);
    assert_eq!(all.len(), 5 + 2, "5 tokens, the usage chunk and [DONE]: {body}");
    assert_eq!(*all.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = all[..6].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "mock-model");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[1]["choices"][0]["delta"].get("role").is_none());
    assert!(chunks[3]["choices"][0]["finish_reason"].is_null());
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"], json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}));

    let without_usage = post(
        &mock,
        "/v1/chat/completions",
        json!({"messages": [{"content": "x"}], "stream": true,
                                                                    "max_tokens": 2}),
    )
    .await
    .text()
    .await
    .unwrap();
    assert_eq!(events(&without_usage).len(), 3, "no usage chunk unless asked: {without_usage}");
    let stats = mock.stats();
    assert_eq!((stats.completed, stats.generation_tokens, stats.chunks), (2, 7, 7));
}

#[tokio::test]
async fn non_streamed_answers_carry_usage() {
    let mock = MockVllm::start(fast()).await.unwrap();
    let answer: Value = post(&mock, "/v1/chat/completions", chat(4, false)).await.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert!(!answer["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(answer["usage"]["completion_tokens"], 4);

    let default_length = MockConfig { default_max_tokens: 7, ..fast() };
    let mock = MockVllm::start(default_length).await.unwrap();
    let answer: Value = post(&mock, "/v1/completions", json!({"prompt": "Once upon"})).await.json().await.unwrap();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["completion_tokens"], 7, "no max_tokens: the default length");

    let streamed = post(&mock, "/v1/completions", json!({"prompt": "x", "stream": true, "max_tokens": 2}))
        .await
        .text()
        .await
        .unwrap();
    let first: Value = serde_json::from_str(events(&streamed)[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert!(first["choices"][0]["text"].is_string());
}

#[tokio::test]
async fn models_embeddings_health_and_metrics() {
    let mock = MockVllm::start(MockConfig { served_model_name: "org/served".into(), ..fast() }).await.unwrap();
    let client = reqwest::Client::new();
    let models: Value = client.get(format!("{}/v1/models", mock.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "org/served");
    let health = client.get(format!("{}/health", mock.url())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let embedded: Value =
        post(&mock, "/v1/embeddings", json!({"model": "org/served", "input": ["a", "b"]})).await.json().await.unwrap();
    assert_eq!(embedded["data"].as_array().unwrap().len(), 2);
    post(
        &mock,
        "/v1/chat/completions",
        json!({"model": "org/served", "messages": [{"content": "x"}], "max_tokens": 3}),
    )
    .await;
    let stream = json!({"model": "org/served", "messages": [{"content": "x"}], "max_tokens": 4, "stream": true});
    post(&mock, "/v1/chat/completions", stream).await.text().await.unwrap();
    let metrics = client.get(format!("{}/metrics", mock.url())).send().await.unwrap().text().await.unwrap();
    for line in [
        "vllm:num_requests_running{model_name=\"org/served\",engine=\"0\"} 0",
        "vllm:num_requests_waiting{model_name=\"org/served\",engine=\"0\"} 0",
        "vllm:kv_cache_usage_perc{model_name=\"org/served\",engine=\"0\"} 0",
        "vllm:generation_tokens_total{model_name=\"org/served\",engine=\"0\"} 7",
        "mock_vllm_token_lateness_seconds_count{model_name=\"org/served\",engine=\"0\"} 4",
        "mock_vllm_token_lateness_seconds_bucket{model_name=\"org/served\",engine=\"0\",le=\"+Inf\"} 4",
        "# TYPE vllm:num_requests_running gauge",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test]
async fn requests_beyond_max_num_seqs_wait_for_a_slot() {
    let config = MockConfig { max_num_seqs: 2, ttft_ms: 1.0, itl_ms: 20.0, ..MockConfig::default() };
    let mock = MockVllm::start(config).await.unwrap();
    let url = format!("{}/v1/chat/completions", mock.url());
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let request = client.post(&url).json(&chat(20, true));
            tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    let busy = mock.wait_until(|s| s.running == 2 && s.waiting == 2).await;
    assert_eq!(busy.completed, 0);
    let metrics = client.get(format!("{}/metrics", mock.url())).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vllm:num_requests_waiting{model_name=\"mock-model\",engine=\"0\"} 2"), "{metrics}");
    assert!(metrics.contains("vllm:kv_cache_usage_perc{model_name=\"mock-model\",engine=\"0\"} 1\n"), "{metrics}");
    for request in requests {
        assert!(request.await.unwrap().ends_with("data: [DONE]\n\n"));
    }
    let done = mock.stats();
    assert_eq!((done.running, done.waiting, done.completed), (0, 0, 4));
}

#[tokio::test]
async fn boot_delay_refuses_requests_until_ready() {
    let mock = MockVllm::start(MockConfig { boot_secs: 0.5, ..fast() }).await.unwrap();
    let client = reqwest::Client::new();
    let health = client.get(format!("{}/health", mock.url())).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let refused = post(&mock, "/v1/chat/completions", chat(2, false)).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "ServiceUnavailableError");
    assert_eq!(body["error"]["code"], 503);

    let mut ready = false;
    for _ in 0..200 {
        if client.get(format!("{}/health", mock.url())).send().await.unwrap().status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready, "health never turned 200");
    assert_eq!(post(&mock, "/v1/chat/completions", chat(2, false)).await.status(), 200);
}

#[tokio::test]
async fn injected_errors_use_the_vllm_error_shape() {
    let mock = MockVllm::start(MockConfig { error_rate: 1.0, ..fast() }).await.unwrap();
    let response = post(&mock, "/v1/chat/completions", chat(2, true)).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "InternalServerError");
    assert!(body["error"]["param"].is_null() && body["error"]["message"].is_string());

    let mock = MockVllm::start(MockConfig { error_rate: 1.0, error_status: 503, ..fast() }).await.unwrap();
    assert_eq!(post(&mock, "/v1/completions", json!({"prompt": "x"})).await.status(), 503);
    assert_eq!(mock.stats().injected_errors, 1);
}

#[tokio::test]
async fn hangs_never_send_headers() {
    let mock = MockVllm::start(MockConfig { hang_rate: 1.0, ..fast() }).await.unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let result = client.post(format!("{}/v1/chat/completions", mock.url())).json(&chat(2, true)).send().await;
    assert!(result.unwrap_err().is_timeout());
    assert_eq!(mock.stats().hangs, 1);
}

#[tokio::test]
async fn streams_die_after_n_chunks() {
    let config = MockConfig { die_after_chunks: Some(3), itl_ms: 20.0, ..fast() };
    let mock = MockVllm::start(config).await.unwrap();
    let mut response = post(&mock, "/v1/chat/completions", chat(10, true)).await;
    assert_eq!(response.status(), 200, "headers go out before the stream dies");
    let mut received = String::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => received.push_str(std::str::from_utf8(&bytes).unwrap()),
            Ok(None) => panic!("the stream ended cleanly: {received}"),
            Err(error) => break error,
        }
    };
    assert!(error.is_body() || error.is_decode() || error.is_request(), "{error:?}");
    assert_eq!(received.matches("data: ").count(), 3, "{received}");
    assert!(!received.contains("[DONE]"));
    assert_eq!(mock.stats().deaths, 1);
    assert_eq!(mock.stats().aborted, 0, "a death is not a client abort");
}

#[tokio::test]
async fn exit_after_cuts_streams_and_stops_listening() {
    let config = MockConfig { exit_after_secs: Some(0.3), itl_ms: 50.0, ..fast() };
    let mut mock = MockVllm::start(config).await.unwrap();
    let mut response = post(&mock, "/v1/chat/completions", chat(1000, true)).await;
    let cut = async {
        loop {
            match response.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    };
    assert!(tokio::time::timeout(Duration::from_secs(10), cut).await.unwrap(), "the stream was cut");
    tokio::time::timeout(Duration::from_secs(10), mock.stopped()).await.unwrap();
    let refused = reqwest::Client::new().get(format!("{}/health", mock.url())).send().await;
    assert!(refused.unwrap_err().is_connect(), "nothing listens after the exit");
}

#[tokio::test]
async fn client_disconnects_abort_the_generation() {
    let mock = MockVllm::start(MockConfig { itl_ms: 20.0, ..fast() }).await.unwrap();
    let mut response = post(&mock, "/v1/chat/completions", chat(1000, true)).await;
    response.chunk().await.unwrap().unwrap();
    assert_eq!(mock.stats().running, 1);
    drop(response);
    let stats = mock.wait_until(|s| s.aborted == 1).await;
    assert_eq!((stats.running, stats.completed), (0, 0));
}

#[tokio::test]
async fn bad_requests_get_vllm_errors() {
    let mock = MockVllm::start(MockConfig { max_model_len: 100, ..fast() }).await.unwrap();
    let client = reqwest::Client::new();
    let invalid = client
        .post(format!("{}/v1/chat/completions", mock.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let wrong_model = post(&mock, "/v1/chat/completions", json!({"model": "gpt-4", "messages": [{"content": "x"}]}));
    let wrong_model: Value = wrong_model.await.json().await.unwrap();
    assert_eq!(wrong_model["error"]["code"], 404);
    assert_eq!(wrong_model["error"]["message"], "The model `gpt-4` does not exist.");
    let too_long: Value = post(&mock, "/v1/chat/completions", chat(500, false)).await.json().await.unwrap();
    assert_eq!(too_long["error"]["type"], "BadRequestError");
    assert!(too_long["error"]["message"].as_str().unwrap().contains("maximum context length is 100 tokens"));
    let missing = client.get(format!("{}/v2/nothing", mock.url())).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let wrong_method = client.get(format!("{}/v1/chat/completions", mock.url())).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(mock.stats().rejected, 3);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_text() {
    let text = |mock: MockVllm| async move {
        let answer: Value = post(&mock, "/v1/chat/completions", chat(16, false)).await.json().await.unwrap();
        answer["choices"][0]["message"]["content"].as_str().unwrap().to_string()
    };
    let a = text(MockVllm::start(MockConfig { seed: 7, ..fast() }).await.unwrap()).await;
    let b = text(MockVllm::start(MockConfig { seed: 7, ..fast() }).await.unwrap()).await;
    let c = text(MockVllm::start(MockConfig { seed: 8, ..fast() }).await.unwrap()).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// Serverless mode with test-sized timings: a 0.3 s cold start.
fn serverless(containers_max: u32, concurrency: u32, scaledown_window_secs: f64) -> MockConfig {
    let sim = ServerlessSim { containers_max, concurrency, cold_start_secs: 0.3, scaledown_window_secs };
    MockConfig { serverless: Some(sim), ..fast() }
}

async fn get(mock: &MockVllm, path: &str) -> reqwest::Response {
    reqwest::Client::new().get(format!("{}{path}", mock.url())).send().await.unwrap()
}

async fn billing(mock: &MockVllm) -> Value {
    let response = get(mock, "/billing").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls `/billing` until `done` holds, for at most five seconds.
async fn billing_until(mock: &MockVllm, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..500 {
        let record = billing(mock).await;
        if done(&record) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the billing record never reached the expected state: {}", billing(mock).await);
}

fn metric(metrics: &str, name: &str) -> f64 {
    let line = metrics.lines().find(|l| l.starts_with(&format!("{name}{{"))).unwrap_or_else(|| panic!("no {name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Sends a streamed chat and returns the response once its first chunk arrived, with
/// the time that took.
async fn first_chunk(mock: &MockVllm, max_tokens: u32) -> (reqwest::Response, Duration) {
    let sent = Instant::now();
    let mut response = post(mock, "/v1/chat/completions", chat(max_tokens, true)).await;
    assert_eq!(response.status(), 200);
    response.chunk().await.unwrap().unwrap();
    (response, sent.elapsed())
}

#[tokio::test]
async fn serverless_first_request_waits_out_the_cold_start_and_the_next_finds_it_warm() {
    let mock = MockVllm::start(serverless(2, 4, 30.0)).await.unwrap();
    let (first, cold_ttft) = first_chunk(&mock, 2).await;
    assert!(cold_ttft >= Duration::from_millis(300), "the TTFT includes the cold start: {cold_ttft:?}");
    first.text().await.unwrap();
    let (second, warm_ttft) = first_chunk(&mock, 2).await;
    assert!(warm_ttft < Duration::from_millis(250), "no second cold start: {warm_ttft:?}");
    assert!(second.text().await.unwrap().ends_with("data: [DONE]\n\n"));

    let record = billing(&mock).await;
    assert_eq!((record["running"].as_u64(), record["cold_starts"].as_u64()), (Some(1), Some(1)), "{record}");
    let containers = record["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["id"], 1);
    assert!(containers[0]["started_unix_ms"].as_u64().unwrap() > 1_700_000_000_000, "Unix milliseconds");
    assert!(containers[0]["stopped_unix_ms"].is_null());
    let metrics = get(&mock, "/metrics").await.text().await.unwrap();
    assert_eq!(metric(&metrics, "mock_serverless_containers"), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "mock_serverless_cold_starts_total"), 1.0, "{metrics}");
    assert!(metrics.contains("# TYPE mock_serverless_cold_starts_total counter"));
    assert_eq!(mock.stats().completed, 2);
}

#[tokio::test]
async fn serverless_scales_out_to_containers_max_then_requests_wait_for_a_free_slot() {
    let mock = MockVllm::start(serverless(2, 1, 30.0)).await.unwrap();
    // Two long streams, one per container, both past their cold start.
    let ((first, _), (second, _)) = tokio::join!(first_chunk(&mock, 10_000), first_chunk(&mock, 10_000));
    let record = billing(&mock).await;
    assert_eq!((record["running"].as_u64(), record["cold_starts"].as_u64()), (Some(2), Some(2)), "{record}");

    let third = tokio::spawn({
        let url = format!("{}/v1/chat/completions", mock.url());
        async move {
            let answer = reqwest::Client::new().post(url).json(&chat(2, false)).send().await.unwrap();
            (answer.status(), Instant::now())
        }
    });
    let queued = mock.wait_until(|s| s.waiting == 1).await;
    assert_eq!((queued.running, queued.completed), (2, 0));
    assert_eq!(billing(&mock).await["cold_starts"], 2, "containers_max holds: no third container");

    let freed = Instant::now();
    drop(first);
    let (status, answered) = tokio::time::timeout(Duration::from_secs(5), third).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert!(answered.duration_since(freed) < Duration::from_millis(250), "the freed container is warm");
    let record = billing(&mock).await;
    assert_eq!((record["running"].as_u64(), record["cold_starts"].as_u64()), (Some(2), Some(2)), "{record}");
    drop(second);
    let done = mock.wait_until(|s| s.running == 0).await;
    assert_eq!((done.aborted, done.completed, done.waiting), (2, 1, 0));
}

/// Sends a short chat that will have to wait; returns once it is the `position`th in
/// line, with a task that ends when its answer arrived.
async fn join_the_line(mock: &MockVllm, position: u64) -> tokio::task::JoinHandle<Instant> {
    let request = reqwest::Client::new().post(format!("{}/v1/chat/completions", mock.url())).json(&chat(5, false));
    let answered = tokio::spawn(async move {
        assert_eq!(request.send().await.unwrap().status(), 200);
        Instant::now()
    });
    mock.wait_until(|s| s.waiting == position).await;
    answered
}

#[tokio::test]
async fn serverless_waiters_are_served_in_order_and_give_up_their_place_on_disconnect() {
    let config = MockConfig { itl_ms: 20.0, ..serverless(1, 1, 30.0) };
    let mock = MockVllm::start(config).await.unwrap();
    let (holder, _) = first_chunk(&mock, 10_000).await;

    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let gave_up = impatient.post(format!("{}/v1/chat/completions", mock.url())).json(&chat(2, false)).send().await;
    assert!(gave_up.unwrap_err().is_timeout());
    mock.wait_until(|s| s.waiting == 0).await;

    let earlier = join_the_line(&mock, 1).await;
    let later = join_the_line(&mock, 2).await;
    drop(holder);
    let answered = async { (earlier.await.unwrap(), later.await.unwrap()) };
    let (earlier, later) = tokio::time::timeout(Duration::from_secs(5), answered).await.unwrap();
    assert!(earlier < later, "first come, first served");
    let done = mock.wait_until(|s| s.running == 0).await;
    assert_eq!((done.completed, done.waiting), (2, 0), "the one who gave up never ran");
    assert_eq!(billing(&mock).await["cold_starts"], 1);
}

#[tokio::test]
async fn serverless_idle_containers_scale_down_and_are_billed_for_their_life() {
    let mock = MockVllm::start(serverless(2, 4, 0.5)).await.unwrap();
    assert_eq!(post(&mock, "/v1/chat/completions", chat(2, false)).await.status(), 200);
    assert_eq!(billing(&mock).await["running"], 1);

    // Nothing but /billing is asked from here on: the scale-down timer stops it alone.
    let record = billing_until(&mock, |b| b["running"] == 0).await;
    assert_eq!(record["cold_starts"], 1);
    let container = &record["containers"][0];
    let started = container["started_unix_ms"].as_u64().unwrap();
    let stopped = container["stopped_unix_ms"].as_u64().expect("a stopped container has its stop time");
    assert!(stopped >= started, "{record}");
    let lived = stopped - started;
    assert!((799..2_000).contains(&lived), "cold start 300 ms + window 500 ms + the request, got {lived} ms");
    let metrics = get(&mock, "/metrics").await.text().await.unwrap();
    assert_eq!(metric(&metrics, "mock_serverless_containers"), 0.0, "{metrics}");

    // Scaled to zero: the next request cold-starts a new container.
    let (_response, ttft) = first_chunk(&mock, 2).await;
    assert!(ttft >= Duration::from_millis(300), "{ttft:?}");
    let record = billing(&mock).await;
    assert_eq!((record["running"].as_u64(), record["cold_starts"].as_u64()), (Some(1), Some(2)), "{record}");
    assert_eq!(record["containers"][1]["id"], 2);
    assert!(record["containers"][1]["stopped_unix_ms"].is_null());
    assert!(record["containers"][1]["started_unix_ms"].as_u64().unwrap() >= stopped);
}

#[tokio::test]
async fn serverless_health_checks_do_not_start_containers() {
    let mock = MockVllm::start(serverless(1, 1, 30.0)).await.unwrap();
    for path in ["/health", "/health", "/v1/models", "/metrics", "/billing"] {
        assert_eq!(get(&mock, path).await.status(), 200, "{path}");
    }
    assert_eq!(billing(&mock).await, json!({"containers": [], "running": 0, "cold_starts": 0}));
    // Embeddings are generation work: they do start one.
    let embedded = post(&mock, "/v1/embeddings", json!({"input": "x"})).await;
    assert_eq!(embedded.status(), 200);
    assert_eq!(billing(&mock).await["cold_starts"], 1);
    assert_eq!(get(&mock, "/health").await.status(), 200);
    assert_eq!(billing(&mock).await["cold_starts"], 1);
}

#[tokio::test]
async fn billing_is_a_404_outside_serverless_mode_and_needs_the_api_key() {
    let plain = MockVllm::start(fast()).await.unwrap();
    let missing = get(&plain, "/billing").await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["type"], "NotFoundError");
    assert!(plain.billing().is_none());

    let guarded = MockVllm::start(MockConfig { api_key: Some("k".into()), ..serverless(1, 1, 30.0) }).await.unwrap();
    assert_eq!(get(&guarded, "/billing").await.status(), 401);
    assert_eq!(get(&guarded, "/health").await.status(), 200, "health stays open");
    let authorized =
        reqwest::Client::new().get(format!("{}/billing", guarded.url())).bearer_auth("k").send().await.unwrap();
    assert_eq!(authorized.status(), 200);
    assert_eq!(guarded.billing().map(|b| b.cold_starts), Some(0));
}
