//! The reading stage: every input, in order, into chunks of rows.
//!
//! The door: [`Reading`] says what to read and from where; [`Reading::run`] fills
//! chunks (recycled: empty ones come back through `free`) and hands each one on, in
//! order, numbered from 0. It is the one serial stage of a run, so it does as little as
//! it can: with enough mapper threads a CSV block is only scanned for whole records here
//! and parsed by the mappers ([`Opened::fill_deferred`]).
//!
//! A shard's reading ([`super::shard`]) ends at its [`Stop`]: the chunk that reaches it
//! is cut before the first row past it, and the input it stops in is never reported
//! as read to its end.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::shard::Stop;
use super::{open, open_at, Chunk, InputInfo, Opened, Position, SourceError, SourceOptions};

/// What to read.
pub struct Reading<'a> {
    pub inputs: &'a [Arc<InputInfo>],
    pub opts: &'a SourceOptions,
    /// Where to start: the first input read and its first row.
    pub start: Position,
    /// Where to stop (a shard's end); `None`: at the end of the last input.
    pub stop: Option<Stop>,
    /// Rows a chunk holds at most.
    pub chunk_rows: usize,
    /// Chunks this stage may create; past that it waits for one to come back.
    pub pool: usize,
    /// Leave CSV parsing to [`Chunk::materialize`] on the mapper threads.
    pub defer_parsing: bool,
    /// Rows to read at most from `start` on (`--limit`): the last chunk is cut to fit.
    pub limit: Option<u64>,
}

/// How reading ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// Every input was read to its end.
    AllRead,
    /// Stopped early: the run is shutting down (an interrupt, a failure downstream).
    Halted,
    /// Stopped at the row limit, inputs not all read.
    Limit,
}

impl Reading<'_> {
    /// Reads every input from `start` on. `hand(seq, chunk)` takes each filled chunk
    /// (false: stop, the run is shutting down); `done(input, rows)` learns each input's
    /// row count once it is read to the end. Stops early, without error, once `halted()`
    /// or once [`Reading::limit`] rows are read.
    pub fn run(
        &self,
        free: &Receiver<Chunk>,
        halted: impl Fn() -> bool,
        mut hand: impl FnMut(u64, Chunk) -> bool,
        mut done: impl FnMut(u32, u64),
    ) -> Result<ReadEnd, SourceError> {
        let (start, opts) = (self.start, self.opts);
        let mut left = self.limit.unwrap_or(u64::MAX);
        let mut seq = 0;
        let mut created = 0;
        let mut spare: Option<Chunk> = None;
        for (k, info) in self.inputs.iter().enumerate().skip(start.input as usize) {
            // A shard's part is all read once its stop is reached.
            if self.stop.is_some_and(|s| s.excludes(info.index, 0, 0)) {
                return Ok(ReadEnd::AllRead);
            }
            // Objects: this one's reading, and the next one's, start now, so a store a
            // round trip away answers the next while this one is read. Not under
            // `--limit`, which may stop long before an object's end.
            if self.limit.is_none() {
                if info.index != start.input || start.row == 0 {
                    info.prefetch();
                }
                if let Some(next) = self.inputs.get(k + 1) {
                    if !self.stop.is_some_and(|s| s.excludes(next.index, 0, 0)) {
                        next.prefetch();
                    }
                }
            }
            let stop_here = self.stop.filter(|s| s.input == info.index);
            let mut src: Opened = if info.index == start.input {
                open_at(info, opts, start)?
            } else {
                open(info, opts)?
            };
            let mut rows = if info.index == start.input {
                start.row
            } else {
                0
            };
            loop {
                if halted() {
                    return Ok(ReadEnd::Halted);
                }
                if left == 0 {
                    return Ok(ReadEnd::Limit);
                }
                let mut chunk = match spare.take().or_else(|| free.try_recv().ok()) {
                    Some(c) => c,
                    None if created < self.pool => {
                        created += 1;
                        src.new_chunk(info)
                    }
                    None => match free.recv() {
                        Ok(c) => c,
                        Err(_) => return Ok(ReadEnd::Halted),
                    },
                };
                if std::mem::discriminant(&chunk) != std::mem::discriminant(&src.new_chunk(info)) {
                    chunk = src.new_chunk(info);
                }
                let max_rows = (self.chunk_rows as u64).min(left) as usize;
                // A chunk the stop may cut needs its rows' offsets now.
                if self.defer_parsing && stop_here.is_none() {
                    src.fill_deferred(&mut chunk, max_rows)?;
                } else {
                    src.fill(&mut chunk, max_rows)?;
                }
                if chunk.is_empty() {
                    spare = Some(chunk);
                    break;
                }
                let cut = stop_here.and_then(|s| {
                    (0..chunk.len()).find(|&i| {
                        s.excludes(
                            info.index,
                            chunk.first_row() + i as u64,
                            chunk.row_offset(i),
                        )
                    })
                });
                if let Some(k) = cut {
                    chunk.truncate(k);
                    if !chunk.is_empty() {
                        hand(seq, chunk);
                    }
                    return Ok(ReadEnd::AllRead);
                }
                rows = chunk.first_row() + chunk.len() as u64;
                left -= (chunk.len() as u64).min(left);
                if !hand(seq, chunk) {
                    return Ok(ReadEnd::Halted);
                }
                seq += 1;
            }
            done(info.index, rows);
        }
        Ok(ReadEnd::AllRead)
    }
}
