//! The object-store runtime, and one object as an input.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};

use super::redact::describe;
use super::stream::{ObjectReader, StreamOptions};
use super::{ObjectIdentity, RemoteError};
use crate::source::identity::{ContentIdentity, IDENTITY_SAMPLE};

/// The runtime every object-store request runs on: tokio, two workers (HTTP I/O needs
/// little CPU; the pipeline's own threads do the parsing). Created by `pipeline` only
/// when an input or the state is remote.
pub struct ObjectRuntime {
    rt: tokio::runtime::Runtime,
    /// How long a failing read is retried without progress.
    retry_for: std::time::Duration,
}

impl std::fmt::Debug for ObjectRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectRuntime")
    }
}

impl ObjectRuntime {
    /// Worker threads of the runtime.
    pub const WORKERS: usize = 2;

    /// `retry_for`: how long a failing read (or request) is retried without progress
    /// before it fails ([`super::DEFAULT_RETRY_FOR`] unless the user said).
    pub fn new(retry_for: std::time::Duration) -> io::Result<ObjectRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(Self::WORKERS)
            .thread_name("object-store")
            .enable_all()
            .build()?;
        Ok(ObjectRuntime { rt, retry_for })
    }

    pub fn retry_for(&self) -> std::time::Duration {
        self.retry_for
    }

    /// Runs `fut` on the runtime's workers and waits for it on the calling thread, which
    /// must not be one of them.
    pub fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = self.rt.spawn(fut);
        match self.rt.block_on(task) {
            Ok(v) => v,
            // A panic in the task is a bug: it stays loud.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(fut);
    }
}

/// One object, as listed: its store, its metadata (the identity every read must keep)
/// and how it is shown.
pub struct RemoteObject {
    pub store: Arc<dyn ObjectStore>,
    pub meta: ObjectMeta,
    pub rt: Arc<ObjectRuntime>,
    /// The object's URL, redacted.
    pub display: String,
    /// A reader from byte 0 started ahead of its use ([`RemoteObject::prefetch`]).
    pub warm: std::sync::Mutex<Option<Box<ObjectReader>>>,
}

impl std::fmt::Debug for RemoteObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteObject({})", self.display)
    }
}

impl RemoteObject {
    pub fn size(&self) -> u64 {
        self.meta.size
    }

    pub fn identity(&self) -> ObjectIdentity {
        ObjectIdentity {
            size: self.meta.size,
            e_tag: self.meta.e_tag.clone(),
            version: self.meta.version.clone(),
            modified_ns: self
                .meta
                .last_modified
                .timestamp_nanos_opt()
                .map_or(0, |n| n.max(0) as u128),
        }
    }

    /// A reader of the object from byte `offset` (a ranged GET): the one
    /// [`RemoteObject::prefetch`] started, if any and `offset` is 0.
    pub fn reader_at(&self, offset: u64) -> io::Result<ObjectReader> {
        if offset == 0 {
            if let Some(r) = self.warm_slot().take() {
                return Ok(*r);
            }
        }
        let opts = StreamOptions {
            retry_for: self.rt.retry_for(),
            ..StreamOptions::default()
        };
        super::stream::open_at(self, offset, opts)
    }

    /// Starts reading the object from its start, the whole of it, before it is opened:
    /// the next [`RemoteObject::reader_at`]`(0)` takes the reader, its first bytes
    /// already here. For the reading stage, which reads an object to its end (or to a
    /// shard's stop): at most [`super::stream::BUFFER`] bytes are pulled ahead, and
    /// none if it is never opened but the first request's. Once per object.
    /// Nothing to report: a reader that cannot start here fails again, and is
    /// reported, when the object is opened.
    pub fn prefetch(&self) {
        let mut slot = self.warm_slot();
        if slot.is_none() {
            let opts = StreamOptions {
                retry_for: self.rt.retry_for(),
                whole: true,
                ..StreamOptions::default()
            };
            *slot = super::stream::open_at(self, 0, opts).ok().map(Box::new);
        }
    }

    fn warm_slot(&self) -> std::sync::MutexGuard<'_, Option<Box<ObjectReader>>> {
        self.warm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes `ranges` of the object, one buffer per range: concurrent ranged GETs
    /// (ranges closer than [`super::parquet_fetch::COALESCE_GAP`] share one), each
    /// `If-Match` the listed ETag, checked again here.
    pub fn fetch(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>, RemoteError> {
        super::parquet_fetch::fetch(self, ranges)
    }

    /// The object's Parquet metadata (its footer).
    pub fn parquet_metadata(
        &self,
    ) -> Result<parquet::arrow::arrow_reader::ArrowReaderMetadata, String> {
        super::parquet_fetch::metadata(self)
    }

    /// See [`super::parquet_fetch::row_group_reader`].
    pub fn row_group_reader(
        &self,
        meta: &parquet::arrow::arrow_reader::ArrowReaderMetadata,
        mask: parquet::arrow::ProjectionMask,
        group: usize,
        skip: usize,
        batch_rows: usize,
    ) -> Result<Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader>, super::GroupError>
    {
        super::parquet_fetch::row_group_reader(self, meta, mask, group, skip, batch_rows)
    }

    /// One ranged GET, the ETag and size checked.
    pub(crate) async fn get_range(
        store: Arc<dyn ObjectStore>,
        meta: ObjectMeta,
        display: String,
        range: Range<u64>,
    ) -> Result<Bytes, RemoteError> {
        let at = range.start;
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            if_match: meta.e_tag.clone(),
            version: meta.version.clone(),
            ..Default::default()
        };
        let fail = |e: object_store::Error| classify(&display, &meta, at, e);
        let r = store.get_opts(&meta.location, opts).await.map_err(fail)?;
        if changed(&meta, &r.meta) {
            return Err(RemoteError::Changed {
                object: display.clone(),
                e_tag: meta.e_tag.clone().unwrap_or_default(),
            });
        }
        r.bytes().await.map_err(fail)
    }

