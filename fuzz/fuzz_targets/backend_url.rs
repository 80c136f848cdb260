//! Backend URL validation. Invariants: never panics; an accepted URL prints as a URL
//! that parses back to the same value; its base path can take an API path and still
//! be a valid request target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandemn_config::api::BackendUrl;

fuzz_target!(|text: &str| {
    let Ok(url) = BackendUrl::parse(text) else { return };
    let printed = url.to_string();
    let again = BackendUrl::parse(&printed).unwrap_or_else(|error| {
        panic!("{text:?} was accepted as {url:?}, but its Display {printed:?} is refused: {error}")
    });
    assert_eq!(again, url, "{text:?} does not round-trip through its Display {printed:?}");
    let target = format!("{}/v1/x", url.base_path);
    if let Err(error) = target.parse::<http::Uri>() {
        panic!(
            "{text:?} was accepted with base path {:?}, but {target:?} is not a request target: {error}",
            url.base_path
        );
    }
});
