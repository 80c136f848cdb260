use std::time::Duration;

use tandemn_bench::mock_vllm::MockConfig;
use tandemn_config::api::Tier;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_503_moves_to_serverless_with_a_one_mebibyte_body() {
    let refusing = MockConfig { error_rate: 1.0, error_status: 503, max_model_len: 1 << 22, ..fast() };
    let (spot, svl) = (mock(refusing).await, mock(MockConfig { max_model_len: 1 << 22, ..fast() }).await);
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8), spec(Tier::Serverless, &svl, 8)]);
    let prompt = "x".repeat(1 << 20);
    let body =
        serde_json::json!({"model": "mock-model", "messages": [{"role": "user", "content": prompt}], "max_tokens": 3});
    let response = router.chat(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(backend_of(&response).starts_with("serverless/"));
    assert_eq!(spot.stats().injected_errors, 1);
    assert_eq!(svl.stats().prompt_tokens, (1 << 20) / 4, "the whole 1 MiB prompt was replayed");
    assert_eq!(router.health().await["failovers"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_never_retried() {
    let (spot, svl) = (mock(fast()).await, mock(fast()).await);
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8), spec(Tier::Serverless, &svl, 8)]);
    let wrong_model = serde_json::json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]});
    let response = router.chat(&wrong_model).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers().get("x-tandemn-error").is_none(), "the upstream's own error passes through");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "NotFoundError");
    assert_eq!((spot.stats().rejected, svl.stats().requests), (1, 0));
    let health = router.health().await;
    assert_eq!(health["backends"][0]["circuit"], "closed", "a model error does not mark a backend down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_replica_killed_under_load_fails_no_request() {
    let config = MockConfig { ttft_ms: 20.0, itl_ms: 1.0, ..fast() };
    let (dying, healthy, svl) = (mock(config.clone()).await, mock(config.clone()).await, mock(config).await);
    let backends = [spec(Tier::Spot, &dying, 64), spec(Tier::Spot, &healthy, 64), spec(Tier::Serverless, &svl, 64)];
    let router = TestRouter::start(settings(), &backends);
    let served_before_death = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = served_before_death.clone();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        counter.store(dying.stats().completed, std::sync::atomic::Ordering::SeqCst);
        drop(dying); // closes its listener and every open connection, mid-request
    });
    let deadline = tokio::time::Instant::now() + Duration::from_millis(900);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let request = router.chat(&chat_body(4, false));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while tokio::time::Instant::now() < deadline {
                    let response = request.try_clone().unwrap().send().await.unwrap();
                    statuses.push(response.status().as_u16());
                    response.bytes().await.unwrap();
                }
                statuses
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        let statuses = worker.await.unwrap();
        assert!(statuses.iter().all(|&s| s == 200), "a request failed: {statuses:?}");
        total += statuses.len();
    }
    killer.await.unwrap();
    assert!(served_before_death.load(std::sync::atomic::Ordering::SeqCst) > 0, "the dying replica took traffic first");
    assert!(total > 50, "the load kept going: {total} requests");
    let health = router.health().await;
    let dead = &health["backends"][0];
    assert!(dead["state"] == "down" || dead["circuit"] == "open", "the dead replica is out of rotation: {dead}");
}
