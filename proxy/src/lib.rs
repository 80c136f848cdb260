//! Tandemn's data plane: the Pingora proxy that routes OpenAI-compatible traffic across
//! spot replicas and serverless endpoints. It holds no cloud clients.
