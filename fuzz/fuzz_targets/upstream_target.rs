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

fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

fuzz_target!(|input: Input<'_>| {
    let base_path = BASE_PATHS[usize::from(input.base) % BASE_PATHS.len()];
    let Ok(target) = upstream_target(input.target, base_path) else { return };
    let sent = String::from_utf8_lossy(input.target);
    let shown = target.to_string();
    assert!(target.scheme().is_none() && target.authority().is_none(), "{sent:?} became {shown:?}, which names a host");
    assert!(target.path().starts_with(base_path), "{sent:?} became {shown:?}, outside the base path {base_path:?}");
    let rest = &target.path()[base_path.len()..];
    assert!(rest.starts_with('/'), "{sent:?} became {shown:?}, which extends the base path's last segment");
    assert!(!target.path().split('/').any(is_dot_segment), "{sent:?} became {shown:?}, which has a dot segment");
    let lower = rest.to_ascii_lowercase();
    assert!(!lower.contains("%2f") && !lower.contains("%5c") && !lower.contains('\\'), "{sent:?} became {shown:?}");
});
