//! What an attack on the router found, kept closed: empty keys, connections held without
//! a key, stalled readers, short upstream bodies, pipelining, half-closes, repeated POSTs
//! and odd request targets.

use std::time::Duration;

use tandemn_bench::mock_vllm::MockConfig;
use tandemn_config::api::{Secret, Tier};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::*;
use crate::raw::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_token_never_matches_even_an_empty_key() {
    let spot = mock(fast()).await;
    let mut config = settings();
    config.api_keys = vec![Secret::new(""), Secret::new(CLIENT_KEY)];
    config.admin_key = Some(Secret::new(" "));
    let router = TestRouter::start(config, &[spec(Tier::Spot, &spot, 8)]);
    let client = router.client();
    let chat = format!("{}/v1/chat/completions", router.url);
    for (name, value) in
        [("x-api-key", ""), ("x-api-key", " "), ("authorization", "Bearer "), ("authorization", "Bearer")]
    {
        let response = client.post(&chat).header(name, value).json(&chat_body(2, false)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{name}: {value:?}");
    }
    let config = client
        .post(format!("{}/router/config", router.url))
        .header("x-api-key", "")
        .json(&serde_json::json!({"backends": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 401);
    assert_eq!(spot.stats().requests, 0);
    assert_eq!(router.chat(&chat_body(2, false)).send().await.unwrap().status(), 200, "the real key still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_closes_its_connection() {
    let router = TestRouter::start(settings(), &[]);
    let address = address(&router.url);
    for request in [
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nContent-Length: 2\r\n\r\n{{}}"),
        format!("GET /router/health HTTP/1.1\r\nHost: {address}\r\nx-api-key: wrong\r\n\r\n"),
        format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n"),
    ] {
        let mut socket = TcpStream::connect(&address).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let (response, closed) = read_until_closed(&mut socket, WAIT).await;
        assert!(response.starts_with("HTTP/1.1 401"), "{response}");
        assert!(response.to_ascii_lowercase().contains("connection: close"), "{response}");
        assert!(closed, "the connection stays open after a 401: {request}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_time_out() {
    let spot = mock(fast()).await;
    let mut config = settings();
    config.keepalive_timeout = Duration::from_secs(1);
    let router = TestRouter::start(config, &[spec(Tier::Spot, &spot, 8)]);
    let address = address(&router.url);
    let mut socket = TcpStream::connect(&address).await.unwrap();
    let request = format!("GET /v1/models HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let (response, closed) = read_until_closed(&mut socket, WAIT).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(closed, "an idle keep-alive connection was never closed");
    assert!(started.elapsed() < Duration::from_secs(5), "closed only after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_must_arrive_within_the_header_timeout() {
    let mut config = settings();
    config.header_timeout = Duration::from_secs(1);
    let router = TestRouter::start(config, &[]);
    let address = address(&router.url);
    // A connection that sends nothing is closed.
    let mut silent = TcpStream::connect(&address).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, WAIT).await;
    assert!(closed, "a silent connection is kept");
    // One that trickles its head (a byte every 100 ms, for up to 6 s) is closed too,
    // although each byte comes well within any per-read timeout.
    let mut trickle = TcpStream::connect(&address).await.unwrap();
    let head = format!("GET /v1/models HTTP/1.1\r\nHost: {address}\r\nX-Padding: {}\r\n\r\n", "a".repeat(60));
    let started = std::time::Instant::now();
    let mut cut = false;
    for byte in head.as_bytes() {
        if trickle.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !cut {
        cut = read_until_closed(&mut trickle, Duration::from_millis(500)).await.1;
    }
    assert!(cut, "a trickled head was read to the end");
    assert!(started.elapsed() < Duration::from_secs(4), "cut only after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_cut() {
    let router = TestRouter::start(settings(), &[]);
    let address = address(&router.url);
    let mut socket = TcpStream::connect(&address).await.unwrap();
    let padding = format!("X-Padding: {}\r\n", "a".repeat(1000));
    let mut head = format!("GET /v1/models HTTP/1.1\r\nHost: {address}\r\n");
    let mut sent_all = true;
    socket.write_all(head.as_bytes()).await.unwrap();
    head.clear();
    for _ in 0..200 {
        if socket.write_all(padding.as_bytes()).await.is_err() {
            sent_all = false;
            break;
        }
    }
    if sent_all {
        let _ = socket.write_all(b"\r\n").await;
    }
    let (response, closed) = read_until_closed(&mut socket, WAIT).await;
    assert!(closed);
    assert!(!response.contains(" 200 ") && !response.contains(" 401 "), "a 200 KiB head was parsed: {response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_and_counted() {
    let spot = mock(fast()).await;
    let mut config = settings();
    config.max_connections = 3;
    let router = TestRouter::start(config, &[spec(Tier::Spot, &spot, 8)]);
    let address = address(&router.url);
    let open = || router.router.connections.open.load(std::sync::atomic::Ordering::Relaxed);
    // The harness's readiness probe connected and left: its place must be free first, or
    // it could hold one while the third idle connection is refused (seen on a loaded CI).
    for _ in 0..500 {
        if open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open(), 0);
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    for _ in 0..500 {
        if open() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open(), 3);
    let mut extra = TcpStream::connect(&address).await.unwrap();
    let (response, closed) = read_until_closed(&mut extra, WAIT).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("too_many_connections") && closed, "{response}");
    drop(idle);
    // The places come back once those connections close.
    let mut answered = false;
    for _ in 0..100 {
        if router.chat(&chat_body(2, false)).send().await.is_ok_and(|r| r.status() == 200) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "closed connections never gave their places back");
    let metrics = router.admin_get("/metrics").await.text().await.unwrap();
    // At least the one above (a retry may have come before the idle sockets were closed).
    let refused = metrics.lines().find_map(|l| l.strip_prefix("tandemn_connections_refused_total ")).unwrap();
    assert!(refused.parse::<u64>().unwrap() >= 1, "{metrics}");
    assert!(metrics.contains("\ntandemn_connections_max 3\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_frees_its_slot() {
    // A long, fast stream: far more than the socket buffers hold.
    let spot = mock(MockConfig { ttft_ms: 1.0, itl_ms: 0.0, max_model_len: 10_000_000, ..MockConfig::default() }).await;
    let mut config = settings();
    config.write_timeout = Duration::from_secs(1);
    let router = TestRouter::start(config, &[spec(Tier::Spot, &spot, 8)]);
    let address = address(&router.url);
    let body = serde_json::json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}],
                                  "max_tokens": 5_000_000, "stream": true})
    .to_string();
    let request = chat_request(&address, &body);
    let mut stalled = TcpStream::connect(&address).await.unwrap();
    stalled.write_all(request.as_bytes()).await.unwrap();
    // Never read. The router must give up on the write, free the slot and cancel.
    let stats = tokio::time::timeout(WAIT, spot.wait_until(|s| s.aborted >= 1)).await;
    assert!(stats.is_ok(), "the upstream stream was never cancelled: {:?}", spot.stats());
    let health = router.health().await;
    assert_eq!(health["backends"][0]["inflight"], 0, "{health}");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_body_shorter_than_its_length_closes_the_client_connection() {
    let short = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"short\": 1}";
    let (router, _upstream) = scripted_router(vec![Reply::Close(short)], "").await;
    let address = address(&router.url);
    let mut socket = TcpStream::connect(&address).await.unwrap();
    socket.write_all(post(&address, "/v1/chat/completions", "").as_bytes()).await.unwrap();
    let (response, closed) = read_until_closed(&mut socket, WAIT).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(closed, "the client waits forever for the missing bytes on a reusable connection");
    let metrics = router.admin_get("/metrics").await.text().await.unwrap();
    let failures = metrics.lines().find(|l| l.starts_with("tandemn_upstream_failures_total ")).unwrap();
    assert_ne!(failures, "tandemn_upstream_failures_total 0", "the upstream's failure was not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let spot = mock(MockConfig { ttft_ms: 100.0, itl_ms: 1.0, ..MockConfig::default() }).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let address = address(&router.url);
    let one = |tokens: u32| {
        let body = serde_json::json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}],
                                      "max_tokens": tokens})
        .to_string();
        chat_request(&address, &body)
    };
    // Two requests in one packet.
    let mut socket = TcpStream::connect(&address).await.unwrap();
    socket.write_all(format!("{}{}", one(3), one(5)).as_bytes()).await.unwrap();
    let both = read_until(&mut socket, "\"completion_tokens\":5", WAIT).await;
    assert_eq!(both.matches("HTTP/1.1 200").count(), 2, "{both}");
    let first = both.find("\"completion_tokens\":3").expect("the first answer");
    assert!(first < both.find("\"completion_tokens\":5").unwrap(), "answers out of order: {both}");
    // A second request sent while the first waits for its first byte: the first is not
    // cancelled, and the second is not mangled.
    let mut socket = TcpStream::connect(&address).await.unwrap();
    socket.write_all(one(3).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    socket.write_all(one(5).as_bytes()).await.unwrap();
    let both = read_until(&mut socket, "\"completion_tokens\":5", WAIT).await;
    assert_eq!(both.matches("HTTP/1.1 200").count(), 2, "{both}");
    assert_eq!(spot.stats().aborted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_still_gets_its_answer() {
    let spot = mock(MockConfig { ttft_ms: 600.0, itl_ms: 1.0, ..MockConfig::default() }).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let address = address(&router.url);
    let mut socket = TcpStream::connect(&address).await.unwrap();
    let body = serde_json::json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}],
                                  "max_tokens": 4})
    .to_string();
    let request = chat_request(&address, &body);
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.shutdown().await.unwrap();
    let (response, _) = read_until_closed(&mut socket, WAIT).await;
    assert!(response.contains("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"completion_tokens\":4"), "{response}");
    assert_eq!(spot.stats().aborted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_while_waiting_still_cancels_the_upstream() {
    let spot = mock(MockConfig { ttft_ms: 5000.0, itl_ms: 1.0, ..MockConfig::default() }).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let address = address(&router.url);
    let mut socket = TcpStream::connect(&address).await.unwrap();
    let body = chat_body(4, false).to_string();
    let request = chat_request(&address, &body);
    socket.write_all(request.as_bytes()).await.unwrap();
    spot.wait_until(|s| s.running >= 1).await;
    drop(socket);
    let stats = tokio::time::timeout(WAIT, spot.wait_until(|s| s.aborted >= 1)).await;
    assert!(stats.is_ok(), "the generation went on for a client that left: {:?}", spot.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_not_sent_again_when_a_pooled_connection_drops_after_reading_it() {
    // The first request leaves a pooled connection; on the second the backend reads the
    // request, then drops the connection without answering (a crash mid-generation).
    let script = vec![Reply::KeepAlive(OK_EMPTY_JSON), Reply::Close(""), Reply::Close(OK_EMPTY_JSON)];
    let (router, upstream) = scripted_router(script, "").await;
    assert_eq!(router.chat(&chat_body(2, false)).send().await.unwrap().status(), 200);
    let second = router.chat(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(second.status(), 502);
    assert_eq!(upstream.received().len(), 2, "the POST reached the backend twice");
}

const OK_EMPTY_JSON: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

/// A router in front of one scripted serverless upstream (at `base_path`).
async fn scripted_router(script: Vec<Reply>, base_path: &str) -> (TestRouter, ScriptedUpstream) {
    let upstream = ScriptedUpstream::start(script).await;
    let backend = tandemn_config::api::BackendSpec {
        id: None,
        tier: Tier::Serverless,
        url: format!("{}{base_path}", upstream.url()),
        capacity: 8,
        auth: Default::default(),
        draining: false,
    };
    (TestRouter::start(settings(), &[backend]), upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_its_go_ahead() {
    let (router, upstream) = scripted_router(vec![Reply::KeepAlive(OK_EMPTY_JSON)], "").await;
    let address = address(&router.url);
    let mut socket = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
         Content-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // Well before curl's 1 s wait would send the body anyway.
    let go_ahead = read_until(&mut socket, "\r\n\r\n", Duration::from_millis(500)).await;
    assert!(go_ahead.starts_with("HTTP/1.1 100"), "no 100 Continue: {go_ahead:?}");
    socket.write_all(b"{}").await.unwrap();
    let response = read_until(&mut socket, "{}", WAIT).await;
    assert!(response.contains("HTTP/1.1 200"), "{response}");
    assert!(!upstream.received()[0].to_ascii_lowercase().contains("\r\nexpect:"), "Expect reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_stay_behind() {
    let (router, upstream) = scripted_router(vec![Reply::KeepAlive(OK_EMPTY_JSON)], "").await;
    let address = address(&router.url);
    let mut socket = TcpStream::connect(&address).await.unwrap();
    for te in ["TE: trailers\r\nConnection: keep-alive, TE", "te: gzip\r\nConnection: te", "Te: trailers"] {
        let request = post(&address, "/v1/chat/completions", &format!("{te}\r\nX-Hop: 1\r\nConnection: x-hop\r\n"));
        socket.write_all(request.as_bytes()).await.unwrap();
        read_until(&mut socket, "{}", WAIT).await;
    }
    let seen = upstream.received();
    assert_eq!(seen.len(), 3);
    for head in seen {
        let head = head.to_ascii_lowercase();
        for header in ["\r\nte:", "\r\nx-hop:", "\r\nauthorization:", "keep-alive"] {
            assert!(!head.contains(header), "{header:?} reached the backend: {head}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_and_relative_request_targets_are_refused() {
    let upstream =
        ScriptedUpstream::start(vec![Reply::KeepAlive("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")]).await;
    let backend = tandemn_config::api::BackendSpec {
        id: None,
        tier: Tier::Serverless,
        url: format!("{}/base", upstream.url()),
        capacity: 8,
        auth: Default::default(),
        draining: false,
    };
    let router = TestRouter::start(settings(), &[backend]);
    let address = address(&router.url);
    for target in ["*", "v1/models"] {
        let mut socket = TcpStream::connect(&address).await.unwrap();
        let request =
            format!("OPTIONS {target} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let (response, _) = read_until_closed(&mut socket, WAIT).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{target}: {response}");
    }
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_refuses_new_requests_and_finishes_the_ones_in_flight() {
    let spot = mock(MockConfig { ttft_ms: 5.0, itl_ms: 20.0, ..MockConfig::default() }).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let mut stream = router.chat(&chat_body(25, true)).send().await.unwrap();
    stream.chunk().await.unwrap();
    let drained = router.drain(Duration::from_secs(10));
    let refused = router.chat(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["x-tandemn-error"], "shutting_down");
    let mut text = String::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("[DONE]"), "the stream in flight was cut: {text}");
    tokio::time::timeout(WAIT, drained).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_while_it_is_written_is_sent_again_on_a_new_connection() {
    // The backend resets a pooled connection while the (large) body is still being
    // written: it never had the whole request, so a new connection carries it.
    let script = vec![Reply::KeepAlive(OK_EMPTY_JSON), Reply::ResetAfterHead, Reply::KeepAlive(OK_EMPTY_JSON)];
    let upstream = ScriptedUpstream::start(script).await;
    let backend = tandemn_config::api::BackendSpec {
        id: None,
        tier: Tier::Serverless,
        url: upstream.url(),
        capacity: 8,
        auth: Default::default(),
        draining: false,
    };
    let mut config = settings();
    config.max_body_bytes = 64 << 20;
    let router = TestRouter::start(config, &[backend]);
    assert_eq!(router.chat(&chat_body(2, false)).send().await.unwrap().status(), 200);
    let big =
        serde_json::json!({"model": "mock-model", "messages": [{"role": "user", "content": "x".repeat(32 << 20)}]});
    let response = router.chat(&big).send().await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", upstream.received().len());
    let seen = upstream.received();
    assert_eq!(seen.len(), 3);
    assert!(seen[1].starts_with("(reset after head)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_before_a_half_close_are_all_answered() {
    let spot = mock(MockConfig { ttft_ms: 400.0, itl_ms: 1.0, ..MockConfig::default() }).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let address = address(&router.url);
    let mut socket = TcpStream::connect(&address).await.unwrap();
    let requests: String = (3..6)
        .map(|tokens| {
            let body = serde_json::json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": tokens});
            chat_request(&address, &body.to_string())
        })
        .collect();
    socket.write_all(requests.as_bytes()).await.unwrap();
    socket.shutdown().await.unwrap();
    let (answers, _) = read_until_closed(&mut socket, WAIT).await;
    for tokens in 3..6 {
        assert!(answers.contains(&format!("\"completion_tokens\":{tokens}")), "answer {tokens} missing: {answers}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_limit_is_cut_even_in_one_write() {
    let router = TestRouter::start(settings(), &[]);
    let address = address(&router.url);
    let mut socket = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "GET /v1/models HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n{}\r\n",
        format!("X-Padding: {}\r\n", "a".repeat(1000)).repeat(80)
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let (response, closed) = read_until_closed(&mut socket, WAIT).await;
    assert!(
        closed && !response.contains(" 503 ") && !response.contains(" 200 "),
        "an 80 KiB head was served: {response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_cannot_speak_for_the_router() {
    let forged = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Tandemn-Error: forged\r\n\
                  x-tandemn-backend: spot/elsewhere\r\nContent-Length: 2\r\n\r\n{}";
    let (router, _upstream) = scripted_router(vec![Reply::KeepAlive(forged)], "").await;
    let response = router.chat(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-tandemn-error").is_none(), "{:?}", response.headers());
    assert!(backend_of(&response).starts_with("serverless/127.0.0.1:"), "{}", backend_of(&response));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_is_refused_before_any_go_ahead() {
    let (router, upstream) = scripted_router(vec![Reply::KeepAlive(OK_EMPTY_JSON)], "").await;
    let address = address(&router.url);
    let mut socket = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
         Content-Length: 999999999\r\nExpect: 100-continue\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let (response, _) = read_until_closed(&mut socket, WAIT).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(upstream.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_that_could_forge_log_fields_is_replaced() {
    let spot = mock(fast()).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let forged = "0 method=POST status=200 backend=\"spot/10.0.0.5:8000\"";
    let response = router.chat(&chat_body(2, false)).header("x-request-id", forged).send().await.unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, forged);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let kept = router.chat(&chat_body(2, false)).header("x-request-id", "client-id-42").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "client-id-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_a_backend_to_come_back_instead_of_failing() {
    // A deployment between a dead serverless endpoint and its replacement: nothing is
    // usable for a moment. The request waits (up to queue_timeout) instead of failing.
    let (dead, spot) = (mock(fast()).await, mock(fast()).await);
    let router = TestRouter::start(settings(), &[spec(Tier::Serverless, &dead, 8)]);
    // The endpoint died and left the table; its replacement is not deployed yet.
    router.router.state.publish(&[]).unwrap();
    let waiting = tokio::spawn(router.chat(&chat_body(2, false)).send());
    // The request is in; then the provisioner publishes the new endpoint.
    for _ in 0..100 {
        if router.router.metrics.arrived.load(std::sync::atomic::Ordering::Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    router.router.state.publish(&[spec(Tier::Serverless, &spot, 8)]).unwrap();
    let response = waiting.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.headers().get("x-tandemn-error"));
}
