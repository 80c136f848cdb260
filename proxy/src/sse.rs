//! What the router reads from response bodies without buffering them: the output token
//! count from `usage`, and the error event that ends a stream whose upstream failed.

use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;

const NEEDLE: &[u8] = b"\"completion_tokens\":";
/// Built once: building a searcher costs more than searching one chunk.
static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(NEEDLE));
/// Enough of the previous chunk to find a needle split across two chunks.
const TAIL: usize = 32;

/// Finds the last `"completion_tokens": N` in a body that arrives in pieces, without
/// allocating per chunk.
#[derive(Default)]
pub struct UsageScanner {
    tail: [u8; TAIL],
    tail_len: usize,
    tokens: Option<u64>,
}

impl UsageScanner {
    pub fn scan(&mut self, chunk: &[u8]) {
        // Only the seam needs copying: the tail of the last chunk plus the head of this one.
        if self.tail_len > 0 {
            let mut seam = [0_u8; 2 * TAIL];
            let head = chunk.len().min(TAIL);
            seam[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            seam[self.tail_len..self.tail_len + head].copy_from_slice(&chunk[..head]);
            let seam_len = self.tail_len + head;
            self.find_in(&seam[..seam_len]);
        }
        self.find_in(chunk);
        let keep = chunk.len().min(TAIL);
        self.tail[..keep].copy_from_slice(&chunk[chunk.len() - keep..]);
        self.tail_len = keep;
    }

    fn find_in(&mut self, haystack: &[u8]) {
        for start in FINDER.find_iter(haystack) {
            let digits: Vec<u8> = haystack[start + NEEDLE.len()..]
                .iter()
                .skip_while(|b| b.is_ascii_whitespace())
                .take_while(|b| b.is_ascii_digit())
                .copied()
                .collect();
            let complete = start + NEEDLE.len() + digits.len() < haystack.len();
            if let (true, Ok(text)) = (complete, std::str::from_utf8(&digits))
                && let Ok(tokens) = text.parse()
            {
                self.tokens = Some(tokens);
            }
        }
    }

    pub fn tokens(&self) -> Option<u64> {
        self.tokens
    }
}

/// What a client reads when its stream broke: why the answer is incomplete, never how
/// (upstream errors name internal addresses; they go to the log).
const MID_STREAM_MESSAGE: &str = "the upstream failed mid-stream; the response is incomplete";

/// The last event of a stream whose upstream failed after it started: the client sees
/// that the answer is incomplete, and the request id to quote, instead of a silently
/// truncated answer. The upstream's own error goes to the log, never here.
pub fn stream_error_event(request_id: &str) -> Bytes {
    event(Some(request_id))
}

/// The same event without a request id. The argument is the upstream's error, which is
/// for the log: it is deliberately not rendered. Kept for callers that do not pass the
/// request id yet; prefer [`stream_error_event`].
pub fn error_event(_upstream_error: &str) -> Bytes {
    event(None)
}

fn event(request_id: Option<&str>) -> Bytes {
    let body = crate::errors::error_body(MID_STREAM_MESSAGE, "upstream_error", 502, request_id);
    Bytes::from(format!("data: {body}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_usage_in_whole_bodies_and_across_chunk_seams() {
        let body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":42,"total_tokens":45}}"#;
        let mut whole = UsageScanner::default();
        whole.scan(body);
        assert_eq!(whole.tokens(), Some(42));
        for split in 1..body.len() {
            let mut scanner = UsageScanner::default();
            scanner.scan(&body[..split]);
            scanner.scan(&body[split..]);
            assert_eq!(scanner.tokens(), Some(42), "split at {split}");
        }
        let mut none = UsageScanner::default();
        none.scan(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n");
        assert_eq!(none.tokens(), None);
    }

    #[test]
    fn error_events_are_single_sse_events() {
        let parse = |event: &Bytes| -> serde_json::Value {
            let text = std::str::from_utf8(event).unwrap();
            assert!(text.starts_with("data: {") && text.ends_with("}\n\n"), "{text:?}");
            assert_eq!(text.matches("\n\n").count(), 1, "one event: {text:?}");
            serde_json::from_str(&text[6..text.len() - 2]).unwrap()
        };
        let json = parse(&stream_error_event("3f2a"));
        assert_eq!(json["error"]["type"], "upstream_error");
        assert_eq!(json["error"]["code"], 502);
        assert!(json["error"]["param"].is_null());
        assert_eq!(json["error"]["request_id"], "3f2a");
        assert_eq!(json["error"]["message"], format!("{MID_STREAM_MESSAGE} (request id 3f2a)"));
    }

    #[test]
    fn error_events_never_carry_the_upstream_error() {
        let why = "upstream failed mid-stream: Fail to read from 10.0.0.7:8000 ConnectionClosed\n\ndata: forged";
        let event = error_event(why);
        let text = std::str::from_utf8(&event).unwrap();
        for leak in ["10.0.0.7", "8000", "ConnectionClosed", "forged"] {
            assert!(!text.contains(leak), "{leak:?} leaked into {text:?}");
        }
        assert!(text.contains(MID_STREAM_MESSAGE) && text.ends_with("}\n\n"));
    }
}
