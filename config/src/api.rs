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

/// A secret value. Its `Debug` never shows it, and no message shows it.
///
/// A secret from outside (a file, a variable, a flag, the admin API's JSON) goes through
/// [`Secret::parse`], so it is never empty: an empty key would match an empty token.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret the program generated itself, such as a random admin key. Values from
    /// outside go through [`Secret::parse`] instead.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A secret from outside. Refuses an empty or whitespace-only value, and one with a
    /// control character (a line break, say), which could never be sent in a header.
    /// The error never repeats the value.
    pub fn parse(value: impl Into<String>) -> Result<Self, String> {
        let value = value.into();
        if value.trim().is_empty() {
            return Err("a secret must not be empty or only whitespace".to_string());
        }
        if value.chars().any(char::is_control) {
            return Err("a secret must be one line without control characters (the value is not shown)".to_string());
        }
        Ok(Self(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Secret::parse(value).map_err(serde::de::Error::custom)
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
    /// Who the backend is, for both planes: the provisioner names its replicas and
    /// endpoints; without one the router uses `tier/host:port/base` of the parsed URL, so
    /// two spellings of one URL (`https://x`, `https://x:443`) are one backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<BackendId>,
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
    pub id: BackendId,
    pub tier: Tier,
    pub url: String,
    pub inflight: u32,
    /// Whether active probes see it healthy (spot) or it is usable (serverless).
    pub ready: bool,
}

/// A backend's identity, shared by the router and the provisioner: load and health are
/// joined to replicas by it, never by URL text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackendId(String);

impl BackendId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest backend URL accepted: its id goes into every metric label and log line.
pub const MAX_BACKEND_URL: usize = 2048;

/// A parsed backend URL: `http(s)://host[:port][/base-path]`, strictly checked so that
/// its id is safe in metric labels and logs, and any request path joins its base path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    pub tls: bool,
    /// A lower-case DNS name, an IPv4 address, or an IPv6 address (without brackets), each
    /// in canonical form.
    pub host: String,
    /// 1..=65535; the scheme's default when the URL names none.
    pub port: u16,
    /// Without a trailing `/`; empty for the root. Only RFC 3986 path characters, no empty,
    /// `.` or `..` segments, so `{base_path}/v1/...` is always a valid request target.
    pub base_path: String,
}

impl BackendUrl {
    /// Parses and checks a backend URL. The error says what is wrong and at which
    /// character, and never repeats what follows `@`, `?` or `#`, which may be a secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let too_long = || format!("a backend URL has at most {MAX_BACKEND_URL} characters");
        // The limit is on the URL as shown (with its port), checked at the end; this only
        // bounds the work on absurd input.
        if text.len() > 2 * MAX_BACKEND_URL {
            return Err(too_long());
        }
        let (tls, authority_at) = if text.starts_with("http://") {
            (false, "http://".len())
        } else if text.starts_with("https://") {
            (true, "https://".len())
        } else {
            return Err(scheme_problem(text));
        };
        let rest = &text[authority_at..];
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        if authority.contains('@') {
            return Err("a backend URL must not carry credentials (`user:password@`); give backend secrets \
                        through its auth settings (the URL is not shown)"
                .to_string());
        }
        let path_at = authority_at + authority_len;
        let path = &text[path_at..];
        if let Some(cut) = path.find(['?', '#']) {
            let part = if path[cut..].starts_with('?') { "a query (`?…`)" } else { "a fragment (`#…`)" };
            return Err(format!(
                "a backend URL must not have {part}; what follows it is not shown (it may be a secret)"
            ));
        }
        let (host, port) = parse_authority(text, authority_at, authority, if tls { 443 } else { 80 })?;
        let base_path = parse_base_path(text, path_at, path)?;
        let url = Self { tls, host, port, base_path };
        if url.to_string().len() > MAX_BACKEND_URL {
            return Err(too_long());
        }
        Ok(url)
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

/// Why `text` does not start with a supported scheme, naming the scheme only when it
/// looks like one (anything else may be a pasted secret).
fn scheme_problem(text: &str) -> String {
    if text.starts_with(char::is_whitespace) {
        return "a backend URL must not start with whitespace".to_string();
    }
    let scheme = text.split_once("://").map(|(scheme, _)| scheme).filter(|scheme| {
        // Letters only: a short word such as `ftp` is safe to repeat, a token is not.
        (1..=10).contains(&scheme.len()) && scheme.chars().all(|c| c.is_ascii_alphabetic())
    });
    match scheme {
        Some(scheme) => {
            format!("the scheme `{scheme}` is not supported; a backend URL starts with http:// or https://")
        }
        None => "a backend URL must start with http:// or https://".to_string(),
    }
}

/// The 1-based character position of byte `at` in `text`, for messages.
fn position(text: &str, at: usize) -> usize {
    text[..at].chars().count() + 1
}

/// A character named for a message; a single character is never a secret.
fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".to_string(),
        '\t' => "a tab".to_string(),
        '"' => "a double quote".to_string(),
        '\\' => "a backslash".to_string(),
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        c if !c.is_ascii() => format!("a non-ASCII character (U+{:04X})", u32::from(c)),
        c => format!("`{c}`"),
    }
}

