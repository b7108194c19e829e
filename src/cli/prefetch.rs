//! `pullgate prefetch`: the command's arguments handed to [`crate::prefetch`], which
//! warms the cache through pullgate (images, or an oc-mirror ImageSetConfiguration).

use crate::config::Config;
pub use crate::prefetch::Options;

/// Runs the prefetch; the text to print and how many images failed.
pub async fn run(config: &Config, options: &Options) -> Result<(String, usize), String> {
    crate::prefetch::run(config, options).await
}
