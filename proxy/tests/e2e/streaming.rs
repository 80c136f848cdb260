use std::time::{Duration, Instant};

use tandemn_bench::mock_vllm::MockConfig;
use tandemn_config::api::Tier;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_passes_through_chunk_by_chunk() {
    let paced = MockConfig { ttft_ms: 5.0, itl_ms: 40.0, ..fast() };
    let spot = mock(paced).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let mut response = router.chat(&chat_body(8, true)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream; charset=utf-8");
    assert!(response.headers().get("content-length").is_none());
    let mut arrivals = Vec::new();
    let mut body = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        arrivals.push(Instant::now());
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(body.ends_with("data: [DONE]\n\n"));
    assert_eq!(body.matches("data: ").count(), 8 + 2);
    // Each token left the mock 40 ms after the last: unbuffered, the client sees them
    // arrive apart rather than in one lump at the end.
    assert!(arrivals.len() >= 8, "chunks were coalesced: {} reads", arrivals.len());
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= Duration::from_millis(200), "the stream arrived at once: {spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mid_stream_death_ends_with_an_error_event() {
    let dying = MockConfig { die_after_chunks: Some(3), itl_ms: 20.0, ..fast() };
    let spot = mock(dying).await;
    let svl = mock(fast()).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8), spec(Tier::Serverless, &svl, 8)]);
    let response = router.chat(&chat_body(10, true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("the stream closes cleanly");
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 4, "three tokens, then the error: {body}");
    let last: serde_json::Value = serde_json::from_str(events[3].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error");
    assert_eq!(svl.stats().requests, 0, "after the first byte a stream cannot move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_the_generation() {
    let long = MockConfig { itl_ms: 20.0, ..fast() };
    let spot = mock(long).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let mut response = router.chat(&chat_body(1000, true)).send().await.unwrap();
    response.chunk().await.unwrap().unwrap();
    drop(response);
    let stats = spot.wait_until(|s| s.aborted == 1).await;
    assert_eq!((stats.running, stats.completed), (0, 0));
    let health = router.health().await;
    assert_eq!(health["backends"][0]["inflight"], 0, "the slot was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_streams_in_flight() {
    let paced = MockConfig { itl_ms: 20.0, ..fast() };
    let spot = mock(paced).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let mut response = router.chat(&chat_body(20, true)).send().await.unwrap();
    let mut body = String::from_utf8(response.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    router.begin_shutdown();
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(body.ends_with("data: [DONE]\n\n"), "the stream was cut by the shutdown: {body}");
    assert_eq!(spot.stats().completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_cut_after_the_idle_timeout() {
    let stalls = MockConfig { ttft_ms: 5.0, itl_ms: 60_000.0, ..fast() };
    let spot = mock(stalls).await;
    let mut config = settings();
    config.idle_timeout = Duration::from_millis(300);
    let router = TestRouter::start(config, &[spec(Tier::Spot, &spot, 8)]);
    let started = Instant::now();
    let body = router.chat(&chat_body(5, true)).send().await.unwrap().text().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "the stream was not cut");
    let events: Vec<&str> = body.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 2, "one token, then the error: {body}");
    assert!(events[1].contains("no data from the upstream within the idle timeout"), "{body}");
}
