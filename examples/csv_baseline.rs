//! The raw parse baseline: the `csv` crate reading a file into one reused `ByteRecord`
//! on one thread, doing nothing else. No engine can read CSV faster than this, so
//! `run --dry-run` is measured against it (`scripts/bench`, step a).
//!
//! Usage: `cargo run --release --example csv_baseline -- FILE`
//! Prints one line: `rows=N bytes=N elapsed_s=S mb_per_s=R rows_per_s=R`.

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: csv_baseline FILE");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot open {}: {e}", path.to_string_lossy());
            return ExitCode::from(1);
        }
    };
    // The same reader settings as the engine's CSV source: flexible rows, a 256 KiB buffer.
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .from_reader(file);
    let mut rec = csv::ByteRecord::new();
    let mut rows: u64 = 0;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => rows += 1,
            Ok(false) => break,
            Err(e) => {
                eprintln!("{}: {e}", path.to_string_lossy());
                return ExitCode::from(1);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = rdr.position().byte();
    // The header is a record too; report data rows, as the engine does.
    let rows = rows.saturating_sub(1);
    println!(
        "rows={rows} bytes={bytes} elapsed_s={elapsed:.3} mb_per_s={:.1} rows_per_s={:.0}",
        bytes as f64 / 1e6 / elapsed,
        rows as f64 / elapsed
    );
    ExitCode::SUCCESS
}
