//! `cdp-backfill`: backfill historical records into the Customer.io Data Pipelines API.
//!
//! The pipeline, one stage per module: [`source`] reads records, [`map`] turns them into
//! encoded calls in parallel, [`pack`] packs calls into request bodies, [`send`] delivers
//! them under a rate limiter, and [`pipeline`] wires the stages together with bounded
//! channels. [`serve`] is the local receiver used by `--endpoint local`, the tests and the
//! benchmarks; [`generate`] writes realistic test inputs.

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod error;
pub mod generate;
pub mod inspect;
pub mod json;
pub mod map;
pub mod pack;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod send;
pub mod serve;
pub mod source;
pub mod summary;
pub mod timestamp;
pub mod validate;

pub use config::RunConfig;
pub use error::RunError;
pub use summary::Summary;

/// Runs a backfill, showing no progress.
pub fn run(cfg: &RunConfig, src: &source::SourceOptions) -> Result<Summary, RunError> {
    let progress = std::sync::Arc::new(progress::Progress::hidden());
    pipeline::run(cfg, src, &pipeline::Hooks::default(), &progress)
}
