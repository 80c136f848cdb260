//! The request target a backend gets. Invariants: never panics; an accepted target is
//! under the backend's base path, has no `.` or `..` segment (also percent-encoded),
//! and names no scheme or host.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tandemn_proxy::forward::upstream_target;

/// Base paths as `BackendUrl` produces them: empty, or `/`-led without a trailing `/`.
const BASE_PATHS: [&str; 4] = ["", "/v2/abc/openai", "/openai", "/a/b/c"];

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    base: u8,
    target: &'a [u8],
}

/// `upstream_target` takes the client's target either parsed (`&http::Uri`, built here
/// with `Uri::try_from` from the fuzz bytes) or raw (`&[u8]`, the bytes as sent), as
/// the router's hardening changes it; this accepts both, so the target fuzzes whichever
/// the tree has. The marker type only tells the two impls apart.
trait JoinTarget<Form> {
    /// `None` when the bytes are not even a URI (nothing to ask the function).
    fn join(&self, raw: &[u8], base_path: &str) -> Option<Result<http::Uri, String>>;
}

struct Parsed;
struct Raw;

impl<F: Fn(&http::Uri, &str) -> Result<http::Uri, String>> JoinTarget<Parsed> for F {
    fn join(&self, raw: &[u8], base_path: &str) -> Option<Result<http::Uri, String>> {
        let uri = http::Uri::try_from(raw).ok()?;
        Some(self(&uri, base_path))
    }
}

impl<F: Fn(&[u8], &str) -> Result<http::Uri, String>> JoinTarget<Raw> for F {
    fn join(&self, raw: &[u8], base_path: &str) -> Option<Result<http::Uri, String>> {
        Some(self(raw, base_path))
    }
}

fn join<Form>(function: impl JoinTarget<Form>, raw: &[u8], base_path: &str) -> Option<Result<http::Uri, String>> {
    function.join(raw, base_path)
}

fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

fuzz_target!(|input: Input<'_>| {
    let base_path = BASE_PATHS[usize::from(input.base) % BASE_PATHS.len()];
    let Some(Ok(target)) = join(upstream_target, input.target, base_path) else { return };
    let sent = String::from_utf8_lossy(input.target);
    let shown = target.to_string();
    assert!(target.scheme().is_none() && target.authority().is_none(), "{sent:?} became {shown:?}, which names a host");
    assert!(target.path().starts_with(base_path), "{sent:?} became {shown:?}, outside the base path {base_path:?}");
    let rest = &target.path()[base_path.len()..];
    assert!(rest.starts_with('/'), "{sent:?} became {shown:?}, which extends the base path's last segment");
    assert!(!target.path().split('/').any(is_dot_segment), "{sent:?} became {shown:?}, which has a dot segment");
});