const HOST_RULE: &str = "a host is a DNS name (dot-separated labels of letters, digits and `-`), an IPv4 \
                         address, or an IPv6 address in brackets such as `[::1]`";

/// Splits `authority` (which starts at byte `at` of `text`) into a canonical host and a port.
fn parse_authority(text: &str, at: usize, authority: &str, default_port: u16) -> Result<(String, u16), String> {
    if authority.is_empty() {
        return Err("a backend URL needs a host after `//`".to_string());
    }
    let (host, port) = if let Some(inside) = authority.strip_prefix('[') {
        let Some((literal, after)) = inside.split_once(']') else {
            return Err("the IPv6 address is not closed with `]`".to_string());
        };
        let address: std::net::Ipv6Addr =
            literal.parse().map_err(|_| "the host in brackets is not a valid IPv6 address".to_string())?;
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => {
                    let offset = at + 1 + literal.len() + 1;
                    return Err(format!(
                        "the URL has {} at character {} after the IPv6 address; expected `:port` or a path",
                        after.chars().next().map_or_else(String::new, describe_char),
                        position(text, offset)
                    ));
                }
            },
        };
        (address.to_string(), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.contains(':') {
            return Err("an IPv6 address must be written in brackets, as in `http://[::1]:8000`".to_string());
        }
        (parse_host(text, at, host)?, port)
    };
    let port = match port {
        None => default_port,
        Some("") => return Err("the port after `:` is empty".to_string()),
        Some(digits) if digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()) => {
            match digits.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("the port must be from 1 to 65535, got {digits}")),
            }
        }
        Some(_) => return Err("the port must be a number from 1 to 65535 (the value is not shown)".to_string()),
    };
    Ok((host, port))
}

/// Checks a DNS name or an IPv4 address starting at byte `at` of `text`; lower-cases names.
fn parse_host(text: &str, at: usize, host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("a backend URL needs a host before the `:port`".to_string());
    }
    if let Ok(address) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(address.to_string());
    }
    if let Some((offset, c)) = host.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(format!(
            "the host has {} at character {}; {HOST_RULE}",
            describe_char(c),
            position(text, at + offset)
        ));
    }
    if host.len() > 253 {
        return Err(format!("the host name has {} characters, at most 253 are allowed", host.len()));
    }
    let mut offset = 0;
    let mut last = "";
    for label in host.split('.') {
        let here = position(text, at + offset);
        if label.is_empty() {
            return Err(format!(
                "the host has an empty label at character {here} (`..`, or a leading or trailing `.`)"
            ));
        }
        if label.len() > 63 {
            return Err(format!(
                "the host's label at character {here} has {} characters, at most 63 are allowed",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the host's label at character {here} starts or ends with `-`"));
        }
        offset += label.len() + 1;
        last = label;
    }
    // `1.2.3` or `256.1.1.1` would read as an address to some resolvers and a name to others.
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the host is not a valid IPv4 address (a DNS name cannot end in an all-digit label)".to_string());
    }
    Ok(host.to_ascii_lowercase())
}

