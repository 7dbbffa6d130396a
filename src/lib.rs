//! `cdp-backfill`: backfill historical records into the Customer.io Data Pipelines API.
//!
//! The modules form layers that read as the pipeline, lowest first; a module uses only
//! those in its layer or below (`tests/layers.rs` checks it):
//!
//! - leaves: [`config`] (plain validated data and the named defaults), [`json`] (JSON
//!   writing and scanning), [`timestamp`] (timestamps in, UTC milliseconds out);
//! - [`source`] reads records ([`derive`] makes one row per person of them); [`map`] turns them into encoded calls; [`pack`] packs calls
//!   into requests; [`send`] delivers them under the rate gate; [`checkpoint`] folds the
//!   acknowledgements into the durable watermark and the rejects file;
//! - [`serve`], the local receiver (`--endpoint local`, the tests, the benchmarks);
//! - sinks that read what the stages count: [`progress`], [`summary`], [`report`];
//! - [`error`], then [`pipeline`], the only module that starts the run's threads and
//!   channels;
//! - commands: [`validate`], [`inspect`], [`generate`], [`status`], [`migration`] (plan
//!   files: a migration's ordered steps); and [`cli`] on top.

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod derive;
pub mod error;
pub mod generate;
pub mod inspect;
pub mod json;
pub mod map;
pub mod migration;
pub mod pack;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod send;
pub mod serve;
pub mod source;
pub mod status;
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
