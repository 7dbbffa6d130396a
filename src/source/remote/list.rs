//! An object URL → the objects it names, in the order local files are read.
//!
//! - One object (no trailing `/`, no pattern): a HEAD gives its identity. When there is
//!   no such object but there are objects under `URL/`, it is read as that prefix, as a
//!   local directory named without its slash would be.
//! - A prefix (`…/`): every object under it, at any depth.
//! - A glob (`…/2024-*/part-*.csv.gz`): the literal prefix is listed and the pattern
//!   matched against the rest of each key (`*` does not cross `/`).
//!
//! As under a local directory: a name starting with `.` or `_` at any level below the
//! prefix is skipped (`_SUCCESS`, `.part-0.crc`, `_temporary/`), so are directory
//! markers (`dir/`), and names without a known extension unless `--format` says what
//! they are. Objects are sorted by key, compared segment by segment as local paths are,
//! so `s3://b/export/` and a local copy of `export/` list in the same order. Keys are
//! whole path segments: `export/` never reaches `export2/`.
//!
//! Each object's size, ETag, version and modification time come from the listing (a
//! HEAD completes a listing without ETags): the identity a resume checks, the same
//! source on every run.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use super::locate::{locate, refused_certificate, Located, StoreEnv};
use super::redact::describe;
use super::{ObjectRuntime, RemoteError, RemoteObject};
use crate::source::Format;

/// The objects `arg` names, with the format each one's name says (or `forced`). A named
/// object whose format cannot be told is returned with `None`.
pub fn expand(
    rt: &Arc<ObjectRuntime>,
    arg: &str,
    env: &StoreEnv,
    forced: Option<Format>,
) -> Result<Vec<(RemoteObject, Option<Format>)>, RemoteError> {
    let loc = locate(arg, env)?;
    let object = |meta: ObjectMeta| {
        let display = loc.show(&meta.location);
        let format =
            forced.or_else(|| Format::from_path(std::path::Path::new(meta.location.as_ref())));
        (
            RemoteObject {
                store: loc.store.clone(),
                meta,
                rt: rt.clone(),
                display,
                warm: Default::default(),
            },
            format,
        )
    };
    if !loc.is_prefix && loc.glob.is_none() {
        // No such object (or, on some servers, an error for a "directory"): perhaps a
        // prefix named without its slash.
        let head = head(rt, &loc);
        if let Ok(Some(meta)) = head {
            return Ok(vec![object(meta)]);
        }
        let found = list(rt, &loc, forced.is_some())?;
        if found.is_empty() {
            return Err(match head {
                Err(e) => e,
                _ => RemoteError::NotFound { url: loc.display },
            });
        }
        return Ok(found.into_iter().map(object).collect());
    }
    let found = list(rt, &loc, forced.is_some())?;
    if found.is_empty() {
        return Err(RemoteError::Empty { url: loc.display });
    }
    Ok(found.into_iter().map(object).collect())
}

/// The object at `loc.path`, `None` when there is none.
fn head(rt: &ObjectRuntime, loc: &Located) -> Result<Option<ObjectMeta>, RemoteError> {
    let (store, path) = (loc.store.clone(), loc.path.clone());
    match rt.block_on(async move { store.head(&path).await }) {
        Ok(m) => Ok(Some(m)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(list_failed(loc, &e)),
    }
}

/// Why `loc` could not be listed: a certificate the store was refused for, or
/// anything else.
fn list_failed(loc: &Located, e: &object_store::Error) -> RemoteError {
    let why = describe(e);
    match refused_certificate(&why) {
        true => RemoteError::Tls {
            url: loc.display.clone(),
            why,
        },
        false => RemoteError::List {
            url: loc.display.clone(),
            why,
        },
    }
}

/// The objects under `loc.path` that are read: known formats (every name when
/// `any_name`), none hidden, matching the glob if there is one, in path order, each
/// with an ETag.
fn list(rt: &ObjectRuntime, loc: &Located, any_name: bool) -> Result<Vec<ObjectMeta>, RemoteError> {
    let store = loc.store.clone();
    let prefix = loc.path.clone();
    let fail = |e: object_store::Error| list_failed(loc, &e);
    let mut all: Vec<ObjectMeta> = rt
        .block_on(async move {
            let p = (!prefix.as_ref().is_empty()).then_some(&prefix);
            store.list(p).try_collect::<Vec<_>>().await
        })
        .map_err(fail)?;
    let pattern = match &loc.glob {
        Some(g) => Some(glob::Pattern::new(g).map_err(|e| RemoteError::Url {
            url: loc.display.clone(),
            why: format!("the pattern is not valid ({e})"),
        })?),
        None => None,
    };
    let base = loc.path.as_ref().len();
    all.retain(|m| {
        let key = m.location.as_ref();
        let below = key.get(base..).unwrap_or(key).trim_start_matches('/');
        let opts = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        !below.is_empty()
            && !key.ends_with('/')
            && !below
                .split('/')
                .any(|part| part.starts_with('.') || part.starts_with('_'))
            && pattern.as_ref().is_none_or(|p| p.matches_with(below, opts))
            && (any_name || Format::from_path(std::path::Path::new(key)).is_some())
    });
    all.sort_by(|a, b| by_segments(&a.location, &b.location));
    // The identity a resume checks and every GET's If-Match: a listing without ETags is
    // completed by HEADs (S3, GCS and Azure list them; some compatible servers do not).
    if all.iter().any(|m| m.e_tag.is_none()) {
        let store = loc.store.clone();
        let metas = all;
        all = rt
            .block_on(async move {
                let heads = metas.into_iter().map(|m| {
                    let store = store.clone();
                    async move {
                        match m.e_tag {
                            Some(_) => Ok(m),
                            None => store.head(&m.location).await.map(|h| ObjectMeta {
                                // Size and time as listed: the same source every run.
                                e_tag: h.e_tag,
                                version: h.version.or(m.version.clone()),
                                ..m
                            }),
                        }
                    }
                });
                futures::future::try_join_all(heads).await
            })
            .map_err(fail)?;
    }
    Ok(all)
}

/// Keys compared segment by segment, as `PathBuf`s are (`a/b` before `a-b`).
fn by_segments(a: &Path, b: &Path) -> std::cmp::Ordering {
    a.as_ref().split('/').cmp(b.as_ref().split('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_as_local_paths_do() {
        let mut keys = vec!["e/a-b.csv", "e/a/b.csv", "e/a.csv", "e/B.csv"];
        keys.sort_by(|a, b| by_segments(&Path::from(*a), &Path::from(*b)));
        let mut paths: Vec<std::path::PathBuf> = keys.iter().map(Into::into).collect();
        paths.sort();
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(keys, paths);
    }
}
