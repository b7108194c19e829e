//! pullgate: a caching pull-through proxy for container registries.
//!
//! Layers, each depending only on those after it:
//! `http` (axum routes, OCI errors) → `proxy` (hit/miss/revalidate, single-flight fills)
//! → `cache` (sled, blob stores) and `upstream` (reqwest, token auth, redirects) → `oci`
//! (pure protocol types). `config` and `server` wire them together.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod client_config;
pub mod config;
pub mod http;
pub mod metrics;
pub mod oci;
pub mod prefetch;
pub mod proxy;
pub mod server;
pub mod upstream;
