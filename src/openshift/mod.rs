//! OpenShift content, as pure functions over bytes: oc-mirror's ImageSetConfiguration,
//! the update graph (Cincinnati) and the releases a channel selects, a release
//! payload's `image-references`, image layers read as an overlay (whiteouts applied),
//! and file-based operator catalogs with their head and range selection. No I/O
//! beyond the readers it is handed: the prefetch orchestration and the HTTP routes
//! that serve release signatures and the graph live elsewhere.

pub mod catalog;
pub mod graph;
pub mod imageset;
pub mod layers;
pub mod release;
