//! Pure OCI distribution protocol types shared by every layer: digests, repository
//! names and patterns, references, routes, ranges, media types, what manifests name,
//! and `WWW-Authenticate` challenges.
//! Nothing here does I/O.

pub mod challenge;
pub mod digest;
pub mod error;
pub mod image;
pub mod media;
pub mod name;
pub mod pattern;
pub mod range;
pub mod route;

pub use digest::{Digest, DigestHasher};
pub use error::ErrorCode;
pub use name::{Reference, RepoName, Tag};
