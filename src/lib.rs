//! pullgate: a caching pull-through proxy for container registries.
//!
//! Layers, each depending only on those after it: `http` (routes, the access-log and
//! metrics layer, OCI errors) → `proxy` (decides every answer: hit/miss/revalidate,
//! single-flight fills, ranges) → `cache` (the database of record and the blob stores)
//! and `upstream` (the registry client: token auth, redirects) → `oci` (pure protocol
//! types). `app` is the composition root:
//! it alone reads `config` and the secret files and builds the layers from their own
//! settings; `cli` holds the commands and is the only code that prints. `zero_copy` is
//! where `proxy` (which makes placeholder frames of warm blob files) and `http`'s
//! listener (whose writer sends them with sendfile) meet.
#![forbid(unsafe_code)]

pub mod app;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod http;
pub mod metrics;
pub mod oci;
pub mod openshift;
pub mod prefetch;
pub mod proxy;
pub mod secret;
pub mod trust;
pub mod upstream;
pub mod zero_copy;
