//! Why a run stopped: one typed error for the run, from every stage below it.
//!
//! Mistakes in how the run was started (flags, the mapping, a checkpoint that does not
//! fit, another run holding the files) come before anything is read or sent
//! ([`RunError::is_usage`]: exit code 2). A run that started and stopped early carries its
//! summary, so the caller can print and write it.

use std::path::PathBuf;

use crate::checkpoint::{CheckpointError, WriteError};
use crate::map::compile::CompileError;
use crate::map::MappingError;
use crate::send::transport::ClientError;
use crate::serve::ServeError;
use crate::source::{Overwrite, SourceError};
use crate::summary::Summary;

/// Why a run stopped. Configuration errors come before anything is read or sent.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// An output that is an input, the mapping or another output.
    #[error(transparent)]
    Overwrite(#[from] Overwrite),
    #[error(transparent)]
    Checkpoint(Box<CheckpointError>),
    /// A file the run writes could not be written (the rejects file, the checkpoint,
    /// `--output`); the run stopped.
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start the mapper threads: {0}")]
    Threads(#[source] rayon::ThreadPoolBuildError),
    #[error("cannot start a thread of the run: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// Stopped by SIGINT/SIGTERM after draining; the checkpoint says where to resume.
    #[error("interrupted")]
    Interrupted {
        summary: Box<Summary>,
        checkpoint: Option<PathBuf>,
    },
    /// The run started, did part of the work, then stopped; the summary says how far.
    #[error("{cause}")]
    Partial {
        summary: Box<Summary>,
        cause: String,
    },
    /// The packing stage stopped the run: the first rows were all rejected for one
    /// reason (`usage`: the input or the mapping is wrong; nothing was delivered), or
    /// more than `--max-reject-rate` of the rows were rejected.
    #[error("{cause}")]
    Stopped {
        summary: Box<Summary>,
        cause: String,
        usage: bool,
    },
    /// `--strict-mapping`: mapped names with no value in the first rows.
    #[error("{0}")]
    StrictMapping(String),
    /// Requests still hung when the drain timeout ended: the run returned without them
    /// (the senders stuck in them are left behind). `why` says where things stand; the
    /// summary is whole only when `complete` (the reader and the packer ended in time),
    /// else it counts only the calls delivered.
    #[error("{why}")]
    Abandoned {
        summary: Box<Summary>,
        complete: bool,
        why: String,
    },
}

impl From<CheckpointError> for RunError {
    fn from(e: CheckpointError) -> Self {
        RunError::Checkpoint(Box::new(e))
    }
}

impl RunError {
    /// True for mistakes in the command line, the mapping or the run's files, found
    /// before any work.
    pub fn is_usage(&self) -> bool {
        match self {
            RunError::Mapping(_)
            | RunError::Compile(_)
            | RunError::Overwrite(_)
            | RunError::StrictMapping(_) => true,
            RunError::Stopped { usage, .. } => *usage,
            RunError::Checkpoint(e) => e.is_usage(),
            RunError::Source(SourceError::Remote(e)) => e.is_usage(),
            _ => false,
        }
    }
}
