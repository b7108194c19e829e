//! The `pullgate` binary: parses the command line and hands it to [`pullgate::cli`].
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

/// jemalloc rather than glibc's malloc. Under the soak, glibc's dynamic mmap threshold
/// (raised to the size of each large block freed: 2 MiB read segments, 5 MiB upload
/// parts) sent those blocks into per-thread arenas whose freed middles are never given
/// back, so a replica's RSS kept climbing with each new peak of concurrent fills (31 →
/// 61 MiB in six minutes), while the same process with glibc told `MALLOC_ARENA_MAX=2
/// MALLOC_MMAP_THRESHOLD_=131072` stayed flat. jemalloc gives freed pages back after its
/// decay time on its own and needs no environment a deployment could forget. (mimalloc,
/// tried first, held 130–160 MiB in the same soak.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    pullgate::cli::run(pullgate::cli::Cli::parse())
}
