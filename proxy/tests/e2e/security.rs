use tandemn_bench::mock_vllm::MockConfig;
use tandemn_config::api::{BackendAuth, BackendSpec, Secret, Tier};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_need_a_key_and_backends_get_their_own() {
    let guarded = mock(MockConfig { api_key: Some("backend-secret".into()), ..fast() }).await;
    let backend = BackendSpec {
        id: None,
        tier: Tier::Spot,
        url: guarded.url(),
        capacity: 8,
        auth: BackendAuth::Bearer { token: Secret::new("backend-secret") },
        draining: false,
    };
    let router = TestRouter::start(settings(), &[backend]);
    let url = format!("{}/v1/chat/completions", router.url);
    let client = router.client();
    let missing = client.post(&url).json(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["x-tandemn-error"], "unauthorized");
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["type"], "unauthorized");
    let wrong = client.post(&url).bearer_auth("nope").json(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    // Either key works (rotation), through either header; the backend only ever sees its own.
    let bearer = client.post(&url).bearer_auth(CLIENT_KEY).json(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(bearer.status(), 200);
    let header = client.post(&url).header("x-api-key", "client-key-2").json(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(header.status(), 200);
    assert_eq!(guarded.stats().completed, 2);
    assert_eq!(guarded.stats().rejected, 0, "the client's key never reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_the_limit_covers_whole_streams() {
    let slow = mock(MockConfig { itl_ms: 50.0, ..fast() }).await;
    let mut config = settings();
    config.max_body_bytes = 1000;
    config.max_concurrent_requests = 1;
    let router = TestRouter::start(config, &[spec(Tier::Spot, &slow, 8)]);
    let big = serde_json::json!({"model": "mock-model", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let refused = router.chat(&big).send().await.unwrap();
    assert_eq!(refused.status(), 413);
    assert_eq!(refused.headers()["x-tandemn-error"], "request_too_large");

    let mut stream = router.chat(&chat_body(20, true)).send().await.unwrap();
    stream.chunk().await.unwrap();
    // Headers were sent long ago, but the stream still holds the one admission place.
    let overloaded = router.chat(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(overloaded.status(), 429);
    assert_eq!(overloaded.headers()["retry-after"], "1");
    let body: serde_json::Value = overloaded.json().await.unwrap();
    assert_eq!(body["error"]["type"], "router_overloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backends_is_a_503() {
    let router = TestRouter::start(settings(), &[]);
    let response = router.chat(&chat_body(2, false)).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-tandemn-error"], "no_backends");
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_cannot_climb_out_of_the_base_path() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let spot = mock(fast()).await;
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &spot, 8)]);
    let address = router.url.trim_start_matches("http://").to_string();
    // Raw requests: HTTP clients normalise dot segments away before sending.
    for path in ["/v1/../admin", "/v1/%2e%2e/admin", "/./v1/models", "http://elsewhere/v1/models"] {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        socket.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
    }
    assert_eq!(spot.stats().requests, 0);
}
