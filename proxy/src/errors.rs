//! Every response the router makes itself, in one place: OpenAI-shaped JSON bodies and
//! an `x-tandemn-error` header, so clients and benches can tell router failures from
//! upstream ones. What reaches a client is a fixed message per kind plus the request id;
//! internal details (upstream addresses, transport errors) are carried for the log only.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use serde_json::{Value, json};

/// A request the router answers itself instead of an upstream. `Display` is the message
/// the client sees: it never includes the details some variants carry for the log
/// (see [`ProxyError::detail`]).
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
    /// No upstream answered usably. The detail (connect errors with addresses, the last
    /// status) is for the log only.
    #[error("no upstream could serve the request; retry shortly")]
    UpstreamUnavailable(String),
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    /// The client's own mistake, explained: the message is shown as is, so it must
    /// contain nothing but what the client (or, for the admin API, the operator) sent.
    #[error("{0}")]
    BadRequest(String),
    /// The request body could not be read (the client's connection failed). The detail
    /// is the transport error, for the log only.
    #[error("the request body could not be read")]
    BodyUnreadable(String),
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
            ProxyError::BodyUnreadable(_) => (400, "bad_request", None),
            ProxyError::NotFound => (404, "not_found", None),
            ProxyError::MethodNotAllowed => (405, "method_not_allowed", None),
            ProxyError::RequestTimeout => (408, "request_timeout", None),
            ProxyError::ShuttingDown => (503, "shutting_down", Some(1)),
            ProxyError::BrokenResponse => (502, "upstream_failed_mid_response", None),
        }
    }

    /// What the log line should add to the kind: the internal detail the client is never
    /// shown, if this error carries one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            ProxyError::UpstreamUnavailable(detail) | ProxyError::BodyUnreadable(detail) => Some(detail),
            // Listed, not `_`: a new variant must decide what of it the client may see.
            ProxyError::Unauthorized
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::Overloaded
            | ProxyError::NoCapacity
            | ProxyError::NoBackends
            | ProxyError::UpstreamTimeout
            | ProxyError::BadRequest(_)
            | ProxyError::NotFound
            | ProxyError::MethodNotAllowed
            | ProxyError::RequestTimeout
            | ProxyError::ShuttingDown
            | ProxyError::BrokenResponse => None,
        }
    }

    pub fn response(&self, request_id: &str) -> (ResponseHeader, Bytes) {
        let (status, kind, retry_after) = self.parts();
        let body = error_body(&self.to_string(), kind, status, Some(request_id)).to_string();
        let mut header = ResponseHeader::build(status, Some(5)).expect("router statuses are valid");
        let headers = [
            ("content-type", "application/json".to_string()),
            ("content-length", body.len().to_string()),
            ("x-tandemn-error", kind.to_string()),
        ];
        for (name, value) in headers {
            header.insert_header(name, value).expect("router header values are valid");
        }
        // The id comes from the client's `x-request-id` when it sent one; a value that is
        // not a valid header is still in the body.
        let _ = header.insert_header("x-request-id", request_id);
        if let Some(seconds) = retry_after {
            header.insert_header("retry-after", seconds.to_string()).expect("a number is a valid header");
        }
        (header, Bytes::from(body))
    }
}

/// The OpenAI error object, `{"error": {"message", "type", "param", "code"}}`, with the
/// request id in the message (clients show messages, not fields) and as `request_id`.
pub fn error_body(message: &str, kind: &str, status: u16, request_id: Option<&str>) -> Value {
    match request_id {
        Some(id) => json!({"error": {
            "message": format!("{message} (request id {id})"), "type": kind, "param": null, "code": status,
            "request_id": id,
        }}),
        None => json!({"error": {"message": message, "type": kind, "param": null, "code": status}}),
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
        assert!(body["error"]["param"].is_null());
        assert_eq!(body["error"]["request_id"], "req-1");
    }

    #[test]
    fn details_reach_the_log_but_never_the_client() {
        let leaky = "Fail to connect to 127.0.0.1:1 (Connection refused) ConnectRefused context: peer";
        for error in [
            ProxyError::UpstreamUnavailable(leaky.to_string()),
            ProxyError::BodyUnreadable(format!("ReadError: {leaky}")),
        ] {
            assert!(error.detail().unwrap().contains("127.0.0.1:1"), "{error:?}");
            let (header, body) = error.response("3f2a");
            let text = std::str::from_utf8(&body).unwrap();
            for leak in ["127.0.0.1", ":1", "Fail to connect", "ConnectRefused", "ReadError", "context"] {
                assert!(!text.contains(leak), "{leak:?} leaked into {text}");
            }
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(json["error"]["request_id"], "3f2a");
            assert!(json["error"]["message"].as_str().unwrap().ends_with("(request id 3f2a)"), "{text}");
            assert_eq!(json["error"]["code"], header.status.as_u16());
        }
        assert_eq!(ProxyError::NoBackends.detail(), None);
        let (_, body) = ProxyError::BadRequest("`capacity` must be a number".into()).response("r");
        assert!(std::str::from_utf8(&body).unwrap().contains("`capacity` must be a number (request id r)"));
    }
}