    /// The first and last `n` bytes of the object (the whole object, twice, when it is
    /// at most `2n` bytes): one GET for a small object, two ranged GETs otherwise.
    pub fn ends(&self, n: u64) -> Result<(Bytes, Bytes), RemoteError> {
        self.rt.block_on(self.ends_owned(n))
    }

    /// [`RemoteObject::ends`] as a task of its own.
    fn ends_owned(
        &self,
        n: u64,
    ) -> impl Future<Output = Result<(Bytes, Bytes), RemoteError>> + Send + 'static {
        let (store, meta, display) = (self.store.clone(), self.meta.clone(), self.display.clone());
        async move {
            let size = meta.size;
            if size <= 2 * n {
                let all = super::parquet_fetch::fetch_owned(
                    store,
                    meta,
                    display,
                    std::iter::once(0..size).collect(),
                )
                .await?
                .pop()
                .unwrap_or_default();
                let head = all.slice(..(n.min(size) as usize));
                let tail = all.slice((size - n.min(size)) as usize..);
                return Ok((head, tail));
            }
            let mut got =
                super::parquet_fetch::fetch_owned(store, meta, display, vec![0..n, size - n..size])
                    .await?;
            let tail = got.pop().unwrap_or_default();
            let head = got.pop().unwrap_or_default();
            Ok((head, tail))
        }
    }
}

/// Objects whose identities [`identities_of_all`] reads at once.
pub const ENDS_AT_ONCE: usize = 16;

/// The content identity of each of `objs` (its [`RemoteObject::ends`] of
/// [`IDENTITY_SAMPLE`] bytes, hashed as they arrive), [`ENDS_AT_ONCE`] objects at a
/// time rather than one after another: a thousand objects a WAN round trip away would
/// otherwise wait for a thousand round trips in turn. One result per object, in order,
/// up to the first that failed (the rest are not asked for); only the identities are
/// kept, never the bytes.
pub fn identities_of_all(objs: &[&RemoteObject]) -> Vec<Result<ContentIdentity, String>> {
    use futures::StreamExt;
    let Some(first) = objs.first() else {
        return Vec::new();
    };
    let jobs: Vec<_> = objs
        .iter()
        .map(|o| {
            let (size, ends) = (o.size(), o.ends_owned(IDENTITY_SAMPLE));
            async move {
                let (head, tail) = ends.await.map_err(|e| e.to_string())?;
                ContentIdentity::from_parts(size, &head, &tail)
            }
        })
        .collect();
    first.rt.block_on(async move {
        let mut out = Vec::with_capacity(jobs.len());
        let mut all = futures::stream::iter(jobs).buffered(ENDS_AT_ONCE);
        while let Some(r) = all.next().await {
            // A store that fails one object's reads (after its retries) would fail the
            // next ones too: stop asking.
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    })
}

/// True when a response's metadata shows another version than the one listed: some
/// S3-compatible servers ignore `If-Match` on GET.
pub(crate) fn changed(listed: &ObjectMeta, now: &ObjectMeta) -> bool {
    (listed.e_tag.is_some() && now.e_tag.is_some() && listed.e_tag != now.e_tag)
        || listed.size != now.size
}

/// True for an answer that retrying cannot change: the object changed or is gone, or
/// the credentials may not read it.
pub(crate) fn is_fatal(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    matches!(
        e,
        E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotFound { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
    )
}

/// An object_store error while reading `display` at byte `at`, as the run reports it.
pub(crate) fn classify(
    display: &str,
    meta: &ObjectMeta,
    at: u64,
    e: object_store::Error,
) -> RemoteError {
    use object_store::Error as E;
    match e {
        E::Precondition { .. } | E::NotModified { .. } => RemoteError::Changed {
            object: display.to_string(),
            e_tag: meta.e_tag.clone().unwrap_or_default(),
        },
        E::NotFound { .. } => RemoteError::Read {
            object: display.to_string(),
            at,
            why: "the object was deleted".into(),
        },
        e => RemoteError::Read {
            object: display.to_string(),
            at,
            why: describe(&e),
        },
    }
}
