//! The load generator against mock-vllm and a scripted server on 127.0.0.1:0:
//! counts, tokens, errors by kind and backend shares.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

use std::time::Duration;

use tandemn_bench::loadgen::request::{Api, Target};
use tandemn_bench::loadgen::schedule::{Arrival, Trace};
use tandemn_bench::loadgen::{Load, run};
use tandemn_bench::mock_vllm::{MockConfig, MockVllm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn target(url: String, stream: bool) -> Target {
    Target { client: reqwest::Client::new(), url, api_key: None, model: "mock-model".into(), api: Api::Chat, stream }
}

fn closed(users: u32, requests: u64, osl: u32) -> Load {
    Load::Closed { users, profile: None, duration: None, requests: Some(requests), isl: 32, osl }
}

#[tokio::test]
async fn closed_loop_counts_requests_tokens_and_gaps() {
    let mock = MockVllm::start(MockConfig { ttft_ms: 20.0, itl_ms: 2.0, ..MockConfig::default() }).await.unwrap();
    let report = run(target(mock.url(), true), closed(4, 20, 8), false, Duration::ZERO).await;
    assert_eq!((report.requests, report.succeeded, report.failed), (20, 20, 0));
    assert_eq!(report.output_tokens, 160);
    assert_eq!(report.ttft_ms.count, 20);
    assert_eq!(report.itl_ms.count, 20 * 7, "one gap between each pair of the 8 token events");
    assert!(report.ttft_ms.p50 >= 20.0, "the first token cannot beat the configured TTFT: {:?}", report.ttft_ms);
    assert!(report.latency_ms.p50 >= report.ttft_ms.p50);
    assert_eq!(mock.stats().requests, 20);
    assert!(report.tiers.is_empty(), "mock-vllm sets no backend header");
    let cpu = report.client_cpu_percent.expect("Linux reports the process's CPU time");
    assert!((0.0..=400.0).contains(&cpu), "{cpu}");

    let whole = run(target(mock.url(), false), closed(2, 6, 5), false, Duration::ZERO).await;
    assert_eq!((whole.succeeded, whole.output_tokens, whole.ttft_ms.count), (6, 30, 0));
}

#[tokio::test]
async fn open_loop_sends_every_planned_request() {
    let mock = MockVllm::start(MockConfig { ttft_ms: 1.0, itl_ms: 1.0, ..MockConfig::default() }).await.unwrap();
    let trace = Trace::at_rate(200.0, Arrival::Constant, None, Some(40), 16, 4, 1);
    let report = run(target(mock.url(), true), Load::Open { trace }, false, Duration::ZERO).await;
    assert_eq!((report.requests, report.succeeded), (40, 40));
    assert_eq!(report.output_tokens, 160);
    assert!(report.duration_secs >= 0.195, "40 arrivals 5 ms apart span 195 ms: {}", report.duration_secs);
}

#[tokio::test]
async fn failures_are_counted_by_kind() {
    let erroring = MockVllm::start(MockConfig { error_rate: 1.0, ..MockConfig::default() }).await.unwrap();
    let report = run(target(erroring.url(), true), closed(2, 5, 4), false, Duration::ZERO).await;
    assert_eq!(report.failed, 5);
    assert_eq!(report.errors.get("status_500"), Some(&5));
    assert_eq!(report.stages.get("error_status"), Some(&5), "{:?}", report.stages);

    let dying = MockConfig { die_after_chunks: Some(2), ttft_ms: 1.0, itl_ms: 10.0, ..MockConfig::default() };
    let dying = MockVllm::start(dying).await.unwrap();
    let report = run(target(dying.url(), true), closed(1, 3, 10), false, Duration::ZERO).await;
    assert_eq!(report.errors.get("truncated"), Some(&3), "{:?}", report.errors);
    assert_eq!(report.stages.get("mid_stream"), Some(&3), "two chunks arrived first: {:?}", report.stages);

    let url = { MockVllm::start(MockConfig::default()).await.unwrap().url() };
    let report = run(target(url, true), closed(1, 2, 4), false, Duration::ZERO).await;
    assert_eq!(report.errors.get("connect"), Some(&2), "nothing listens any more: {:?}", report.errors);
    assert_eq!(report.failures.get("before_response connect"), Some(&2), "{:?}", report.failures);

    let hanging = MockVllm::start(MockConfig { hang_rate: 1.0, ..MockConfig::default() }).await.unwrap();
    let mut slow = target(hanging.url(), true);
    slow.client = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let report = run(slow, closed(1, 1, 4), false, Duration::ZERO).await;
    assert_eq!(report.errors.get("timeout"), Some(&1));
}

/// Answers every request with a fixed SSE body and the given backend header.
async fn scripted_server(backends: &'static [&'static str], body: &'static str) -> String {
    scripted_response(backends, "200 OK", "content-type: text/event-stream", body).await
}

