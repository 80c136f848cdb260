//! The official Python `openai` SDK works against mock-vllm unchanged. The SDK lives
//! in `.build/venv`, which `scripts/setup` (run by `.ci/run`) creates.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

use std::path::PathBuf;

use serde_json::Value;
use tandemn_bench::mock_vllm::{MockConfig, MockVllm};

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.build/venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash scripts/setup` first", python.display());
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_openai_sdk_streams_and_reads_usage() {
    let config =
        MockConfig { served_model_name: "Qwen/Qwen3-0.6B".into(), ttft_ms: 5.0, itl_ms: 1.0, ..MockConfig::default() };
    let mock = MockVllm::start(config).await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_sdk.py");
    let output = tokio::process::Command::new(python())
        .arg(script)
        .arg(mock.url())
        .arg("Qwen/Qwen3-0.6B")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "the SDK script failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(seen["chat"]["completion_tokens"], 6);
    assert_eq!(seen["chat"]["finish"], "length");
    assert!(!seen["chat"]["content"].as_str().unwrap().is_empty());
    assert_eq!(seen["stream"]["chunks"], 5, "{seen}");
    assert_eq!(seen["stream"]["completion_tokens"], 5, "the usage chunk reached the SDK: {seen}");
    assert!(!seen["stream"]["text"].as_str().unwrap().is_empty());
    assert_eq!(seen["completion"]["completion_tokens"], 3);
    assert_eq!(seen["embeddings"], serde_json::json!([16, 16]));
    assert_eq!(seen["models"], serde_json::json!(["Qwen/Qwen3-0.6B"]));
    assert_eq!(seen["not_found"]["status"], 404);
    let stats = mock.stats();
    assert_eq!((stats.completed, stats.rejected), (3, 1));
}
