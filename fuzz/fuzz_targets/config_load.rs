//! The config loader must never panic, whatever bytes the deployment file holds: bad
//! YAML, wrong types and impossible values all come back as a `ConfigError`.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tandemn_config::{Catalog, Sources};

/// One directory per process: creating one per input would dominate the run time.
static DIR: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::tempdir().expect("the fuzz target needs a temporary directory"));

fuzz_target!(|data: &[u8]| {
    let path: PathBuf = DIR.path().join("tandemn.yaml");
    std::fs::write(&path, data).expect("the temporary deployment file must be writable");
    let sources = Sources { deployment_file: Some(path), ..Default::default() };
    // Either outcome is fine; only a panic (or a hang) is a finding.
    let _ = sources.load(Catalog::embedded());
});
