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

/// Why a stream ended before the upstream finished it, as far as a client may know: the
/// upstream's own error (which names internal addresses) goes to the log, never here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamBreak {
    /// The upstream connection failed or closed early.
    Failed,
    /// The upstream sent nothing for the router's idle timeout.
    Silent,
}

impl StreamBreak {
    fn parts(self) -> (&'static str, &'static str, u16) {
        match self {
            StreamBreak::Failed => {
                ("the upstream failed mid-stream; the response is incomplete", "upstream_error", 502)
            }
            StreamBreak::Silent => (
                "no data from the upstream within the idle timeout; the response is incomplete",
                "upstream_timeout",
                504,
            ),
        }
    }
}

/// The last event of a stream whose upstream failed after it started: the client sees
/// that the answer is incomplete, and the request id to quote, instead of a silently
/// truncated answer.
pub fn stream_error_event(request_id: &str, why: StreamBreak) -> Bytes {
    event(why, Some(request_id))
}

fn event(why: StreamBreak, request_id: Option<&str>) -> Bytes {
    let (message, kind, code) = why.parts();
    let body = crate::errors::error_body(message, kind, code, request_id);
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
        let cases = [(StreamBreak::Failed, "upstream_error", 502), (StreamBreak::Silent, "upstream_timeout", 504)];
        for (why, kind, code) in cases {
            let json = parse(&stream_error_event("3f2a", why));
            assert_eq!(json["error"]["type"], kind);
            assert_eq!(json["error"]["code"], code);
            assert!(json["error"]["param"].is_null());
            assert_eq!(json["error"]["request_id"], "3f2a");
            assert_eq!(json["error"]["message"], format!("{} (request id 3f2a)", why.parts().0));
        }
    }
}
