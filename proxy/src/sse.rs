//! What the router reads from response bodies without buffering them: the output token
//! count from `usage`, and the error event that ends a stream whose upstream failed.

use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;

const NEEDLE: &[u8] = b"\"completion_tokens\":";
/// Built once: building a searcher costs more than searching one chunk.
static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(NEEDLE));
/// The stream's last bytes that can still be the start of a needle split across chunks
/// (however small the chunks).
const TAIL: usize = NEEDLE.len() - 1;

/// Finds the last `"completion_tokens": N` in a body that arrives in pieces, without
/// allocating per chunk: a needle or a number may be split across any number of chunks.
#[derive(Default)]
pub struct UsageScanner {
    /// The last `TAIL` bytes of the stream so far.
    tail: [u8; TAIL],
    tail_len: usize,
    /// A number whose needle was seen and whose end has not arrived yet.
    number: Option<Number>,
    tokens: Option<u64>,
}

/// The digits after a needle, as they arrive.
#[derive(Clone, Copy)]
struct Number {
    /// `None` once it overflows.
    value: Option<u64>,
    digits: usize,
}

impl Number {
    const START: Number = Number { value: Some(0), digits: 0 };

    /// Reads `bytes` on; once the number has ended, its value (`None` when there were no
    /// digits, as in `null`, or too many).
    fn feed(&mut self, bytes: &[u8]) -> Option<Option<u64>> {
        for &byte in bytes {
            if byte.is_ascii_digit() {
                self.value = self.value.and_then(|v| v.checked_mul(10)?.checked_add(u64::from(byte - b'0')));
                self.digits += 1;
            } else if !(self.digits == 0 && byte.is_ascii_whitespace()) {
                return Some(self.value.filter(|_| self.digits > 0));
            }
        }
        None
    }
}

impl UsageScanner {
    pub fn scan(&mut self, chunk: &[u8]) {
        if let Some(number) = self.number.take() {
            self.read_number(number, chunk);
        }
        // A needle that starts in the tail and ends in this chunk: only the seam is copied.
        if self.tail_len > 0 && self.number.is_none() {
            let mut seam = [0_u8; 2 * TAIL];
            let head = chunk.len().min(TAIL);
            seam[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            seam[self.tail_len..self.tail_len + head].copy_from_slice(&chunk[..head]);
            if let Some(start) = FINDER.find(&seam[..self.tail_len + head]) {
                // The tail is shorter than the needle, so the needle ends inside this chunk.
                let number_at = start + NEEDLE.len() - self.tail_len;
                self.read_number(Number::START, &chunk[number_at..]);
            }
        }
        for start in FINDER.find_iter(chunk) {
            self.read_number(Number::START, &chunk[start + NEEDLE.len()..]);
        }
        self.keep_tail(chunk);
    }

    /// Reads `number` on in `bytes`: records its value if it ends there, else keeps it
    /// for the next chunk.
    fn read_number(&mut self, mut number: Number, bytes: &[u8]) {
        match number.feed(bytes) {
            Some(Some(tokens)) => self.tokens = Some(tokens),
            Some(None) => {}
            None => self.number = Some(number),
        }
    }

    fn keep_tail(&mut self, chunk: &[u8]) {
        if chunk.len() >= TAIL {
            self.tail.copy_from_slice(&chunk[chunk.len() - TAIL..]);
            self.tail_len = TAIL;
        } else {
            let kept = self.tail_len.min(TAIL - chunk.len());
            self.tail.copy_within(self.tail_len - kept..self.tail_len, 0);
            self.tail[kept..kept + chunk.len()].copy_from_slice(chunk);
            self.tail_len = kept + chunk.len();
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
        // One byte at a time, and a number split from its needle by much white space.
        let mut bytewise = UsageScanner::default();
        for byte in body {
            bytewise.scan(std::slice::from_ref(byte));
        }
        assert_eq!(bytewise.tokens(), Some(42));
        let mut spaced = UsageScanner::default();
        spaced.scan(b"{\"usage\":{\"completion_tokens\":");
        spaced.scan(&[b' '; 40]);
        spaced.scan(b"9");
        spaced.scan(b"1}}");
        assert_eq!(spaced.tokens(), Some(91));
        let mut later = UsageScanner::default();
        later.scan(br#"{"completion_tokens":3} {"completion_tokens":null} {"completion_tokens":"#);
        later.scan(b"7}");
        assert_eq!(later.tokens(), Some(7), "the last count wins; a null does not count");
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
