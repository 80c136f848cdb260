//! Tandemn's load tools: the vLLM-compatible simulator (`mock-vllm`) and the load generator.
