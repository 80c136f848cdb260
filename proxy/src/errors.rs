//! Every response the router makes itself, in one place: OpenAI-shaped JSON bodies and
//! an `x-tandemn-error` header, so clients and benches can tell router failures from
//! upstream ones.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use serde_json::json;

/// A request the router answers itself instead of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the router is at its limit of concurrent requests")]
    Overloaded,
    #[error("every backend is at capacity; retry shortly")]
    NoCapacity,
    #[error("no backend is available")]
    NoBackends,
    #[error("the upstream could not be reached: {0}")]
    UpstreamUnavailable(String),
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("the router is shutting down; retry shortly")]
    ShuttingDown,
    /// The upstream failed after the response started; the connection is closed so the
    /// client cannot take a truncated body for a whole one.
    #[error("the upstream failed after the response started")]
    BrokenResponse,
}

impl ProxyError {
    /// Status, `x-tandemn-error` kind and `Retry-After` seconds.
    pub fn parts(&self) -> (u16, &'static str, Option<u32>) {
        match self {
            ProxyError::Unauthorized => (401, "unauthorized", None),
            ProxyError::BodyTooLarge { .. } => (413, "request_too_large", None),
            ProxyError::Overloaded => (429, "router_overloaded", Some(1)),
            ProxyError::NoCapacity => (503, "no_capacity", Some(1)),
            ProxyError::NoBackends => (503, "no_backends", Some(5)),
            ProxyError::UpstreamUnavailable(_) => (502, "upstream_unavailable", None),
            ProxyError::UpstreamTimeout => (504, "upstream_timeout", None),
            ProxyError::BadRequest(_) => (400, "bad_request", None),
            ProxyError::NotFound => (404, "not_found", None),
            ProxyError::MethodNotAllowed => (405, "method_not_allowed", None),
            ProxyError::RequestTimeout => (408, "request_timeout", None),
            ProxyError::ShuttingDown => (503, "shutting_down", Some(1)),
            ProxyError::BrokenResponse => (502, "upstream_failed_mid_response", None),
        }
    }

    pub fn response(&self, request_id: &str) -> (ResponseHeader, Bytes) {
        let (status, kind, retry_after) = self.parts();
        let body = json!({"error": {"message": self.to_string(), "type": kind, "code": status}}).to_string();
        let mut header = ResponseHeader::build(status, Some(5)).expect("router statuses are valid");
        let headers = [
            ("content-type", "application/json".to_string()),
            ("content-length", body.len().to_string()),
            ("x-tandemn-error", kind.to_string()),
            ("x-request-id", request_id.to_string()),
        ];
        for (name, value) in headers {
            header.insert_header(name, value).expect("router header values are valid");
        }
        if let Some(seconds) = retry_after {
            header.insert_header("retry-after", seconds.to_string()).expect("a number is a valid header");
        }
        (header, Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_openai_shaped_and_tagged() {
        let (header, body) = ProxyError::Overloaded.response("req-1");
        assert_eq!(header.status.as_u16(), 429);
        assert_eq!(header.headers["retry-after"], "1");
        assert_eq!(header.headers["x-tandemn-error"], "router_overloaded");
        assert_eq!(header.headers["x-request-id"], "req-1");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "router_overloaded");
        assert_eq!(body["error"]["code"], 429);
        assert!(body["error"]["message"].as_str().unwrap().contains("limit"));
    }
}
