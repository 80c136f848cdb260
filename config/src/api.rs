//! The plain data contract between the planes: the backends the provisioner (or a
//! config file, or the admin API) publishes to the proxy. No behaviour lives here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which kind of capacity a backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Spot,
    Serverless,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Spot => "spot",
            Tier::Serverless => "serverless",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret value. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the router authenticates to a backend. The client's own credentials never reach it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendAuth {
    #[default]
    None,
    /// `Authorization: Bearer <token>` (RunPod, vLLM `--api-key`).
    Bearer { token: Secret },
    /// Modal's proxy auth: `Modal-Key` and `Modal-Secret`.
    Modal { key: Secret, secret: Secret },
    /// A Google-signed ID token in `X-Serverless-Authorization` (private Cloud Run).
    CloudRun { id_token: Secret },
}

/// One backend to route to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub tier: Tier,
    /// `http(s)://host[:port][/base-path]`; request paths are appended to the base path.
    pub url: String,
    /// Concurrent requests this backend takes before traffic moves on.
    pub capacity: u32,
    #[serde(default)]
    pub auth: BackendAuth,
    /// Leaving: takes no new requests, finishes the ones it has.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// What the provisioner reads from the router each tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadSnapshot {
    /// Requests that asked for a backend since the router started (spilled and refused
    /// ones included): the demand, whatever served it.
    pub arrived: u64,
    /// Requests in flight now, all tiers.
    pub inflight: u64,
    /// The most requests in flight at once since the previous snapshot.
    pub peak_inflight: u64,
    /// Requests answered by each tier since the router started.
    pub spot_requests: u64,
    pub serverless_requests: u64,
    pub backends: Vec<BackendLoad>,
}

/// Where the provisioner publishes the backends it runs (the proxy in-process, or a
/// router elsewhere through its admin API).
pub trait RouteSink: Send + Sync {
    fn publish(&self, backends: &[BackendSpec]) -> Result<(), String>;
}

/// Where the provisioner reads the load from.
pub trait LoadSource: Send + Sync {
    fn snapshot(&self) -> LoadSnapshot;
}

/// One backend's share of the load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendLoad {
    pub tier: Tier,
    pub url: String,
    pub inflight: u32,
    /// Whether active probes see it healthy (spot) or it is usable (serverless).
    pub ready: bool,
}

/// A parsed backend URL: only `http` and `https` are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Without a trailing `/`; empty for the root.
    pub base_path: String,
}

impl BackendUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!("`{text}` must start with http:// or https://"));
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if authority.contains('@') || path.contains(['?', '#']) {
            // Not repeated: what follows `@` or `?` is often a secret.
            return Err("a backend URL must not carry credentials, a query or a fragment".to_string());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            // A bracketed IPv6 literal without a port has ':' only inside the brackets.
            Some((host, port)) if !port.contains(']') => {
                let port = port.parse().map_err(|_| format!("`{text}` has an invalid port `{port}`"))?;
                (host, port)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        let base_path = path.trim_end_matches('/');
        let base_path = if base_path.is_empty() { String::new() } else { format!("/{base_path}") };
        Ok(Self { tls, host: host.to_string(), port, base_path })
    }

    /// `host:port`, for connecting and for the `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.base_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls_parse_and_normalize() {
        let url = BackendUrl::parse("https://api.runpod.ai/v2/abc/openai/").unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port, url.base_path.as_str()),
            (true, "api.runpod.ai", 443, "/v2/abc/openai")
        );
        let url = BackendUrl::parse("http://127.0.0.1:8001").unwrap();
        assert_eq!((url.port, url.base_path.as_str(), url.authority()), (8001, "", "127.0.0.1:8001".to_string()));
        assert_eq!(url.to_string(), "http://127.0.0.1:8001");
        let v6 = BackendUrl::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.authority()), ("::1", 9000, "[::1]:9000".to_string()));
        for bad in ["ftp://x", "127.0.0.1:80", "http://", "http://h:port", "http://u:p@h", "http://h/?q=1"] {
            assert!(BackendUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let auth = BackendAuth::Bearer { token: Secret::new("sk-live-123") };
        assert!(!format!("{auth:?}").contains("sk-live"));
    }
}
