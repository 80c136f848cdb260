//! The SSE usage scanner sees a response body in whatever pieces the network delivers.
//! Invariant: the token count does not depend on where the body was split, and no
//! split panics.
//!
//! Input layout (so that seeds can be real SSE bodies): one byte `n`, then `n` chunk
//! lengths of one byte each, then the body; what is left after the last length is the
//! final chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandemn_proxy::sse::UsageScanner;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else { return };
    let (cuts, body) = rest.split_at(usize::from(count).min(rest.len()));

    let mut whole = UsageScanner::default();
    whole.scan(body);

    let mut pieces = UsageScanner::default();
    let mut left = body;
    for &cut in cuts {
        let (chunk, after) = left.split_at(usize::from(cut).min(left.len()));
        pieces.scan(chunk);
        left = after;
    }
    pieces.scan(left);

    assert_eq!(
        pieces.tokens(),
        whole.tokens(),
        "chunks of {cuts:?} disagree with the whole body {:?}",
        String::from_utf8_lossy(body)
    );
});