/// RFC 3986 `pchar` without `%` (checked apart): unreserved, sub-delims, `:` and `@`.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '_' | '~' | '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';' | '=' | ':' | '@'
        )
}

/// Checks the path (empty, or starting with `/`) that starts at byte `at` of `text`, and
/// returns it without its trailing `/`.
fn parse_base_path(text: &str, at: usize, path: &str) -> Result<String, String> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let Some(body) = trimmed.strip_prefix('/') else {
        return Ok(String::new());
    };
    let mut offset = at + 1;
    for segment in body.split('/') {
        if segment.is_empty() {
            return Err(format!("the base path has an empty segment (`//`) at character {}", position(text, offset)));
        }
        let bytes = segment.as_bytes();
        for (i, c) in segment.char_indices() {
            let here = || position(text, offset + i);
            if c == '%' {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err(format!(
                        "the base path has a `%` at character {} without two hex digits after it",
                        here()
                    ));
                }
            } else if !is_path_char(c) {
                return Err(format!(
                    "the base path has {} at character {}; a path takes letters, digits, `-._~!$&'()*+,;=:@/` \
                     and `%` escapes",
                    describe_char(c),
                    here()
                ));
            }
        }
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(format!("the base path has a `.` or `..` segment at character {}", position(text, offset)));
        }
        offset += segment.len() + 1;
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let canonical = BackendUrl::parse("http://[0:0::1]/").unwrap();
        assert_eq!((canonical.host.as_str(), canonical.port, canonical.base_path.as_str()), ("::1", 80, ""));
        let named = BackendUrl::parse("https://Workspace--App-Fn.Modal.RUN/v1%20x/a:b@c/").unwrap();
        assert_eq!((named.host.as_str(), named.base_path.as_str()), ("workspace--app-fn.modal.run", "/v1%20x/a:b@c"));
        assert_eq!(BackendUrl::parse("http://localhost:65535").unwrap().port, 65535);
    }

    #[test]
    fn backend_urls_are_checked_strictly() {
        let cases: &[(&str, &str)] = &[
            ("ftp://x", "the scheme `ftp` is not supported"),
            ("HTTP://x", "the scheme `HTTP` is not supported"),
            ("127.0.0.1:80", "must start with http:// or https://"),
            (" http://h", "must not start with whitespace"),
            ("http://", "needs a host"),
            ("http://:80", "needs a host before the `:port`"),
            ("http://h:", "the port after `:` is empty"),
            ("http://h:0", "the port must be from 1 to 65535, got 0"),
            ("http://h:65536", "the port must be from 1 to 65535, got 65536"),
            ("http://h:port", "the port must be a number from 1 to 65535"),
            ("http://h:123456", "the port must be a number from 1 to 65535"),
            ("http://h/a b", "the base path has a space at character 11"),
            ("http://h/a\"b", "the base path has a double quote at character 11"),
            ("http://h/a\\b", "the base path has a backslash at character 11"),
            ("http://h/a\nb", "the base path has a control character (U+000A) at character 11"),
            ("http://h/é", "the base path has a non-ASCII character (U+00E9) at character 10"),
            ("http://h/a<b", "the base path has `<` at character 11"),
            ("http://h/a%zz", "`%` at character 11 without two hex digits"),
            ("http://h/a%2", "`%` at character 11 without two hex digits"),
            ("http://h//x", "empty segment (`//`) at character 10"),
            ("http://h/x//", "empty segment (`//`) at character 12"),
            ("http://h/a/../b", "a `.` or `..` segment at character 12"),
            ("http://h/./b", "a `.` or `..` segment at character 10"),
            ("http://h/a/%2E%2e", "a `.` or `..` segment at character 12"),
            ("http://h/a/.%2E/", "a `.` or `..` segment at character 12"),
            ("http://h a", "the host has a space at character 9"),
            ("http://h_a", "the host has `_` at character 9"),
            ("http://hö", "the host has a non-ASCII character (U+00F6) at character 9"),
            ("http://a..b", "empty label at character 10"),
            ("http://.a", "empty label at character 8"),
            ("http://a./x", "empty label at character 10"),
            ("http://-a", "starts or ends with `-`"),
            ("http://a-.b", "starts or ends with `-`"),
            ("http://1.2.3", "not a valid IPv4 address"),
            ("http://256.1.1.1", "not a valid IPv4 address"),
            ("http://01.2.3.4", "not a valid IPv4 address"),
            ("http://::1", "must be written in brackets"),
            ("http://[::1", "not closed with `]`"),
            ("http://[::g]", "not a valid IPv6 address"),
            ("http://[fe80::1%25eth0]", "not a valid IPv6 address"),
            ("http://[::1]x", "the URL has `x` at character 13 after the IPv6 address"),
        ];
        for (url, expected) in cases {
            match BackendUrl::parse(url) {
                Ok(parsed) => panic!("{url:?} should be refused, parsed as {parsed:?}"),
                Err(problem) => assert!(problem.contains(expected), "{url:?}: expected {expected:?}, got {problem:?}"),
            }
        }
        let long_label = format!("http://{}.com", "a".repeat(64));
        assert!(BackendUrl::parse(&long_label).unwrap_err().contains("at most 63"));
        assert!(BackendUrl::parse(&format!("http://{}.com", "a".repeat(63))).is_ok());
        let name = |labels: usize| format!("http://{}com", "abcdefghi.".repeat(labels));
        assert!(BackendUrl::parse(&name(25)).is_ok(), "253 characters");
        assert!(BackendUrl::parse(&name(26)).unwrap_err().contains("at most 253"));
        let long_url = format!("http://h/{}", "a".repeat(MAX_BACKEND_URL));
        assert!(BackendUrl::parse(&long_url).unwrap_err().contains("at most 2048 characters"));
        // Found by the fuzzer: a URL of 2,048 characters that prints longer (`:443` added)
        // must not be accepted, or its own display would be refused.
        let at_limit = format!("https://h/{}", "a".repeat(MAX_BACKEND_URL - "https://h/".len()));
        assert!(BackendUrl::parse(&at_limit).unwrap_err().contains("at most 2048 characters"));
        let shown = format!("https://h:443/{}", "a".repeat(MAX_BACKEND_URL - "https://h:443/".len()));
        assert_eq!(BackendUrl::parse(&shown).unwrap().to_string(), shown);
    }

    #[test]
    fn url_errors_never_show_credentials_queries_or_fragments() {
        for url in [
            "http://user:sk-live-1@h",
            "http://sk-live-1@h/x",
            "http://h/x?key=sk-live-1",
            "http://h?sk-live-1",
            "http://h/x#sk-live-1",
            "http://h:sk-live-1",
            "sk-live-1",
            "sk-live-1://h",
            "http://h/v1?a=b c#sk-live-1",
        ] {
            let problem = BackendUrl::parse(url).unwrap_err();
            assert!(!problem.contains("sk-live"), "{url:?}: {problem:?}");
        }
        assert!(BackendUrl::parse("http://u:p@h").unwrap_err().contains("credentials"));
        assert!(BackendUrl::parse("http://h/?q=1").unwrap_err().contains("a query"));
        assert!(BackendUrl::parse("http://h/#f").unwrap_err().contains("a fragment"));
    }

    fn joins(url: &BackendUrl) -> bool {
        format!("{}/v1/chat/completions", url.base_path).parse::<http::Uri>().is_ok()
    }

    fn valid_url() -> impl Strategy<Value = String> {
        let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?";
        let top = "[a-zA-Z]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?";
        let dns = (proptest::collection::vec(label, 0..4), top).prop_map(|(mut labels, top)| {
            labels.push(top);
            labels.join(".")
        });
        let v4 = any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string());
        let v6 = any::<std::net::Ipv6Addr>().prop_map(|a| format!("[{a}]"));
        let host = prop_oneof![dns, v4, v6];
        let segment = "([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2}){1,12}".prop_filter("no dot segments", |s| {
            let decoded = s.to_ascii_lowercase().replace("%2e", ".");
            decoded != "." && decoded != ".."
        });
        let path = proptest::collection::vec(segment, 0..5);
        (any::<bool>(), host, proptest::option::of(1..=u16::MAX), path, any::<bool>()).prop_map(
            |(tls, host, port, path, slash)| {
                let scheme = if tls { "https" } else { "http" };
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                let path: String = path.iter().map(|s| format!("/{s}")).collect();
                let slash = if slash { "/" } else { "" };
                format!("{scheme}://{host}{port}{path}{slash}")
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn every_valid_url_parses_joins_and_round_trips(text in valid_url()) {
            let url = BackendUrl::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert!(joins(&url), "{text:?} -> {url:?}");
            prop_assert_eq!(BackendUrl::parse(&url.to_string()), Ok(url));
        }

        #[test]
        fn any_text_parses_without_panicking_and_accepted_urls_round_trip(
            text in prop_oneof![
                any::<String>(),
                "\\PC{0,40}".prop_map(|s| format!("http://{s}")),
                any::<String>().prop_map(|s| format!("https://h/{s}")),
                "[a-z0-9.:\\[\\]/%@?# -]{0,30}".prop_map(|s| format!("http://{s}")),
            ]
        ) {
            if let Ok(url) = BackendUrl::parse(&text) {
                prop_assert!(joins(&url), "{text:?} -> {url:?}");
                let id = url.to_string();
                prop_assert!(!id.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"' || c == '\\'), "{id:?}");
                prop_assert_eq!(BackendUrl::parse(&id), Ok(url));
            }
        }
    }

    proptest! {
        #[test]
        fn what_follows_at_query_or_fragment_never_reaches_an_error(
            prefix in "https?://[a-z0-9.:\\[\\]/%_ -]{0,20}",
            separator in prop_oneof![Just('@'), Just('?'), Just('#')],
            rest in "\\PC{0,12}",
        ) {
            let text = format!("{prefix}{separator}SECRET{rest}");
            if let Err(problem) = BackendUrl::parse(&text) {
                prop_assert!(!problem.contains("SECRET"), "{text:?}: {problem:?}");
            }
        }
    }

    #[test]
    fn secrets_never_print() {
        let auth = BackendAuth::Bearer { token: Secret::new("sk-live-123") };
        assert!(!format!("{auth:?}").contains("sk-live"));
    }

    #[test]
    fn external_secrets_must_be_one_non_blank_line() {
        for blank in ["", " ", "\t\n ", "\u{3000}"] {
            assert!(Secret::parse(blank).unwrap_err().contains("empty"), "{blank:?}");
        }
        let problem = Secret::parse("sk-live-1\nsecond").unwrap_err();
        assert!(problem.contains("one line") && !problem.contains("sk-live"), "{problem}");
        assert_eq!(Secret::parse(" sk-1 ").unwrap().expose(), " sk-1 ");
    }

    #[test]
    fn the_admin_api_json_refuses_blank_secrets() {
        let parse = |json: &str| serde_json::from_str::<BackendAuth>(json);
        for json in [
            r#"{"bearer": {"token": "  "}}"#,
            r#"{"bearer": {"token": ""}}"#,
            r#"{"modal": {"key": "k", "secret": " "}}"#,
            r#"{"cloud_run": {"id_token": "\n"}}"#,
        ] {
            let error = parse(json).unwrap_err().to_string();
            assert!(error.contains("must not be empty"), "{json}: {error}");
        }
        let spec =
            r#"{"tier": "spot", "url": "http://h", "capacity": 1, "auth": {"bearer": {"token": "sk-live-1\r\n"}}}"#;
        let error = serde_json::from_str::<BackendSpec>(spec).unwrap_err().to_string();
        assert!(error.contains("one line") && !error.contains("sk-live"), "{error}");
        let auth = parse(r#"{"bearer": {"token": "sk-live-1"}}"#).unwrap();
        assert_eq!(auth, BackendAuth::Bearer { token: Secret::new("sk-live-1") });
        assert_eq!(serde_json::to_string(&auth).unwrap(), r#"{"bearer":{"token":"sk-live-1"}}"#);
    }
}
