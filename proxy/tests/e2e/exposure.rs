//! What clients may learn from the router's own answers: an OpenAI-shaped error with a
//! request id, never upstream addresses or transport errors (those stay in the log).

use tandemn_bench::mock_vllm::MockConfig;
use tandemn_config::api::{BackendAuth, BackendSpec, Tier};

use crate::harness::*;

/// Transport wording that must stay in the log.
const INTERNALS: [&str; 6] = ["127.0.0.1", "Fail to", "refused", "Connect", "context", "pingora"];

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_gets_a_generic_502_with_the_request_id() {
    let port = closed_port();
    let dead = BackendSpec {
        id: None,
        tier: Tier::Spot,
        url: format!("http://127.0.0.1:{port}"),
        capacity: 4,
        auth: BackendAuth::None,
        draining: false,
    };
    let router = TestRouter::start(settings(), &[dead]);
    for given in [Some("exposure-test-1"), None] {
        let mut request = router.chat(&chat_body(2, false));
        if let Some(id) = given {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 502);
        assert_eq!(response.headers()["x-tandemn-error"], "upstream_unavailable");
        let id = response.headers()["x-request-id"].to_str().unwrap().to_string();
        if let Some(given) = given {
            assert_eq!(id, given, "the client's request id is kept");
        }
        let text = response.text().await.unwrap();
        for leak in INTERNALS {
            assert!(!text.to_ascii_lowercase().contains(&leak.to_ascii_lowercase()), "{leak:?} leaked: {text}");
        }
        if given.is_some() {
            // A generated id is random hex and may contain the digits by chance.
            assert!(!text.contains(&port.to_string()), "the port leaked: {text}");
        }
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        let error = &body["error"];
        assert_eq!((error["type"].as_str(), error["code"].as_u64()), (Some("upstream_unavailable"), Some(502)));
        assert!(error.as_object().unwrap().contains_key("param") && error["param"].is_null(), "{text}");
        assert_eq!(error["request_id"], id.as_str());
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(&format!("(request id {id})")), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_ends_with_an_event_that_names_no_internals() {
    let dying = mock(MockConfig { die_after_chunks: Some(2), itl_ms: 10.0, ..fast() }).await;
    let port = dying.addr().port().to_string();
    let router = TestRouter::start(settings(), &[spec(Tier::Spot, &dying, 8)]);
    let response = router.chat(&chat_body(10, true)).header("x-request-id", "exposure-test-2").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let last = body.split_terminator("\n\n").last().unwrap();
    let event: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["error"]["type"], "upstream_error", "{body}");
    assert!(event["error"]["param"].is_null());
    assert_eq!(event["error"]["request_id"], "exposure-test-2");
    let message = event["error"]["message"].as_str().unwrap();
    for leak in INTERNALS.iter().chain(&[port.as_str(), "mid-stream:"]) {
        assert!(!message.to_ascii_lowercase().contains(&leak.to_ascii_lowercase()), "{leak:?} leaked: {message}");
    }
}
