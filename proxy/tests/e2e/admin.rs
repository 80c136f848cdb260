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
    // Room for every request on spot: a slot is released just after the client has the
    // last byte, so with capacity 1 the next request could spill.
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8), spec(Tier::Serverless, &svl, 8)]);
    for stream in [true, false, true, false] {
        router.chat(&chat_body(7, stream)).send().await.unwrap().bytes().await.unwrap();
    }
    // The last request leaves the router's books just after its last byte: wait for it.
    let mut text = String::new();
    for _ in 0..100 {
        text = router.admin_get("/metrics").await.text().await.unwrap();
        if text.lines().any(|l| l == "tandemn_inflight_requests 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_admin_body_runs_into_its_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let spot = mock(fast()).await;
    let mut config = settings();
    // The admin body deadline is the client body deadline (at most 10 s): short here.
    config.idle_timeout = Duration::from_millis(300);
    let router = TestRouter::start(config, &[spec(Tier::Spot, &spot, 8)]);
    let address = router.url.trim_start_matches("http://").to_string();
    let socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let head = format!(
        "POST /router/config HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    // A byte every 50 ms, for longer than the test waits: only a deadline ends this.
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut response = Vec::new();
    let mut buffer = [0_u8; 4096];
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&response).contains("request_timeout") {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&response).to_string();
    assert!(answered.is_ok(), "no answer while the body trickled: {text:?}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("x-tandemn-error: request_timeout"), "{text}");
    // The rest of the body is never read: the connection is closed, not kept.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open after the 408");
    trickle.abort();
    assert_eq!(router.health().await["table_version"], 1, "nothing was published");
}

async fn post_config(router: &TestRouter, body: String) -> (u16, serde_json::Value) {
    let response = router
        .client()
        .post(format!("{}/router/config", router.url))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_backend_secrets_are_refused_and_change_nothing() {
    let spot = mock(fast()).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let url = spot.url();
    let cases = [
        (r#"{"bearer": {"token": ""}}"#, "auth.bearer.token"),
        (r#"{"bearer": {"token": "  \t "}}"#, "auth.bearer.token"),
        (r#"{"modal": {"key": "modal-key-value", "secret": " "}}"#, "auth.modal.secret"),
        (r#"{"cloud_run": {"id_token": ""}}"#, "auth.cloud_run.id_token"),
    ];
    for (auth, field) in cases {
        let body =
            format!(r#"{{"backends": [{{"tier": "serverless", "url": "{url}", "capacity": 4, "auth": {auth}}}]}}"#);
        let (status, answer) = post_config(&router, body).await;
        assert_eq!(status, 400, "{auth}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        // Refused where the JSON is read (the secret type), with its path.
        assert!(message.contains(field) && message.contains("empty"), "{message}");
        assert!(!message.contains("modal-key-value"), "{message}");
    }
    let health = router.health().await;
    assert_eq!(health["table_version"], 1, "nothing was published");
    assert_eq!(health["backends"][0]["tier"], "spot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_config_bodies_are_explained_without_their_secrets() {
    let spot = mock(fast()).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let backend = format!(r#"{{"tier": "spot", "url": "{}", "capacity": 2"#, spot.url());
    let cases = [
        (format!(r#"{{"backends": [{backend}, "auth": "sk-live-1"}}]}}"#), "at `backends[0].auth`"),
        (
            format!(r#"{{"backends": [{backend}, "auth": {{"bearer": "sk-live-2"}}}}]}}"#),
            "at `backends[0].auth.bearer`",
        ),
        (
            format!(
                r#"{{"backends": [{backend}}}, {{"tier": "spot", "url": "{}", "capacity": "sk-live-3"}}]}}"#,
                spot.url()
            ),
            "at `backends[1].capacity`",
        ),
        (format!(r#"{{"backends": [{backend}, "auth": {{"bearer": {{"token": "sk-live-4"}}}}"#), "EOF while parsing"),
        ("\u{0}\u{1}sk-live-5".to_string(), "(line 1 column 1)"),
    ];
    for (body, place) in cases {
        let (status, answer) = post_config(&router, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["type"], "bad_request");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("invalid backend configuration") && message.contains(place), "{message}");
        assert!(!answer.to_string().contains("sk-live"), "a value was echoed: {answer}");
    }
    assert_eq!(router.health().await["table_version"], 1, "nothing was published");
}
