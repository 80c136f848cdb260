//! Tandemn's data plane: the Pingora proxy that routes OpenAI-compatible traffic across
//! spot replicas and serverless endpoints. It holds no cloud clients; backends arrive
//! as `BackendSpec`s and live in one swapped `RouteTable`.

pub mod backend;
pub mod routing;
pub mod select;
