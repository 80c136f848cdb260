//! What every REST provider client shares: turning an HTTP failure into a classified
//! [`ProviderError`], the `Retry-After` header, and making a provider's message fit to
//! show (ANSI escapes stripped, lines collapsed, length capped, secrets replaced by
//! `***`). It sends nothing itself: each client owns its `reqwest::Client` and deadlines.

use std::time::Duration;

use tandemn_config::api::Secret;

use crate::provider::ProviderError;

/// Longest provider message kept in an error (characters).
pub const MAX_EXCERPT: usize = 500;

/// Values that must never appear in a message: bearer tokens, replica keys. Holds the
/// secrets themselves, so its `Debug` shows only how many there are.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<Secret>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also hides `secret` from now on.
    pub fn add(&mut self, secret: &Secret) {
        if !secret.expose().is_empty() {
            self.secrets.push(secret.clone());
        }
    }

    /// `text` without ANSI escapes and secrets, its lines and length kept (a log).
    pub fn scrub(&self, text: &str) -> String {
        let mut text = strip_ansi(text);
        for secret in &self.secrets {
            text = text.replace(secret.expose(), "***");
        }
        text
    }

    /// `text` fit to show: no ANSI escapes, one line, secrets replaced by `***`, at most
    /// [`MAX_EXCERPT`] characters.
    pub fn clean(&self, text: &str) -> String {
        let mut text = collapse(&strip_ansi(text));
        for secret in &self.secrets {
            text = text.replace(secret.expose(), "***");
        }
        cap(&text, MAX_EXCERPT)
    }
}

/// Removes ANSI escape sequences (`\x1b[1m`, `\x1b[0;31m`, OSC sequences): SkyPilot
/// colours its messages for a terminal.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            // CSI: parameters and intermediates, then one final byte in @..~.
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \.
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // A two-character escape.
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

/// One line: every run of whitespace (line breaks included) becomes one space.
pub fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters, with `…` when cut.
pub fn cap(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The `Retry-After` header in seconds (the HTTP-date form is rare on APIs and ignored).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The classification every API shares, by HTTP status: refused credentials, rate limits
/// and busy servers, and the rest as `Api` with an excerpt. `message` is already clean.
pub fn classify_http(status: u16, retry_after: Option<Duration>, message: String) -> ProviderError {
    match status {
        401 | 403 => ProviderError::Auth(message),
        408 | 429 | 502 | 503 | 504 => ProviderError::Transient {
            message: format!("the server answered HTTP {status} (busy or rate limited): {message}"),
            retry_after,
        },
        _ => ProviderError::Api { status, excerpt: message },
    }
}

/// A request that got no answer: the server is down, unreachable or too slow. `what`
/// names the server (never a URL with credentials in it) and `hint` the likely fix.
pub fn transport_error(error: &reqwest::Error, what: &str, hint: &str, redactor: &Redactor) -> ProviderError {
    let cause = if error.is_timeout() {
        "no answer before the deadline".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        // reqwest's display names the URL; the cause chain says what went wrong.
        let mut cause = String::new();
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            cause = inner.to_string();
            source = inner.source();
        }
        if cause.is_empty() { error.to_string() } else { cause }
    };
    ProviderError::transient(redactor.clean(&format!("{what}: {cause} ({hint})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_colours_line_breaks_and_secrets() {
        let mut redactor = Redactor::new();
        redactor.add(&Secret::new("sky_tok3n"));
        redactor.add(&Secret::new("replica-key-123"));
        let cases = [
            ("\x1b[1mCluster\x1b[0m 'a' does not exist.", "Cluster 'a' does not exist."),
            (
                "Invalid region 'us-west-9'\nDid you mean\n  one of these?",
                "Invalid region 'us-west-9' Did you mean one of these?",
            ),
            ("\x1b]8;;http://x\x07link\x1b]8;;\x1b\\ done", "link done"),
            ("token sky_tok3n and key replica-key-123 leaked", "token *** and key *** leaked"),
            ("\x1b[31", ""),
        ];
        for (raw, shown) in cases {
            assert_eq!(redactor.clean(raw), shown, "{raw:?}");
        }
        assert_eq!(format!("{redactor:?}"), "Redactor(2 secrets)");
        assert_eq!(redactor.scrub("\x1b[1mA  B\x1b[0m\nkey replica-key-123"), "A  B\nkey ***");
    }

    #[test]
    fn long_messages_are_capped() {
        let shown = Redactor::new().clean(&"é".repeat(2000));
        assert_eq!(shown.chars().count(), MAX_EXCERPT);
        assert!(shown.ends_with('…'));
        assert_eq!(cap("short", 10), "short");
    }

    #[test]
    fn http_statuses_are_classified() {
        let wait = Some(Duration::from_secs(7));
        assert!(matches!(classify_http(401, None, "x".into()), ProviderError::Auth(_)));
        assert!(matches!(classify_http(403, None, "x".into()), ProviderError::Auth(_)));
        assert!(matches!(
            classify_http(429, wait, "x".into()),
            ProviderError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(classify_http(503, None, "x".into()), ProviderError::Transient { retry_after: None, .. }));
        assert_eq!(
            classify_http(418, None, "teapot".into()),
            ProviderError::Api { status: 418, excerpt: "teapot".into() }
        );
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "12".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(12)));
        headers.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
