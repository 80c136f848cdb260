//! `POST /router/config` bodies: decoding any bytes and publishing any decoded backend
//! set must return a result (accepted or a clear error), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandemn_proxy::RoutingState;
use tandemn_proxy::admin::ConfigUpdate;

fuzz_target!(|data: &[u8]| {
    let Ok(update) = serde_json::from_slice::<ConfigUpdate>(data) else { return };
    let state = RoutingState::default();
    // Twice: the second publish builds on the first table (kept capacity, draining).
    if state.publish(&update.backends).is_ok() {
        let _ = state.publish(&update.backends);
    }
});
