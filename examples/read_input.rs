//! Reads one input through the source API only (no mapping, no packing, no sending), to
//! measure a format's raw read speed and show that the reader's memory stays flat.
//!
//! Usage: `cargo run --release --example read_input -- [--reader-only] FILE [COLUMN...]`
//! `--reader-only` does only what a run's reader thread does (a CSV block with plain
//! quoting is scanned for its records and left for the mapper threads to parse), so it
//! measures the one serial stage. Resolves the given columns (all of the schema's when none are given; for NDJSON that
//! is the keys of the first rows), reads every row in 4096-row chunks and prints
//! `rows=N bytes=N elapsed_s=S mb_per_s=R rows_per_s=R` (bytes: the file's size).

use std::process::ExitCode;
use std::time::Instant;

use cdp_backfill::source::{self, SourceOptions};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let reader_only = args.first().is_some_and(|a| a == "--reader-only");
    if reader_only {
        args.remove(0);
    }
    let Some(path) = args.first() else {
        eprintln!("usage: read_input [--reader-only] FILE [COLUMN...]");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let opts = SourceOptions::default();
    let result = (|| -> Result<u64, source::SourceError> {
        let inputs = source::discover(&[path.into()], &opts)?;
        let info = &inputs[0];
        let mut opened = source::open(info, &opts)?;
        let names: Vec<String> = if args.len() > 1 {
            args[1..].to_vec()
        } else {
            opened.schema().column_names()
        };
        for n in &names {
            opened.schema().resolve(n);
        }
        let mut chunk = opened.new_chunk(info);
        let mut rows = 0u64;
        loop {
            if reader_only {
                opened.fill_deferred(&mut chunk, 4096)?;
            } else {
                opened.fill(&mut chunk, 4096)?;
            }
            if chunk.is_empty() {
                return Ok(rows);
            }
            rows += chunk.len() as u64;
        }
    })();
    match result {
        Ok(rows) => {
            let secs = started.elapsed().as_secs_f64();
            let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            println!(
                "rows={rows} bytes={bytes} elapsed_s={secs:.2} mb_per_s={:.1} rows_per_s={:.0}",
                bytes as f64 / 1e6 / secs,
                rows as f64 / secs
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
