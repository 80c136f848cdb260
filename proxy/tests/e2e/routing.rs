use std::collections::HashMap;

use tandemn_config::api::Tier;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_is_preferred_and_load_spreads_across_replicas() {
    let slow = tandemn_bench::mock_vllm::MockConfig { ttft_ms: 30.0, itl_ms: 1.0, ..fast() };
    let (a, b, svl) = (mock(slow.clone()).await, mock(slow.clone()).await, mock(slow).await);
    let router = TestRouter::start(
        settings(),
        &[spec(Tier::Spot, &a, 64), spec(Tier::Spot, &b, 64), spec(Tier::Serverless, &svl, 64)],
    );
    let requests: Vec<_> = (0..40).map(|_| router.chat(&chat_body(4, false)).send()).collect();
    let mut served: HashMap<String, usize> = HashMap::new();
    for response in futures_util::future::join_all(requests).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        *served.entry(backend_of(&response)).or_default() += 1;
        assert!(response.headers().contains_key("x-request-id"));
    }
    assert_eq!(svl.stats().requests, 0, "serverless idles while spot has room: {served:?}");
    assert_eq!(a.stats().requests + b.stats().requests, 40);
    assert!((12..=28).contains(&(a.stats().requests as usize)), "uneven spread: {served:?}");
    assert!(served.keys().all(|k| k.starts_with("spot/127.0.0.1:")), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spot_spills_over_to_serverless() {
    let streaming = tandemn_bench::mock_vllm::MockConfig { ttft_ms: 5.0, itl_ms: 20.0, ..fast() };
    let (spot, svl) = (mock(streaming.clone()).await, mock(streaming).await);
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 2), spec(Tier::Serverless, &svl, 100)]);
    let requests: Vec<_> = (0..6).map(|_| router.chat(&chat_body(10, true)).send()).collect();
    let mut tiers = Vec::new();
    for response in futures_util::future::join_all(requests).await {
        let response = response.unwrap();
        tiers.push(backend_of(&response).split('/').next().unwrap().to_string());
        assert!(response.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    }
    tiers.sort();
    assert_eq!(tiers, ["serverless", "serverless", "serverless", "serverless", "spot", "spot"]);
    assert_eq!(spot.stats().requests, 2);
    let health = router.health().await;
    assert_eq!(health["spillovers"], 4);
    assert_eq!(health["route_stats"]["spot"], 2);
    assert_eq!(health["route_stats"]["serverless"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queue_for_capacity_then_get_503_with_retry_after() {
    let slow = tandemn_bench::mock_vllm::MockConfig { ttft_ms: 5.0, itl_ms: 100.0, ..fast() };
    let spot = mock(slow).await;
    let mut config = settings();
    config.queue_timeout = std::time::Duration::from_millis(200);
    let router = TestRouter::start(config, &[spec(Tier::Spot, &spot, 1)]);
    let mut busy = router.chat(&chat_body(20, true)).send().await.unwrap();
    busy.chunk().await.unwrap();
    let refused = router.chat(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["x-tandemn-error"], "no_capacity");
    drop(busy);
    // The router notices the client left (at its next write) and frees the slot.
    for _ in 0..500 {
        if router.health().await["backends"][0]["inflight"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let freed = router.chat(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(freed.status(), 200);
}

/// A keep-alive client sends its next request the moment a response is complete; the
/// router must not be reading from the connection then (it once ate the request's
/// first byte, and the backend saw `OST /v1/chat/completions`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_requests_on_one_connection_arrive_intact() {
    let spot = mock(fast()).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let client = router.client();
    for stream in [false, true].into_iter().cycle().take(200) {
        let response = client
            .post(format!("{}/v1/chat/completions", router.url))
            .bearer_auth(CLIENT_KEY)
            .json(&chat_body(2, stream))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    assert_eq!((spot.stats().completed, spot.stats().rejected), (200, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_may_be_named_by_host_name() {
    let svl = mock(fast()).await;
    let named = tandemn_config::api::BackendSpec {
        id: None,
        tier: Tier::Serverless,
        url: format!("http://localhost:{}", svl.addr().port()),
        capacity: 8,
        auth: tandemn_config::api::BackendAuth::None,
        draining: false,
    };
    let router = TestRouter::start(settings(), &[named]);
    for _ in 0..3 {
        let response = router.chat(&chat_body(2, false)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(backend_of(&response), format!("serverless/localhost:{}", svl.addr().port()));
    }
    assert_eq!(svl.stats().completed, 3);
}

/// Active probes take a booting (or sick) spot replica out and bring it back, without a
/// table rebuild; meanwhile serverless serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_move_spot_replicas_between_ready_and_down() {
    let booting = mock(tandemn_bench::mock_vllm::MockConfig { boot_secs: 1.0, ..fast() }).await;
    let svl = mock(fast()).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &booting, 8), spec(Tier::Serverless, &svl, 8)]);
    let state = |health: &serde_json::Value| health["backends"][0]["state"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    for _ in 0..300 {
        let health = router.health().await;
        let now = state(&health);
        if seen.last() != Some(&now) {
            seen.push(now.clone());
            if now == "down" {
                // While the replica is down, traffic goes to serverless.
                let response = router.chat(&chat_body(2, false)).send().await.unwrap();
                assert!(backend_of(&response).starts_with("serverless/"));
            }
        }
        assert_eq!(health["table_version"], 1, "state changes never rebuild the table");
        if seen.ends_with(&["down".to_string(), "ready".to_string()]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen.ends_with(&["down".to_string(), "ready".to_string()]), "states seen: {seen:?}");
    let response = router.chat(&chat_body(2, false)).send().await.unwrap();
    assert!(backend_of(&response).starts_with("spot/"), "back in rotation");
}

/// An SSE answer that carries Content-Length would be held back by some clients until
/// the end; the router drops the length and streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_lose_their_content_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0_u8; 65536];
        let mut read = 0;
        // Headers, then the JSON body the router sends with Content-Length.
        while !String::from_utf8_lossy(&request[..read]).contains("\"stream\":true") {
            read += socket.read(&mut request[read..]).await.unwrap();
        }
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n";
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
    });
    // Serverless, so no health probe takes the scripted server's one connection.
    let backend = tandemn_config::api::BackendSpec {
        id: None,
        tier: Tier::Serverless,
        url: upstream,
        capacity: 1,
        auth: tandemn_config::api::BackendAuth::None,
        draining: false,
    };
    let router = TestRouter::start(settings(), &[backend]);
    let response = router.chat(&chat_body(1, true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none(), "{:?}", response.headers());
    assert!(response.text().await.unwrap().ends_with("data: [DONE]\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_takes_the_slot_when_it_frees() {
    let paced = tandemn_bench::mock_vllm::MockConfig { ttft_ms: 5.0, itl_ms: 50.0, ..fast() };
    let spot = mock(paced).await;
    let mut config = settings();
    config.queue_timeout = std::time::Duration::from_secs(5);
    let router = TestRouter::start(config, &[spec(Tier::Spot, &spot, 1)]);
    let mut first = router.chat(&chat_body(6, true)).send().await.unwrap();
    first.chunk().await.unwrap();
    // Sent while the only slot is taken: it waits, then runs when the first stream ends.
    let second = router.chat(&chat_body(2, false)).send();
    let ((), second) = tokio::join!(async { while first.chunk().await.unwrap().is_some() {} }, second);
    assert_eq!(second.unwrap().status(), 200);
    assert_eq!(spot.stats().completed, 2);
}

/// A stream is sent chunked, so an HTTP/1.1 client keeps its connection for the next
/// request instead of waiting for the close that would end a close-delimited body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_chunked_and_keep_the_connection() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let spot = mock(fast()).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let address = router.url.trim_start_matches("http://").to_string();
    let socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut socket = BufReader::new(socket);
    let body = chat_body(3, true).to_string();
    for round in 0..2 {
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.get_mut().write_all(request.as_bytes()).await.unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(socket.read_line(&mut line).await.unwrap() > 0, "round {round}: connection closed");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        // Read chunks up to the last (zero-length) one.
        let mut events = String::new();
        loop {
            let mut size = String::new();
            socket.read_line(&mut size).await.unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            socket.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                break;
            }
            events.push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        }
        assert!(events.ends_with("data: [DONE]\n\n"), "{events}");
    }
    assert_eq!(spot.stats().completed, 2);
}
