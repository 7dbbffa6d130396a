//! Stand-ins for a build without the `object-store` feature: nothing can construct a
//! [`RemoteObject`], so every path that would read one is unreachable, and the
//! [`ObjectRuntime`] refuses to start.

use std::convert::Infallible;
use std::ops::Range;

use super::{ObjectIdentity, RemoteError};

/// Never constructed without the feature.
#[derive(Debug)]
pub struct ObjectRuntime(Infallible);

impl ObjectRuntime {
    pub fn new(_retry_for: std::time::Duration) -> std::io::Result<ObjectRuntime> {
        Err(std::io::Error::other(
            "this cdp-backfill was built without the object-store feature",
        ))
    }
}

/// Never constructed without the feature.
#[derive(Debug)]
pub struct RemoteObject {
    never: Infallible,
    pub display: String,
}

impl RemoteObject {
    pub fn size(&self) -> u64 {
        match self.never {}
    }
    pub fn identity(&self) -> ObjectIdentity {
        match self.never {}
    }
    pub fn reader_at(&self, _offset: u64) -> std::io::Result<std::io::Empty> {
        match self.never {}
    }
    pub fn prefetch(&self) {
        match self.never {}
    }
    pub fn ends(&self, _n: u64) -> Result<(Vec<u8>, Vec<u8>), RemoteError> {
        match self.never {}
    }
    pub fn fetch(&self, _ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>, RemoteError> {
        match self.never {}
    }
    pub fn parquet_metadata(
        &self,
    ) -> Result<parquet::arrow::arrow_reader::ArrowReaderMetadata, String> {
        match self.never {}
    }
    pub fn row_group_reader(
        &self,
        _meta: &parquet::arrow::arrow_reader::ArrowReaderMetadata,
        _mask: parquet::arrow::ProjectionMask,
        _group: usize,
        _skip: usize,
        _batch_rows: usize,
    ) -> Result<Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader>, super::GroupError>
    {
        match self.never {}
    }
}
