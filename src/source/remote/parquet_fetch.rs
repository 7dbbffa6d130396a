//! The byte ranges parquet's push decoders ask for, fetched from an object.
//!
//! Parquet's sans-IO decoders (`ParquetMetaDataPushDecoder` for the footer,
//! `ParquetPushDecoder` for row groups) say which ranges they need; the reading thread
//! fetches them here, as concurrent ranged GETs on the [`super::ObjectRuntime`], and
//! pushes them back. Decoding stays on the reading thread, as it is for a local file.
//!
//! What is fetched: the last [`FOOTER_GUESS`] bytes (footer and metadata of an ordinary
//! file in one request), then, per row group, only the projected column chunks. Ranges
//! closer than [`COALESCE_GAP`] share one request (object_store's `get_ranges` merges
//! up to 1 MiB apart, which would fetch unprojected columns).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectMeta, ObjectStore};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
};
use parquet::arrow::push_decoder::ParquetPushDecoderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataPushDecoder};
use parquet::DecodeResult;

use super::{GroupError, RemoteError, RemoteObject};
use crate::config::MAX_ROW_GROUP_FETCH;

/// The suffix fetched first for the footer.
pub const FOOTER_GUESS: u64 = 64 * 1024;
/// Two wanted ranges closer than this are fetched as one.
pub const COALESCE_GAP: u64 = 64 * 1024;

/// Fetches `ranges` of `obj`, one buffer per range asked.
pub fn fetch(obj: &RemoteObject, ranges: &[Range<u64>]) -> Result<Vec<Bytes>, RemoteError> {
    obj.rt.block_on(fetch_owned(
        obj.store.clone(),
        obj.meta.clone(),
        obj.display.clone(),
        ranges.to_vec(),
    ))
}

/// [`fetch`], as a task of its own (it owns what it needs).
pub(crate) async fn fetch_owned(
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    display: String,
    ranges: Vec<Range<u64>>,
) -> Result<Vec<Bytes>, RemoteError> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for &i in &order {
        let r = &ranges[i];
        match merged.last_mut() {
            Some(m) if r.start <= m.end.saturating_add(COALESCE_GAP) => m.end = m.end.max(r.end),
            _ => merged.push(r.clone()),
        }
    }
    let gets = merged
        .iter()
        .map(|r| RemoteObject::get_range(store.clone(), meta.clone(), display.clone(), r.clone()));
    let got: Vec<Bytes> = futures::future::try_join_all(gets).await?;
    ranges
        .iter()
        .map(|r| {
            let (k, m) = merged
                .iter()
                .enumerate()
                .find(|(_, m)| m.start <= r.start && r.end <= m.end)
                .ok_or_else(|| RemoteError::Read {
                    object: display.clone(),
                    at: r.start,
                    why: "a fetched range went missing".into(),
                })?;
            let (s, e) = ((r.start - m.start) as usize, (r.end - m.start) as usize);
            if e > got[k].len() {
                return Err(RemoteError::Read {
                    object: display.clone(),
                    at: m.start + got[k].len() as u64,
                    why: format!(
                        "the store sent {} bytes of {}",
                        got[k].len(),
                        m.end - m.start
                    ),
                });
            }
            Ok(got[k].slice(s..e))
        })
        .collect()
}

/// The Parquet metadata of `obj`, from one suffix request in the ordinary case.
pub fn metadata(obj: &RemoteObject) -> Result<ArrowReaderMetadata, String> {
    let size = obj.meta.size;
    let mut dec = ParquetMetaDataPushDecoder::try_new(size)
        .map_err(|e| e.to_string())?
        .with_page_index_policy(PageIndexPolicy::Skip);
    let guess = size.saturating_sub(FOOTER_GUESS)..size;
    let tail = fetch(obj, std::slice::from_ref(&guess)).map_err(|e| e.to_string())?;
    dec.push_ranges(vec![guess], tail)
        .map_err(|e| e.to_string())?;
    let meta = loop {
        match dec.try_decode().map_err(|e| e.to_string())? {
            DecodeResult::NeedsData(ranges) => {
                let data = fetch(obj, &ranges).map_err(|e| e.to_string())?;
                dec.push_ranges(ranges, data).map_err(|e| e.to_string())?;
            }
            DecodeResult::Data(m) => break m,
            DecodeResult::Finished => return Err("the file has no metadata".into()),
        }
    };
    ArrowReaderMetadata::try_new(Arc::new(meta), ArrowReaderOptions::new())
        .map_err(|e| e.to_string())
}

/// A reader of row group `group` of `obj` (its `mask` columns, `skip` rows skipped),
/// with the group's projected column chunks fetched; `None` when nothing is left of it.
pub fn row_group_reader(
    obj: &RemoteObject,
    meta: &ArrowReaderMetadata,
    mask: ProjectionMask,
    group: usize,
    skip: usize,
    batch_rows: usize,
) -> Result<Option<ParquetRecordBatchReader>, GroupError> {
    let rg = meta.metadata().row_group(group);
    let bytes: u64 = rg
        .columns()
        .iter()
        .enumerate()
        .filter(|(i, _)| mask.leaf_included(*i))
        .map(|(_, c)| c.compressed_size().max(0) as u64)
        .sum();
    if bytes > MAX_ROW_GROUP_FETCH {
        return Err(GroupError::Remote(RemoteError::RowGroupTooLarge {
            object: obj.display.clone(),
            group,
            bytes,
            limit: MAX_ROW_GROUP_FETCH,
        }));
    }
    let decode = |e: parquet::errors::ParquetError| GroupError::Decode(e.to_string());
    let mut b = ParquetPushDecoderBuilder::new_with_metadata(meta.clone())
        .with_projection(mask)
        .with_row_groups(vec![group])
        .with_batch_size(batch_rows);
    if skip > 0 {
        b = b.with_offset(skip);
    }
    let mut dec = b.build().map_err(decode)?;
    loop {
        match dec.try_next_reader().map_err(decode)? {
            DecodeResult::NeedsData(ranges) => {
                let data = fetch(obj, &ranges).map_err(GroupError::Remote)?;
                dec.push_ranges(ranges, data).map_err(decode)?;
            }
            DecodeResult::Data(r) => return Ok(Some(r)),
            DecodeResult::Finished => return Ok(None),
        }
    }
}
