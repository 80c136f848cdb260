use std::time::Duration;

use tandemn_config::api::Tier;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_keeps_the_predecessor_fields_and_needs_the_admin_key() {
    let (spot, svl) = (mock(fast()).await, mock(fast()).await);
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8), spec(Tier::Serverless, &svl, 8)]);
    for _ in 0..3 {
        assert_eq!(
            router.chat(&chat_body(5, true)).send().await.unwrap().text().await.unwrap().matches("data:").count(),
            7
        );
    }
    let client = router.client();
    let denied = client.get(format!("{}/router/health", router.url)).bearer_auth(CLIENT_KEY).send().await.unwrap();
    assert_eq!(denied.status(), 401, "the client key is not the admin key");
    let health = router.health().await;
    let stats = &health["route_stats"];
    assert_eq!(
        (stats["total"].as_u64(), stats["spot"].as_u64(), stats["serverless"].as_u64()),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!((stats["pct_spot"].as_f64(), stats["pct_serverless"].as_f64()), (Some(100.0), Some(0.0)));
    assert_eq!(stats["rejected"], 1, "the denied admin call");
    assert_eq!(health["spot_state"], "ready");
    assert!(health["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert!(health["spot_ready_seconds"].is_number());
    assert_eq!(health["backends"][0]["responses"]["2xx"], 3);
    assert_eq!(health["backends"][0]["output_tokens"], 15);
    assert!(health["backends"][0]["ttfb_ewma_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_sent() {
    let (spot, svl) = (mock(fast()).await, mock(fast()).await);
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 1), spec(Tier::Serverless, &svl, 8)]);
    for stream in [true, false, true, false] {
        router.chat(&chat_body(7, stream)).send().await.unwrap().bytes().await.unwrap();
    }
    let text = router.admin_get("/metrics").await.text().await.unwrap();
    for line in [
        "tandemn_requests_total{tier=\"spot\"} 4",
        "tandemn_requests_total{tier=\"serverless\"} 0",
        "tandemn_output_tokens_total{tier=\"spot\"} 28",
        "tandemn_ttfb_seconds_count{tier=\"spot\"} 4",
        "tandemn_inflight_requests 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains(&format!(
        "tandemn_backend_responses_total{{tier=\"spot\",backend=\"spot/{}\",status=\"2xx\"}} 4",
        spot.addr()
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_swaps_under_load_drop_nothing() {
    let backends: Vec<_> = futures_util::future::join_all((0..3).map(|_| mock(fast()))).await;
    let router =
        TestRouter::start(settings(), &[spec(Tier::Spot, &backends[0], 64), spec(Tier::Serverless, &backends[2], 64)]);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let request = router.chat(&chat_body(6, true));
            tokio::spawn(async move {
                let mut done = 0;
                while tokio::time::Instant::now() < deadline {
                    let response = request.try_clone().unwrap().send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    assert!(response.text().await.unwrap().ends_with("data: [DONE]\n\n"));
                    done += 1;
                }
                done
            })
        })
        .collect();
    let client = router.client();
    let sets = [vec![0, 1, 2], vec![1, 2], vec![0, 2], vec![1], vec![0, 1, 2]];
    let mut versions = Vec::new();
    for set in sets.iter().cycle().take(12) {
        let specs: Vec<_> =
            set.iter().map(|&i| spec(if i == 2 { Tier::Serverless } else { Tier::Spot }, &backends[i], 64)).collect();
        let answer: serde_json::Value = client
            .post(format!("{}/router/config", router.url))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"backends": specs}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        versions.push(answer["version"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap();
    }
    assert!(total > 20, "{total}");
    assert!(versions.windows(2).all(|w| w[1] == w[0] + 1), "{versions:?}");
    let bad = client
        .post(format!("{}/router/config", router.url))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"backends": [{"tier": "spot", "url": "ftp://x", "capacity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        router.health().await["table_version"].as_u64(),
        versions.last().copied(),
        "a bad config changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_health_can_be_opened_without_the_admin_key() {
    let spot = mock(fast()).await;
    let mut config = settings();
    config.health_public = true;
    let router = TestRouter::start(config, &[spec(Tier::Spot, &spot, 8)]);
    let client = router.client();
    let health = client.get(format!("{}/router/health", router.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    for path in ["/metrics", "/router/nothing"] {
        let closed = client.get(format!("{}{path}", router.url)).send().await.unwrap();
        assert_eq!(closed.status(), 401, "{path}");
    }
    let config_change = client
        .post(format!("{}/router/config", router.url))
        .json(&serde_json::json!({"backends": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(config_change.status(), 401);
    assert_eq!(router.health().await["backends"].as_array().unwrap().len(), 1, "nothing changed");
}
