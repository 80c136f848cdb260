//! Test infrastructure: the router on its own thread through the same `server::build`
//! the binary uses, mock-vllm upstreams on 127.0.0.1:0, and small client helpers.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tandemn_bench::mock_vllm::{MockConfig, MockVllm};
use tandemn_config::api::{BackendAuth, BackendSpec, Secret, Tier};
use tandemn_proxy::server::{self, ManualShutdown, ServerSettings};
use tandemn_proxy::{Router, RouterSettings, RoutingState};

pub const CLIENT_KEY: &str = "client-key-1";
pub const ADMIN_KEY: &str = "admin-key-1";

pub fn settings() -> RouterSettings {
    RouterSettings {
        api_keys: vec![Secret::new(CLIENT_KEY), Secret::new("client-key-2")],
        admin_key: Some(Secret::new(ADMIN_KEY)),
        health_keys: Vec::new(),
        public: false,
        health_public: false,
        connect_timeout: Duration::from_secs(2),
        first_byte_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        max_body_bytes: 4 << 20,
        max_concurrent_requests: 1024,
        queue_timeout: Duration::from_millis(500),
        max_attempts: 3,
        keepalive_timeout: Duration::from_secs(60),
        header_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(30),
        max_connections: 10_000,
    }
}

pub fn spec(tier: Tier, mock: &MockVllm, capacity: u32) -> BackendSpec {
    BackendSpec { id: None, tier, url: mock.url(), capacity, auth: BackendAuth::None, draining: false }
}

/// The router, running until dropped.
pub struct TestRouter {
    pub url: String,
    pub router: Arc<Router>,
    shutdown: ManualShutdown,
    thread: Option<JoinHandle<()>>,
}

impl TestRouter {
    pub fn start(settings: RouterSettings, backends: &[BackendSpec]) -> Self {
        let state = Arc::new(RoutingState::default());
        state.publish(backends).unwrap();
        let router = Arc::new(Router::new(state, settings));
        let listen = reserve_port();
        let mut server_settings = ServerSettings::new(listen);
        server_settings.threads = 2;
        server_settings.grace_period = Duration::from_secs(1);
        server_settings.probe_interval = Duration::from_millis(100);
        server_settings.probe_timeout = Duration::from_millis(500);
        let server = server::build(router.clone(), &server_settings);
        let shutdown = ManualShutdown::default();
        let signal = shutdown.clone();
        let thread = std::thread::spawn(move || server::run(server, Box::new(signal)));
        wait_until_listening(listen);
        Self { url: format!("http://{listen}"), router, shutdown, thread: Some(thread) }
    }

    /// Starts a graceful shutdown, as SIGTERM would: no new connections, in-flight
    /// requests finish within the grace period.
    pub fn begin_shutdown(&self) {
        self.shutdown.fire();
    }

    /// Starts draining as SIGTERM does (new requests refused); resolves once nothing is
    /// in flight or `grace` has passed.
    pub fn drain(&self, grace: Duration) -> tokio::task::JoinHandle<()> {
        let router = self.router.clone();
        tokio::spawn(async move { server::drain(&router, grace, std::future::pending()).await })
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
    }

    pub fn chat(&self, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.client().post(format!("{}/v1/chat/completions", self.url)).bearer_auth(CLIENT_KEY).json(body)
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client().get(format!("{}{path}", self.url)).bearer_auth(ADMIN_KEY).send().await.unwrap()
    }

    pub async fn health(&self) -> serde_json::Value {
        self.admin_get("/router/health").await.json().await.unwrap()
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.shutdown.fire();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Pingora binds its own listener from an address, so the test asks the OS for a free
/// port on 127.0.0.1:0 and hands it over (the window in which another socket could take
/// it is a few microseconds; ports are not reused that fast).
fn reserve_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Connects once the router listens, and waits until the router has closed that probe
/// connection, so it holds none of the router's connection places afterwards.
fn wait_until_listening(addr: SocketAddr) {
    for _ in 0..500 {
        if let Ok(mut probe) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            use std::io::Read;
            let _ = probe.shutdown(std::net::Shutdown::Write);
            let _ = probe.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = probe.read_to_end(&mut Vec::new());
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the router never listened on {addr}");
}

pub async fn mock(config: MockConfig) -> MockVllm {
    MockVllm::start(config).await.unwrap()
}

pub fn fast() -> MockConfig {
    MockConfig { ttft_ms: 5.0, itl_ms: 1.0, ..MockConfig::default() }
}

pub fn chat_body(max_tokens: u32, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": max_tokens, "stream": stream, "stream_options": {"include_usage": true}})
}

pub fn backend_of(response: &reqwest::Response) -> String {
    response.headers().get("x-tandemn-backend").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}