/// Answers every request with `status`, one extra header line, the backend header and
/// `body`.
async fn scripted_response(
    backends: &'static [&'static str],
    status: &'static str,
    header: &'static str,
    body: &'static str,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for backend in backends.iter().cycle() {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buffer = [0_u8; 4096];
            // Read the headers and the JSON body (the client sends Content-Length).
            loop {
                let n = socket.read(&mut buffer).await.unwrap();
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some(split) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if request.len() >= split + 4 + length {
                        break;
                    }
                }
            }
            let response = format!(
                "HTTP/1.1 {status}\r\n{header}\r\nx-tandemn-backend: {backend}\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn backend_headers_give_the_routing_split() {
    const BODY: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n\
                        data: {\"choices\":[],\"usage\":{\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
    let url = scripted_server(&["spot/r1", "spot/r2", "serverless/modal", "spot/r1"], BODY).await;
    let report = run(target(url, true), closed(1, 8, 2), false, Duration::ZERO).await;
    assert_eq!(report.succeeded, 8);
    assert_eq!(report.output_tokens, 16, "tokens come from the usage chunk");
    assert_eq!(report.tiers.get("spot"), Some(&6));
    assert_eq!(report.tiers.get("serverless"), Some(&2));
    assert_eq!(report.backends.get("spot/r1"), Some(&4));
    assert!(report.table().contains("served by: serverless 2 (25%), spot 6 (75%)"), "{}", report.table());

    let url = scripted_server(&["spot/r1"], "data: {\"error\": {\"message\": \"upstream died\"}}\n\n").await;
    let report = run(target(url, true), closed(1, 2, 2), false, Duration::ZERO).await;
    assert_eq!(report.errors.get("stream_error"), Some(&2));
    assert_eq!(report.stages.get("before_first_event"), Some(&2), "the error was the first event");
}

/// The stage tells a failure the client could retry from one that cost it part of an
/// answer, and the router's reason comes with an error status.
#[tokio::test]
async fn failures_tell_how_far_the_request_got() {
    const BROKEN: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
                          data: {\"error\": {\"message\": \"upstream died\"}}\n\n";
    let url = scripted_server(&["spot/r1"], BROKEN).await;
    let report = run(target(url, true), closed(1, 2, 2), false, Duration::ZERO).await;
    assert_eq!(report.failures.get("mid_stream stream_error"), Some(&2), "{:?}", report.failures);

    let url = scripted_response(
        &["-"],
        "502 Bad Gateway",
        "x-tandemn-error: upstream_unavailable",
        "{\"error\": {\"message\": \"the upstream could not be reached\"}}",
    )
    .await;
    let report = run(target(url, true), closed(1, 3, 2), false, Duration::ZERO).await;
    assert_eq!(report.failures.get("error_status status_502 upstream_unavailable"), Some(&3), "{:?}", report.failures);
    assert!(report.table().contains("failed: error_status status_502 upstream_unavailable 3"), "{}", report.table());

    let url = scripted_server(&["spot/r1"], "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n").await;
    let report = run(target(url, true), closed(1, 1, 2), false, Duration::ZERO).await;
    assert_eq!(report.failures.get("mid_stream truncated"), Some(&1), "no [DONE]: {:?}", report.failures);
}

#[tokio::test]
async fn warmup_requests_are_sent_but_not_measured() {
    let mock = MockVllm::start(MockConfig { ttft_ms: 1.0, itl_ms: 1.0, ..MockConfig::default() }).await.unwrap();
    let trace = Trace::at_rate(100.0, Arrival::Constant, None, Some(40), 8, 2, 0);
    let report = run(target(mock.url(), true), Load::Open { trace }, false, Duration::from_millis(200)).await;
    assert_eq!(report.requests + report.warmup_requests, 40);
    assert!((10..=25).contains(&report.warmup_requests), "arrivals 10 ms apart: {}", report.warmup_requests);
    assert_eq!(mock.stats().requests, 40, "warm-up requests were still sent");
    assert!(report.table().contains("warm-up"));
}
