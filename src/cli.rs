//! The command line: clap derive structs (what was typed) and, for each subcommand, one
//! fallible conversion that checks every flag into the plain configs the library runs
//! (ripgrep's `LowArgs` into `HiArgs`); then one function per subcommand runs it and
//! maps the result to an exit code. Nothing else in the crate knows clap, and the
//! library never exits the process: `main` does, with the code returned here.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, ApiKey, Endpoint, Limits, RunConfig};
use crate::error::RunError;
use crate::inspect::InspectOptions;
use crate::pipeline::Hooks;
use crate::progress::{Progress, ProgressMode, ProgressOptions, Recorded};
use crate::serve::{Faults, ServeConfig};
use crate::source::csv::CsvOptions;
use crate::source::{Format, SourceOptions};
use crate::summary::Summary;
use crate::validate::ValidateOptions;

/// Exit codes (also in the README).
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_REJECTS: u8 = 3;
pub const EXIT_INTERRUPTED: u8 = 130;

const AFTER_HELP: &str = "\
Exit codes: 0 every row delivered; 3 finished, some rows rejected (see the rejects file);
130 interrupted; 2 usage or mapping error (nothing was sent); 1 any other failure.

The API key is read from the CDP_API_KEY environment variable or --api-key-file; it is
never printed.";

#[derive(Debug, Parser)]
#[command(name = "cdp-backfill", version, about = "Backfill historical users and events into Customer.io Data Pipelines (or any Segment-compatible /v1/batch API).", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log lines on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(long, short, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// How log lines look: text (`[info cdp_backfill::send] ...`) or json (one object a
    /// line: ts, level, target, message), for log shippers.
    #[arg(long, global = true, default_value = "text", value_name = "text|json", value_parser = ["text", "json"])]
    pub log_format: String,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read inputs, map rows to calls, pack and send them; or run a plan's steps in order.
    #[command(after_help = "Examples:
  cdp-backfill run fixtures/events.csv --mapping fixtures/events.toml --endpoint local
  CDP_API_KEY=... cdp-backfill run export/ --mapping map.toml --endpoint eu
  cdp-backfill run events.csv --mapping map.toml --dry-run --output bodies.ndjson
  cdp-backfill run migration.toml --endpoint eu      # a plan: its steps in order")]
    Run(RunArgs),
    /// Run the local receiver: a stand-in for the API that checks limits and records calls.
    #[command(after_help = "Example:
  cdp-backfill serve --addr 127.0.0.1:8099 --record calls.ndjson
  cdp-backfill run events.csv --mapping map.toml --endpoint http://127.0.0.1:8099")]
    Serve(ServeArgs),
    /// Write a realistic event CSV (with planted bad rows) for tests and benchmarks.
    #[command(after_help = "Example:
  cdp-backfill generate --rows 100000 --seed 7 --out target/events.csv
  cdp-backfill generate --shape rich --rows 1000000 --seed 1 --out target/rich.csv")]
    Generate(GenerateArgs),
    /// Show how far the backfills in the state directory got (or one of them).
    #[command(after_help = "Examples:
  cdp-backfill status                       # every backfill in .cdp-backfill/
  cdp-backfill status events-3f2a9c1e       # one, by name
  cdp-backfill status cp.json               # one, by its checkpoint file
  cdp-backfill status migration.toml        # a plan: each step and the total")]
    Status(StatusArgs),
    /// Profile an input: columns, inferred types, empty ratios, samples, timestamp formats.
    #[command(after_help = "Examples:
  cdp-backfill inspect export.csv
  cdp-backfill inspect export.csv --emit-mapping map.toml
  cdp-backfill inspect export/ --emit-plan migration.toml   # one step per kind of file")]
    Inspect(InspectArgs),
    /// Read, map and pack like a run, but send nothing: counts, rejects, sizes, time range.
    #[command(after_help = "Examples:
  cdp-backfill validate export.csv --mapping map.toml
  cdp-backfill validate migration.toml               # every step of a plan")]
    Validate(ValidateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:
  cdp-backfill completions bash > ~/.local/share/bash-completion/completions/cdp-backfill
  cdp-backfill completions zsh > ~/.zfunc/_cdp-backfill
  cdp-backfill completions fish > ~/.config/fish/completions/cdp-backfill.fish")]
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// How inputs are read (run, inspect, validate).
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Input format, overriding file names (.csv .tsv .ndjson .jsonl .json .parquet, plus .gz/.zst); required for `-` (stdin).
    #[arg(long, value_parser = ["csv", "tsv", "ndjson", "jsonl", "json", "parquet"], value_name = "FORMAT")]
    pub format: Option<String>,
    /// CSV field delimiter (one byte; `\t` for tab).
    #[arg(long, default_value = ",", value_name = "CHAR")]
    pub delimiter: String,
    /// CSV quote character.
    #[arg(long, default_value = "\"", value_name = "CHAR")]
    pub quote: String,
    /// The CSV files have no header row; columns are named 1, 2, 3...
    #[arg(long)]
    pub no_header: bool,
}

impl InputArgs {
    fn source_options(&self) -> Result<SourceOptions, UsageError> {
        let delimiter = one_byte("delimiter", &self.delimiter)?;
        let quote = one_byte("quote", &self.quote)?;
        if delimiter == quote {
            return Err(UsageError(format!(
                "--delimiter and --quote are both {:?}: a CSV dialect needs two different characters",
                quote as char
            )));
        }
        Ok(SourceOptions {
            format: self.format.as_deref().and_then(Format::parse),
            csv: CsvOptions {
                delimiter,
                quote,
                has_header: !self.no_header,
                ..CsvOptions::default()
            },
        })
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The input file (a directory with --emit-plan).
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Rows to read at most.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub rows: usize,
    /// Write a commented starter mapping (guessing ids, email, event, timestamp) here.
    #[arg(long, value_name = "FILE")]
    pub emit_mapping: Option<PathBuf>,
    /// Write a starter plan for the directory INPUT here: one step per kind of file
    /// found (same format and columns), each with a starter mapping beside the plan.
    #[arg(long, value_name = "PLAN.toml", conflicts_with = "emit_mapping")]
    pub emit_plan: Option<PathBuf>,
    #[command(flatten)]
    pub input_args: InputArgs,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Input files or directories; or a plan file, whose every step is validated.
    #[arg(required = true, value_name = "INPUT|PLAN")]
    pub inputs: Vec<PathBuf>,
    /// The mapping file (TOML); not with a plan.
    #[arg(long, short, value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    /// The state directory, where a plan's inline mappings are written.
    #[arg(long, env = "CDP_BACKFILL_STATE", default_value = config::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state: PathBuf,
    #[arg(long, default_value_t = config::DEFAULT_MAX_REQUEST_BYTES, value_name = "BYTES")]
    pub max_request_bytes: usize,
    #[arg(long, default_value_t = config::DEFAULT_MAX_CALL_BYTES, value_name = "BYTES")]
    pub max_call_bytes: usize,
    /// How many of the first rejects to show.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub show_rejects: usize,
    /// Also write each request body that would be sent, one per line.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Print the first N calls as they would be sent (pretty-printed JSON).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub show_calls: usize,
    /// Exit 2 when a mapped column or path has no value in any row.
    #[arg(long)]
    pub strict_mapping: bool,
    #[command(flatten)]
    pub input_args: InputArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A backfill's name (as listed), its checkpoint file, a plan file, a directory of
    /// shard checkpoints, or an object URL or prefix (s3://bucket/state/). Without it:
    /// every backfill in the state directory.
    #[arg(value_name = "NAME|CHECKPOINT|PLAN")]
    pub what: Option<PathBuf>,
    /// The state directory.
    #[arg(long, env = "CDP_BACKFILL_STATE", default_value = config::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Input files or directories (read in the order given; directories sorted by path);
    /// or, without --mapping, one plan file (TOML with [[step]] tables).
    #[arg(required = true, value_name = "INPUT|PLAN")]
    pub inputs: Vec<PathBuf>,
    /// The mapping file (TOML) that says how rows become calls (a plan names its own).
    #[arg(long, short, value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    /// Where to send: us, eu, local (the built-in receiver on loopback), or a base URL.
    #[arg(long, env = "CDP_ENDPOINT", value_name = "us|eu|local|URL")]
    pub endpoint: Option<String>,
    /// A file holding the API key (instead of the CDP_API_KEY variable).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Requests per second at most.
    #[arg(long, default_value_t = config::DEFAULT_RATE_PER_SEC, value_name = "N", value_parser = per_second)]
    pub rate: u32,
    /// Requests in flight at once: auto (as many as --rate needs at the measured round
    /// trip, cut back on 429s and errors) or a number from 1 to 256 that pins it.
    #[arg(long, default_value = "auto", value_name = "auto|N", value_parser = concurrency)]
    pub concurrency: config::ConcurrencySetting,
    /// HTTP version: auto (HTTP/2 where the server offers it over TLS, else 1.1), 1.1,
    /// or 2 (over plain http:// with prior knowledge).
    #[arg(long, default_value = "auto", value_name = "auto|1.1|2", value_parser = http_version)]
    pub http_version: config::HttpVersion,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = config::DEFAULT_MAX_REQUEST_BYTES, value_name = "BYTES")]
    pub max_request_bytes: usize,
    /// Largest single call, in bytes; a larger call is rejected, never sent.
    #[arg(long, default_value_t = config::DEFAULT_MAX_CALL_BYTES, value_name = "BYTES")]
    pub max_call_bytes: usize,
    /// Largest input record (a CSV record's or an NDJSON line's raw bytes); a longer one
    /// is rejected without being held in memory (a CSV record over 4x this stops the run:
    /// usually an unclosed quote).
    #[arg(long, default_value_t = config::DEFAULT_MAX_RECORD_BYTES, value_name = "BYTES")]
    pub max_record_bytes: usize,
    /// Where rejected rows go (NDJSON: source, row, reason, record). Default: the
    /// backfill's directory in the state directory (rejects.ndjson).
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// Read, map and pack, but send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: write each request body as it would be sent, one per line.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub output: Option<PathBuf>,
    /// Retries of a failing request before the run stops (the checkpoint stays behind it).
    #[arg(long, default_value_t = config::DEFAULT_MAX_RETRIES, value_name = "N")]
    pub max_retries: u32,
    /// Seconds of the first retry's backoff (doubling each retry, full jitter).
    #[arg(long, default_value_t = config::DEFAULT_BACKOFF_BASE.as_secs_f64(), value_name = "SECS")]
    pub backoff_base: f64,
    /// Longest backoff between retries, in seconds (a server's Retry-After may ask longer).
    #[arg(long, default_value_t = config::DEFAULT_BACKOFF_CAP.as_secs_f64(), value_name = "SECS")]
    pub backoff_cap: f64,
    /// Calls per second at most (each request counts its calls), as well as --rate.
    #[arg(long, value_name = "N", value_parser = per_second)]
    pub events_rate: Option<u32>,
    /// Compress request bodies (Content-Encoding: gzip); size limits apply before compression.
    #[arg(long)]
    pub gzip: bool,
    /// Gzip level, 1 (fastest) to 9 (smallest); implies --gzip. With --gzip alone: 1, the
    /// fastest over a fast uplink; 3 sends about 30% fewer bytes for more CPU.
    #[arg(long, value_name = "1-9", value_parser = gzip_level)]
    pub gzip_level: Option<config::GzipLevel>,
    /// Do not send X-Strict-Mode: 1 (invalid calls would then be dropped silently by the API).
    #[arg(long)]
    pub no_strict: bool,
    /// Seconds to wait for a connection.
    #[arg(long, default_value_t = config::DEFAULT_CONNECT_TIMEOUT.as_secs_f64(), value_name = "SECS")]
    pub connect_timeout: f64,
    /// Seconds to wait for a whole request.
    #[arg(long, default_value_t = config::DEFAULT_REQUEST_TIMEOUT.as_secs_f64(), value_name = "SECS")]
    pub request_timeout: f64,
    #[command(flatten)]
    pub input_args: InputArgs,
    /// Rows per mapping task.
    #[arg(long, default_value_t = config::DEFAULT_CHUNK_ROWS, value_name = "N", hide = true)]
    pub chunk_rows: usize,
    /// With --endpoint local: record every accepted call to this file (NDJSON).
    #[arg(long, value_name = "FILE")]
    pub local_record: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// Progress display: bars on a terminal and a plain line every few seconds otherwise
    /// (auto), bars even when stderr does not look like a terminal (always), or none.
    #[arg(long, value_parser = ["auto", "always", "never"], default_value = "auto", value_name = "WHEN")]
    pub progress: String,
    /// Seconds between plain progress lines when stderr is not a terminal.
    #[arg(long, default_value_t = crate::progress::DEFAULT_LOG_INTERVAL.as_secs_f64(), value_name = "SECS", hide = true)]
    pub progress_interval: f64,
    /// Write a self-contained HTML report of the run (charts of throughput, retries and
    /// 429s, call sizes, request fill, rejects by reason; the settings; never the key).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Stamp every call's sentAt with the time it is sent (on each attempt). Off by
    /// default: sentAt invites the API's clock-skew correction of timestamps.
    #[arg(long, value_parser = ["now"], value_name = "now")]
    pub sent_at: Option<String>,
    /// Before sending anything, read the first 1,000 rows of each input and stop (exit 2)
    /// if a mapped column or path has no value in any of them.
    #[arg(long)]
    pub strict_mapping: bool,
    /// Stop the run once more than this share of the rows read is rejected (checked
    /// from the first 1,000 rows on, and at the end): 0.05 or 5%.
    #[arg(long, value_name = "RATE", value_parser = reject_rate)]
    pub max_reject_rate: Option<f64>,
    /// The checkpoint file: rerunning the same command resumes from it. Default: the
    /// backfill's directory in the state directory (checkpoint.json), found again by the
    /// content of its inputs. An object URL (s3://bucket/state/) keeps the checkpoint and
    /// the rejects in object storage; with --shard, a directory or prefix all shards share.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// The state directory: one directory per backfill (its checkpoint and rejects), so
    /// backfills run in one place never collide.
    #[arg(long, env = "CDP_BACKFILL_STATE", default_value = config::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state: PathBuf,
    /// A trial: stop once the first N rows of the inputs (in order) are done, sent under
    /// the messageIds the full run gives them. The same command without --limit then
    /// resumes after them: nothing is sent twice.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// A trial: send every K-th row of each input (rows 1, K+1, 2K+1, ...) under the
    /// messageIds the full run gives them, and move no checkpoint: the full run sends
    /// every row, the sampled ones again with the same messageIds (the API drops the
    /// repeats).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// Keep no checkpoint (a rerun starts from the beginning).
    #[arg(long, conflicts_with = "restart")]
    pub no_checkpoint: bool,
    /// Ignore an existing checkpoint and start from the beginning.
    #[arg(long)]
    pub restart: bool,
    /// Read only shard K of N (0 <= K < N): a contiguous part of the inputs, balanced by
    /// bytes; each shard keeps its own checkpoint and rejects file (named after the
    /// shard, under --checkpoint), and takes 1/N of --rate and --events-rate. The
    /// messageIds are those of a single run.
    #[arg(long, value_name = "K/N", value_parser = shard_arg)]
    pub shard: Option<config::Shard>,
    /// With --checkpoint in object storage: seconds its checkpoint must stay unchanged
    /// before another process takes the backfill over (the holder writes it every third
    /// of that; a run that ends releases it at once).
    #[arg(long, default_value_t = config::DEFAULT_LEASE_TTL.as_secs_f64(), value_name = "SECS")]
    pub lease_ttl: f64,
    /// Inputs in object storage: seconds a failing read (5xx, reset, timeout) is retried
    /// without progress before the run stops, naming the object; run the same command
    /// again to resume.
    #[arg(long, default_value_t = crate::source::remote::DEFAULT_RETRY_FOR.as_secs_f64(), value_name = "SECS")]
    pub read_retry_secs: f64,
    /// The exit code of a run that finished with rejected rows (default 3). A Kubernetes
    /// Job would retry a pod that exits 3: give 0 there (`status` still shows the rejects).
    #[arg(long, default_value_t = EXIT_REJECTS, value_name = "CODE")]
    pub rejects_exit_code: u8,
    /// After Ctrl-C or SIGTERM, seconds to let requests in flight finish.
    #[arg(long, default_value_t = config::DEFAULT_DRAIN_TIMEOUT.as_secs_f64(), value_name = "SECS")]
    pub drain_timeout: f64,
    /// Seconds between checkpoint writes at most (sooner while half the replay window is taken).
    #[arg(long, default_value_t = config::DEFAULT_CHECKPOINT_INTERVAL.as_secs_f64(), value_name = "SECS", hide = true)]
    pub checkpoint_interval: f64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:8099", value_name = "ADDR")]
    pub addr: std::net::SocketAddr,
    /// Require this key (HTTP Basic, as the API does); default: no auth.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Append every accepted call to this file (NDJSON).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Largest request body accepted, in bytes; a larger one gets 200 and is dropped, as
    /// the real API does (a 400 naming the limit in strict mode).
    #[arg(long, default_value_t = config::DEFAULT_MAX_REQUEST_BYTES, value_name = "BYTES")]
    pub max_request_bytes: usize,
    /// Largest single call accepted, in bytes; larger calls are dropped (refused in
    /// strict mode).
    #[arg(long, default_value_t = config::DEFAULT_MAX_CALL_BYTES, value_name = "BYTES")]
    pub max_call_bytes: usize,
    /// Fraction of requests answered 500/502/503.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub fail_rate: f64,
    /// Fraction of requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub throttle_rate: f64,
    /// Retry-After seconds sent with injected 429s.
    #[arg(long, default_value_t = 1, value_name = "SECS")]
    pub retry_after: u64,
    /// Answer 429 above this many requests per second.
    #[arg(long, value_name = "N")]
    pub max_rps: Option<u32>,
    /// Delay before answering, in milliseconds (a simulated round trip).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_ms: u64,
    /// Move each delay by a uniform draw within this many milliseconds either way
    /// (seeded by --seed; never below zero).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_jitter_ms: u64,
    /// Read request bodies no faster than this many megabits per second, shared by all
    /// connections: a simulated client uplink (gzip bodies count compressed). 0: no cap.
    #[arg(long, default_value_t = 0.0, value_name = "MBPS")]
    pub bandwidth_mbps: f64,
    /// Fraction of requests whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub drop_rate: f64,
    /// Fraction of calls treated as invalid (strict mode: 400 naming them).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub invalid_rate: f64,
    /// Seed for the fault injection.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many event rows to write (after the header).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub rows: u64,
    /// Seed of the generator: the same seed and row count give the same file.
    #[arg(long, default_value_t = 42, value_name = "N")]
    pub seed: u64,
    /// The CSV file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// `events`: twelve columns, about 200 bytes a row (fixtures/events.toml maps it).
    /// `rich`: fifteen columns, about 570 bytes a row with a JSON column
    /// (fixtures/rich.toml maps it).
    #[arg(long, value_enum, default_value_t = GenerateShape::Events)]
    pub shape: GenerateShape,
}

/// `generate --shape`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenerateShape {
    Events,
    Rich,
}

/// `--rate` and `--events-rate`: a whole number per second (zero is refused later, with
/// its own message).
fn http_version(s: &str) -> Result<config::HttpVersion, String> {
    match s.trim() {
        "auto" => Ok(config::HttpVersion::Auto),
        "1.1" | "1" => Ok(config::HttpVersion::Http11),
        "2" | "2.0" => Ok(config::HttpVersion::Http2),
        _ => Err("expected auto, 1.1 or 2".to_string()),
    }
}

fn concurrency(s: &str) -> Result<config::ConcurrencySetting, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(config::ConcurrencySetting::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=config::MAX_CONCURRENCY).contains(&n) => {
            Ok(config::ConcurrencySetting::Fixed(n))
        }
        _ => Err(format!(
            "expected auto or a number from 1 to {}",
            config::MAX_CONCURRENCY
        )),
    }
}

fn gzip_level(s: &str) -> Result<config::GzipLevel, String> {
    s.trim()
        .parse::<u8>()
        .ok()
        .and_then(config::GzipLevel::new)
        .ok_or_else(|| {
            format!(
                "expected a gzip level from {} (fastest) to {} (smallest)",
                config::GzipLevel::MIN,
                config::GzipLevel::MAX
            )
        })
}

fn per_second(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| "expected a whole number per second, such as 500".to_string())
}

fn shard_arg(s: &str) -> Result<config::Shard, String> {
    config::Shard::parse(s)
}

/// Shard `s`'s own copy of a path: inside a directory (a path ending in `/`, or one
/// that is a directory) as `shard-K-of-N.NAME`, else the file name with the shard before
/// its extension (`run.json` → `run.shard-0001-of-0004.json`).
pub fn shard_path(path: &std::path::Path, s: config::Shard, name: &str) -> PathBuf {
    let text = path.to_string_lossy();
    if text.ends_with('/') || path.is_dir() {
        return PathBuf::from(format!(
            "{}/{}.{name}",
            text.trim_end_matches('/'),
            s.file_stem()
        ));
    }
    let file = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let renamed = match file.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{}.{ext}", s.file_stem()),
        _ => format!("{file}.{}", s.file_stem()),
    };
    path.with_file_name(renamed)
}

/// A user mistake found while building the config.
#[derive(Debug)]
pub struct UsageError(pub String);

fn one_byte(what: &str, s: &str) -> Result<u8, UsageError> {
    match s {
        "\\t" | "tab" => Ok(b'\t'),
        _ if s.len() == 1 => Ok(s.as_bytes()[0]),
        _ => Err(UsageError(format!(
            "--{what} must be a single ASCII character (got \"{s}\")"
        ))),
    }
}

fn secs(what: &str, v: f64) -> Result<Duration, UsageError> {
    Duration::try_from_secs_f64(v).map_err(|_| {
        UsageError(format!(
            "--{what} must be a non-negative number of seconds (got {v})"
        ))
    })
}

/// Warns (on stderr; the run goes on) when the key file can be read or written by
/// anyone but its owner, naming the fix.
fn warn_if_shared(f: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(f) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                note(&format!(
                    "warning: --api-key-file {} is accessible to other users (mode {mode:o}); restrict it with: chmod 600 {}",
                    f.display(),
                    f.display()
                ));
            }
        }
    }
}

/// Reads the API key from `--api-key-file` or `CDP_API_KEY`.
fn read_key(file: Option<&PathBuf>) -> Result<Option<ApiKey>, UsageError> {
    if let Some(f) = file {
        warn_if_shared(f);
        let text = std::fs::read_to_string(f)
            .map_err(|e| UsageError(format!("cannot read --api-key-file {}: {e}", f.display())))?;
        let key = text.trim();
        if key.is_empty() {
            return Err(UsageError(format!(
                "--api-key-file {} is empty",
                f.display()
            )));
        }
        return Ok(Some(ApiKey::new(key)));
    }
    Ok(std::env::var("CDP_API_KEY")
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .map(ApiKey::new))
}

/// A validated `run`: what the library runs, and what the command does around it.
pub struct RunPlan {
    pub cfg: RunConfig,
    pub src: SourceOptions,
    pub progress: ProgressOptions,
    outputs: RunOutputs,
    /// `run PLAN.toml`: the steps, each run with `cfg` as its base.
    pub migration: Option<crate::migration::MigrationPlan>,
    /// The exit code of a run that finished with rejects.
    rejects_exit: u8,
}

impl RunArgs {
    /// Checks every flag and turns them into a [`RunPlan`], in one fallible step.
    pub fn into_plan(mut self) -> Result<RunPlan, UsageError> {
        let migration = self.migration()?;
        // Found now, not after an hours-long run.
        for (flag, p) in [
            ("--summary-json", &self.summary_json),
            ("--report", &self.report),
        ] {
            if let Some(p) = p {
                check_output_path(flag, p)?;
            }
        }
        let progress = ProgressOptions {
            mode: ProgressMode::parse(&self.progress).unwrap_or_default(),
            quiet: self.quiet,
            log_interval: match secs("progress-interval", self.progress_interval) {
                Ok(d) if d >= Duration::from_millis(100) => d,
                _ => {
                    return Err(UsageError(
                        "--progress-interval must be at least 0.1 seconds".into(),
                    ))
                }
            },
        };
        let outputs = RunOutputs {
            summary_json: self.summary_json.clone(),
            report: self.report.clone(),
            quiet: self.quiet,
        };
        let endpoint = match self.endpoint.as_deref() {
            None if self.dry_run => Endpoint::Local,
            None => {
                return Err(UsageError(
                    "say where to send: --endpoint us, eu, local (the built-in receiver) or a base URL (or set CDP_ENDPOINT)".into(),
                ))
            }
            Some("us") => Endpoint::Url(config::US_BASE_URL.into()),
            Some("eu") => Endpoint::Url(config::EU_BASE_URL.into()),
            Some("local") => Endpoint::Local,
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                let u = u.trim_end_matches('/').trim_end_matches("/v1").to_string();
                // Messages show the URL without any user name or password in it.
                let shown = config::strip_userinfo(&u);
                if u.starts_with("http://") && !config::url_is_loopback(&u) {
                    return Err(UsageError(format!(
                        "--endpoint {shown}: plain http:// is allowed only for loopback addresses, so the key never crosses a network in clear; use https://"
                    )));
                }
                if shown != u {
                    return Err(UsageError(format!(
                        "--endpoint {shown}: the URL holds a user name or password; give the URL without them and the API key in CDP_API_KEY or --api-key-file (the key is sent as HTTP Basic auth, and kept out of logs, checkpoints and reports)"
                    )));
                }
                Endpoint::Url(u)
            }
            Some(other) => {
                return Err(UsageError(format!(
                    "--endpoint \"{}\" is not us, eu, local or an http(s):// URL",
                    config::strip_userinfo(other)
                )))
            }
        };
        let api_key = read_key(self.api_key_file.as_ref())?;
        if api_key.is_none() && !self.dry_run && !endpoint.is_loopback() {
            return Err(UsageError(
                "no API key: set CDP_API_KEY or pass --api-key-file FILE (or use --endpoint local to rehearse)".into(),
            ));
        }
        if self.rate == 0 {
            return Err(UsageError(
                "--rate must be at least 1 request per second".into(),
            ));
        }
        if self.chunk_rows == 0 {
            return Err(UsageError("--chunk-rows must be at least 1".into()));
        }
        let limits = Limits {
            max_request_bytes: self.max_request_bytes,
            max_call_bytes: self.max_call_bytes,
        };
        if limits.max_call_bytes < 64 || limits.max_request_bytes < limits.max_call_bytes + 16 {
            return Err(UsageError(format!(
                "--max-call-bytes ({}) must be at least 64 and --max-request-bytes ({}) at least 16 bytes more, so every call fits in a request",
                limits.max_call_bytes, limits.max_request_bytes
            )));
        }
        if self.max_record_bytes < 1024 {
            return Err(UsageError(format!(
                "--max-record-bytes must be at least 1024 (got {})",
                self.max_record_bytes
            )));
        }
        let mut src = self.input_args.source_options()?;
        src.csv.max_record_bytes = self.max_record_bytes;
        let backoff_base = secs("backoff-base", self.backoff_base)?;
        let backoff_cap = secs("backoff-cap", self.backoff_cap)?;
        if backoff_cap < backoff_base {
            return Err(UsageError(format!(
                "--backoff-cap ({}) must be at least --backoff-base ({})",
                self.backoff_cap, self.backoff_base
            )));
        }
        if self.events_rate == Some(0) {
            return Err(UsageError(
                "--events-rate must be at least 1 call per second".into(),
            ));
        }
        // A sample sends rows the checkpoint cannot count (the full run sends them all).
        let keeps_checkpoint = !self.dry_run && !self.no_checkpoint && self.sample.is_none();
        // A shard takes its share of the workspace's budgets, and files of its own.
        let (mut rate, mut events_rate) = (self.rate, self.events_rate);
        let (mut checkpoint, mut rejects) = (self.checkpoint.clone(), self.rejects.clone());
        if let Some(s) = self.shard {
            let share = |flag: &str, total: u32| {
                s.share(total).ok_or_else(|| {
                    UsageError(format!(
                        "{flag} {total} is the whole workspace's budget, shared by {} shards: it must be at least {}, one per shard",
                        s.n, s.n
                    ))
                })
            };
            rate = share("--rate", rate)?;
            events_rate = events_rate.map(|e| share("--events-rate", e)).transpose()?;
            match &self.checkpoint {
                Some(c) => {
                    let in_dir = c.to_string_lossy().ends_with('/') || c.is_dir();
                    rejects = match &self.rejects {
                        Some(r) => Some(shard_path(r, s, "rejects.ndjson")),
                        None if in_dir => Some(shard_path(c, s, "rejects.ndjson")),
                        // Beside the shard's checkpoint (the state directory's rule).
                        None => None,
                    };
                    checkpoint = Some(shard_path(c, s, "checkpoint.json"));
                }
                None if keeps_checkpoint => {
                    return Err(UsageError(format!(
                        "--shard {}/{} needs --checkpoint: a directory (state/) or an object storage prefix (s3://bucket/state/) that every shard is given; each shard keeps its checkpoint and rejects there under its own name",
                        s.k, s.n
                    )))
                }
                None => rejects = self.rejects.as_ref().map(|r| shard_path(r, s, "rejects.ndjson")),
            }
        }
        // State in object storage: a prefix holds the checkpoint, and the rejects go
        // beside it as numbered parts under a prefix of their own.
        if let Some(c) = checkpoint
            .as_ref()
            .map(|c| c.to_string_lossy().into_owned())
            .filter(|c| crate::source::remote::is_object_url(c))
        {
            let c = match c.ends_with('/') {
                true => format!("{c}checkpoint.json"),
                false => c,
            };
            if self.rejects.is_none()
                && rejects
                    .as_ref()
                    .is_none_or(|r| !crate::source::remote::is_object_url(&r.to_string_lossy()))
            {
                let stem = c.strip_suffix(".json").unwrap_or(&c);
                let stem = stem.strip_suffix(".checkpoint").unwrap_or(stem);
                let stem = stem
                    .strip_suffix("/checkpoint")
                    .map_or_else(|| stem.to_string(), |dir| format!("{dir}/"));
                rejects = Some(PathBuf::from(format!(
                    "{stem}{}rejects/",
                    if stem.ends_with('/') { "" } else { "." }
                )));
            }
            checkpoint = Some(PathBuf::from(c));
        }
        // (flag, path, written, written only at the end)
        let own_files = [
            ("--rejects", rejects.as_ref(), true, false),
            ("--checkpoint", checkpoint.as_ref(), keeps_checkpoint, false),
            ("--output", self.output.as_ref(), true, false),
            ("--local-record", self.local_record.as_ref(), true, false),
            ("--summary-json", self.summary_json.as_ref(), true, true),
            ("--report", self.report.as_ref(), true, true),
            ("--api-key-file", self.api_key_file.as_ref(), false, false),
        ]
        .into_iter()
        .filter_map(|(flag, p, written, at_end)| {
            p.map(|p| config::OwnFile {
                flag,
                path: p.clone(),
                written,
                at_end,
            })
        })
        .collect();
        let cfg = RunConfig {
            own_files,
            inputs: self.inputs,
            mapping_path: self.mapping.unwrap_or_default(),
            endpoint,
            api_key,
            rate_per_sec: rate,
            concurrency: self.concurrency,
            http_version: self.http_version,
            limits,
            rejects_given: rejects.is_some(),
            rejects_path: rejects.unwrap_or_default(),
            dry_run: self.dry_run,
            output: self.output,
            max_retries: self.max_retries,
            backoff_base,
            backoff_cap,
            events_rate_per_sec: events_rate,
            gzip: self
                .gzip_level
                .or(self.gzip.then_some(config::GzipLevel::DEFAULT)),
            connect_timeout: secs("connect-timeout", self.connect_timeout)?,
            request_timeout: secs("request-timeout", self.request_timeout)?,
            strict: !self.no_strict,
            chunk_rows: self.chunk_rows,
            max_record_bytes: self.max_record_bytes,
            local_record: self.local_record,
            sent_at: self.sent_at.is_some(),
            strict_mapping: self.strict_mapping,
            max_reject_rate: self.max_reject_rate,
            checkpoint_given: self.checkpoint.is_some(),
            checkpoint: keeps_checkpoint.then(|| checkpoint.unwrap_or_default()),
            state_dir: self.state,
            backfill_name: None,
            limit: self.limit,
            sample: self.sample,
            restart: self.restart,
            checkpoint_interval: secs("checkpoint-interval", self.checkpoint_interval)?,
            drain_timeout: secs("drain-timeout", self.drain_timeout)?,
            quiet: self.quiet,
            shard: self.shard,
            lease_ttl: match secs("lease-ttl", self.lease_ttl)? {
                d if d >= Duration::from_secs(1) => d,
                _ => return Err(UsageError("--lease-ttl must be at least 1 second".into())),
            },
            read_retry: secs("read-retry-secs", self.read_retry_secs)?,
        };
        Ok(RunPlan {
            cfg,
            src,
            progress,
            outputs,
            migration,
            rejects_exit: self.rejects_exit_code,
        })
    }

    /// `run PLAN.toml` (one `.toml` input, no `--mapping`): the plan, read and checked,
    /// and the flags that belong to one backfill refused. Else `--mapping` is required.
    fn migration(&mut self) -> Result<Option<crate::migration::MigrationPlan>, UsageError> {
        let plan = match (&self.mapping, self.inputs.as_slice()) {
            (Some(_), _) => return Ok(None),
            (None, [one]) if crate::migration::looks_like_plan(one) => one.clone(),
            (None, _) => {
                return Err(UsageError(
                    "--mapping FILE is required: it says how rows become calls (or run a plan of several steps: cdp-backfill run migration.toml)".into(),
                ))
            }
        };
        for (flag, given) in [
            ("--checkpoint", self.checkpoint.is_some()),
            ("--rejects", self.rejects.is_some()),
            ("--limit", self.limit.is_some()),
            ("--sample", self.sample.is_some()),
            ("--no-checkpoint", self.no_checkpoint),
            ("--shard", self.shard.is_some()),
            ("--output", self.output.is_some()),
            ("--local-record", self.local_record.is_some()),
        ] {
            if given {
                return Err(UsageError(format!(
                    "{flag} is not for a plan: each step keeps its own files in the state directory (--state). Run one step's mapping and inputs on their own to use {flag}"
                )));
            }
        }
        let m = crate::migration::load(&plan).map_err(|e| UsageError(e.to_string()))?;
        // A placeholder: each step sets its own mapping.
        self.mapping = Some(plan);
        Ok(Some(m))
    }
}

impl InspectArgs {
    /// Checks the flags into what `inspect` runs, and where its starter mapping goes.
    pub fn into_options(self) -> Result<InspectRun, UsageError> {
        let src = self.input_args.source_options()?;
        if let Some(plan) = self.emit_plan {
            if !self.input.is_dir() {
                return Err(UsageError(format!(
                    "--emit-plan: {} is not a directory; name the export directory whose files the plan's steps read",
                    self.input.display()
                )));
            }
            return Ok(InspectRun::Plan {
                dir: self.input,
                plan,
                src,
            });
        }
        // A starter mapping never replaces a file: not the input, and not a mapping that
        // may hold a user's edits.
        if let Some(path) = &self.emit_mapping {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(UsageError(format!(
                    "--emit-mapping {} already exists; inspect does not overwrite files (it may be your input or a mapping you edited). Give a new path, or remove that file first.",
                    path.display()
                )));
            }
        }
        let opts = InspectOptions {
            input: self.input,
            max_rows: self.rows.max(1),
            samples: 3,
        };
        Ok(InspectRun::Profile(opts, src, self.emit_mapping))
    }
}

/// What `inspect` does: profile one input (and perhaps write a starter mapping), or
/// write a starter plan for a directory.
pub enum InspectRun {
    Profile(InspectOptions, SourceOptions, Option<PathBuf>),
    Plan {
        dir: PathBuf,
        plan: PathBuf,
        src: SourceOptions,
    },
}

impl ValidateArgs {
    /// Checks the flags into what `validate` runs.
    pub fn into_options(self) -> Result<ValidateRun, UsageError> {
        let src = self.input_args.source_options()?;
        let plan = match (&self.mapping, self.inputs.as_slice()) {
            (Some(_), _) => None,
            (None, [one]) if crate::migration::looks_like_plan(one) => {
                if self.output.is_some() || self.report_json.is_some() {
                    return Err(UsageError(
                        "--output and --report-json are for one mapping: validate a step's mapping and inputs on their own to write them".into(),
                    ));
                }
                Some(crate::migration::load(one).map_err(|e| UsageError(e.to_string()))?)
            }
            (None, _) => {
                return Err(UsageError(
                    "--mapping FILE is required (or validate a plan: cdp-backfill validate migration.toml)".into(),
                ))
            }
        };
        let limits = Limits {
            max_request_bytes: self.max_request_bytes,
            max_call_bytes: self.max_call_bytes,
        };
        if limits.max_call_bytes < 64 || limits.max_request_bytes < limits.max_call_bytes + 16 {
            return Err(UsageError(
                "--max-call-bytes must be at least 64 and --max-request-bytes at least 16 bytes more".into(),
            ));
        }
        let opts = ValidateOptions {
            inputs: self.inputs,
            mapping: self.mapping.unwrap_or_default(),
            limits,
            show_rejects: self.show_rejects,
            output: self.output,
            report_json: self.report_json,
            chunk_rows: config::DEFAULT_CHUNK_ROWS,
            show_calls: self.show_calls,
            strict_mapping: self.strict_mapping,
        };
        Ok(ValidateRun {
            opts,
            src,
            plan,
            state: self.state,
        })
    }
}

/// What `validate` checks: one mapping over its inputs, or every step of a plan.
pub struct ValidateRun {
    opts: ValidateOptions,
    src: SourceOptions,
    plan: Option<crate::migration::MigrationPlan>,
    state: PathBuf,
}

impl ServeArgs {
    pub fn into_config(self) -> Result<ServeConfig, UsageError> {
        if !self.addr.ip().is_loopback() {
            return Err(UsageError(format!(
                "--addr {}: the receiver listens on loopback addresses only (127.0.0.1 or [::1])",
                self.addr
            )));
        }
        for (name, p) in [
            ("fail-rate", self.fail_rate),
            ("throttle-rate", self.throttle_rate),
            ("drop-rate", self.drop_rate),
            ("invalid-rate", self.invalid_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(UsageError(format!(
                    "--{name} must be between 0 and 1 (got {p})"
                )));
            }
        }
        if !(self.bandwidth_mbps >= 0.0 && self.bandwidth_mbps.is_finite()) {
            return Err(UsageError(format!(
                "--bandwidth-mbps must be a number of megabits per second, 0 for no cap (got {})",
                self.bandwidth_mbps
            )));
        }
        Ok(ServeConfig {
            addr: self.addr,
            api_key: read_key(self.api_key_file.as_ref())?.filter(|_| self.api_key_file.is_some()),
            limits: Limits {
                max_request_bytes: self.max_request_bytes,
                max_call_bytes: self.max_call_bytes,
            },
            record: self.record,
            faults: Faults {
                fail_rate: self.fail_rate,
                throttle_rate: self.throttle_rate,
                retry_after_secs: self.retry_after,
                max_rps: self.max_rps,
                latency_ms: self.latency_ms,
                latency_jitter_ms: self.latency_jitter_ms,
                bandwidth_mbps: self.bandwidth_mbps,
                drop_rate: self.drop_rate,
                invalid_rate: self.invalid_rate,
                seed: self.seed,
            },
        })
    }
}

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version or a bad flag: printed (a closed pipe loses it, and is no
        // panic) with clap's own exit code.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    crate::progress::init_logger(cli.verbose, cli.log_format == "json");
    let usage = |UsageError(m)| fail(EXIT_USAGE, &m);
    match cli.command {
        Command::Run(args) => args.into_plan().map_or_else(usage, run),
        Command::Serve(args) => args.into_config().map_or_else(usage, serve),
        Command::Generate(args) => generate(args),
        Command::Status(args) => status(args),
        Command::Inspect(args) => args.into_options().map_or_else(usage, inspect),
        Command::Validate(args) => args.into_options().map_or_else(usage, validate),
        Command::Completions(args) => completions(args),
    }
}

/// `run`: the backfill, with a signal handler, the progress display and the summary.
fn run(plan: RunPlan) -> ExitCode {
    let RunPlan {
        cfg,
        src,
        progress,
        outputs,
        migration,
        rejects_exit,
    } = plan;
    // What a second Ctrl-C prints, written now: the handler may not allocate.
    let second = match &cfg.checkpoint {
        Some(p) => format!(
            "\ncdp-backfill: interrupted again: stopping now, exit code 130. The last checkpoint written ({}) is valid; resume with:\n  {}\nRequests that were in flight may have arrived; on resume they are sent again with the messageIds they had, so the API can drop the repeats.\n",
            match cfg.checkpoint_given {
                true => p.display().to_string(),
                false => format!("in {}", cfg.state_dir.display()),
            },
            resume_command()
        ),
        None => "\ncdp-backfill: interrupted again: stopping now, exit code 130. No checkpoint was kept: a rerun starts from the beginning.\n".to_string(),
    };
    let hooks = match install_interrupt_handler(second.into_bytes()) {
        Ok(flag) => Hooks {
            interrupt: Some(flag),
        },
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                &format!("cannot install the signal handler: {e}"),
            )
        }
    };
    if let Some(m) = migration {
        return run_migration(&m, &cfg, &src, &hooks, progress, &outputs);
    }
    log::info!(
        "inputs: {:?}; mapping: {}",
        cfg.inputs,
        cfg.mapping_path.display()
    );
    let progress = Arc::new(Progress::new(progress));
    match run_backfill(&cfg, &src, &hooks, &progress, &outputs).0 {
        EXIT_REJECTS => ExitCode::from(rejects_exit),
        code => ExitCode::from(code),
    }
}

/// `run PLAN.toml`: every step checked, then the steps in waves (a step and those after
/// it that may overlap it), each wave once the one before ended complete; each step's
/// summary as it ends, then the plan's (and `--summary-json`).
fn run_migration(
    m: &crate::migration::MigrationPlan,
    base: &RunConfig,
    src: &SourceOptions,
    hooks: &Hooks,
    progress: ProgressOptions,
    outputs: &RunOutputs,
) -> ExitCode {
    use crate::migration::PlanSummary;
    let mut steps = Vec::with_capacity(m.steps.len());
    for s in &m.steps {
        let mapping = match s.mapping_file(&base.state_dir) {
            Ok(p) => p,
            Err(e) => return fail(EXIT_FAILURE, &e.to_string()),
        };
        steps.push((
            s.name.clone(),
            s.configure(base, mapping),
            s.source_options(src),
        ));
    }
    if let Err((name, e)) = crate::migration::check(m, &steps) {
        return fail(
            exit_code(&e),
            &format!(
                "plan {}, step {name}: {e}\nNothing was sent: every step is checked before the first starts.",
                m.path.display()
            ),
        );
    }
    // An earlier run's summary must not pass for this one's if this one ends early.
    if let Some(p) = outputs.summary_json.as_ref().filter(|p| p.is_file()) {
        let _ = std::fs::remove_file(p);
    }
    let mut summary = PlanSummary::new(m);
    let (mut code, mut stopped) = (EXIT_OK, None);
    let n = m.steps.len();
    for wave in m.waves() {
        for &i in &wave {
            if !outputs.quiet {
                let together = if m.steps[i].overlap {
                    " (overlapping the step before)"
                } else {
                    ""
                };
                note(&format!(
                    "plan {}: step {}/{n} {}{together}",
                    m.path.display(),
                    i + 1,
                    m.steps[i].name
                ));
            }
        }
        type Derived = Option<crate::migration::DerivedFile>;
        type Job<'a> = Box<dyn FnOnce() -> (u8, Option<Summary>, Derived) + Send + 'a>;
        let jobs: Vec<Job> = wave
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let (_, cfg, src) = &steps[i];
                // Overlapping steps: the first one's progress is shown.
                let shown = match k {
                    0 => progress,
                    _ => ProgressOptions {
                        mode: crate::progress::ProgressMode::Never,
                        ..progress
                    },
                };
                let step = &m.steps[i];
                let out = outputs.for_step(step);
                Box::new(move || {
                    let stop = || {
                        hooks
                            .interrupt
                            .as_ref()
                            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
                    };
                    // A step that derives one row per person runs over the derived file.
                    let (cfg, src, derived) = match step.derive_input(cfg, src, &stop) {
                        Ok(Some(x)) => x,
                        Ok(None) => {
                            note(&format!(
                                "step {}: interrupted while deriving its rows; nothing was sent. Rerun the same command to start this step again",
                                step.name
                            ));
                            return (EXIT_INTERRUPTED, None, None);
                        }
                        Err(e) => {
                            note(&format!("error: step {}: {e}", step.name));
                            return (exit_code(&e), None, None);
                        }
                    };
                    if derived.derive.is_some() && !out.quiet {
                        note(&derived.describe(&step.name));
                    }
                    let p = Arc::new(Progress::new(shown));
                    let (c, s) = run_backfill(&cfg, &src, hooks, &p, &out);
                    (c, s, Some(derived))
                }) as Job
            })
            .collect();
        for (&i, (c, s, d)) in wave.iter().zip(crate::pipeline::together(jobs)) {
            if let Some(s) = s {
                summary.set(i, s);
            }
            if let Some(d) = d {
                summary.set_derived(i, d);
            }
            match c {
                EXIT_OK => {}
                EXIT_REJECTS => code = code.max(EXIT_REJECTS),
                _ if stopped.is_none() => (code, stopped) = (c, Some(i)),
                _ => {}
            }
        }
        if stopped.is_some() {
            break;
        }
    }
    summary.finish(stopped);
    if !outputs.quiet {
        let _ = write!(std::io::stderr(), "{summary}");
    }
    if let Some(p) = &outputs.summary_json {
        let json = serde_json::to_vec_pretty(&summary).unwrap_or_default();
        if let Err(e) = std::fs::write(p, json) {
            return fail(
                EXIT_FAILURE,
                &format!("cannot write --summary-json {}: {e}", p.display()),
            );
        }
    }
    ExitCode::from(code)
}

/// One backfill (a run, or a plan's step): its run, its summary written, its errors
/// said. Returns the exit code and the summary, if the run made one.
fn run_backfill(
    cfg: &RunConfig,
    src: &SourceOptions,
    hooks: &Hooks,
    progress: &Arc<Progress>,
    outputs: &RunOutputs,
) -> (u8, Option<Summary>) {
    let result = crate::pipeline::run(cfg, src, hooks, progress);
    progress.finish();
    let settings = crate::report::settings(cfg, src);
    let write = |s: &Summary, stopped: Option<&str>| {
        outputs.write(s, &progress.recorded(), &settings, stopped)
    };
    let (summary, err) = match result {
        Ok(s) => (Some(s), None),
        Err(RunError::Partial { summary, cause }) => (Some(*summary), Some((EXIT_FAILURE, cause))),
        // Stopped early for a wrong input or mapping (2) or too many rejects (1).
        Err(RunError::Stopped {
            summary,
            cause,
            usage,
        }) => {
            let code = if usage { EXIT_USAGE } else { EXIT_FAILURE };
            (Some(*summary), Some((code, cause)))
        }
        Err(RunError::Interrupted {
            summary,
            checkpoint,
        }) => {
            let how = match checkpoint {
                Some(p) => format!(
                    "interrupted; the checkpoint {} is up to date. Resume with the same command:\n  {}",
                    p.display(),
                    resume_command()
                ),
                None => "interrupted (no checkpoint was kept; a rerun starts from the beginning)".to_string(),
            };
            (Some(*summary), Some((EXIT_INTERRUPTED, how)))
        }
        Err(RunError::Abandoned {
            summary,
            complete,
            why,
        }) => {
            // Requests still hang: the summary (when the run could complete it) is written
            // as an interrupted run's is, and a failure to write it does not hide why the
            // run stopped.
            if complete {
                if let Err(m) = write(&summary, Some(&why)) {
                    note(&format!("error: {m}"));
                }
            }
            note(&format!(
                "error: {why}. {} calls were delivered.{}",
                summary.calls_delivered,
                if complete {
                    ""
                } else {
                    " No summary file or report is written."
                }
            ));
            return (EXIT_INTERRUPTED, Some(*summary));
        }
        Err(e) => (None, Some((exit_code(&e), e.to_string()))),
    };
    if let Some(s) = &summary {
        let stopped = err.as_ref().map(|(_, m)| m.as_str());
        if let Err(m) = write(s, stopped) {
            note(&format!("error: {m}"));
            return (EXIT_FAILURE, summary);
        }
    }
    let code = match (err, &summary) {
        (Some((code, msg)), _) => {
            note(&format!("error: {msg}"));
            code
        }
        (None, Some(s)) if s.rows_rejected_total.max(s.rows_rejected) > 0 => EXIT_REJECTS,
        _ => EXIT_OK,
    };
    (code, summary)
}

/// `serve`: the local receiver until SIGINT/SIGTERM, then its stats as JSON.
fn serve(cfg: ServeConfig) -> ExitCode {
    match crate::serve::run_until_signal(cfg) {
        Ok(stats) => {
            let json = serde_json::to_string_pretty(&stats).unwrap_or_default();
            print_out(&format!("{json}\n")).map_or_else(|e| e, |()| ExitCode::from(EXIT_OK))
        }
        Err(e) => fail(EXIT_FAILURE, &e.to_string()),
    }
}

/// `status`: what a checkpoint says.
fn status(args: StatusArgs) -> ExitCode {
    use crate::checkpoint::state;
    let Some(what) = args.what else {
        return print_out(&crate::status::describe_all(&args.state))
            .map_or_else(|e| e, |()| ExitCode::from(EXIT_OK));
    };
    if what.is_file() && crate::migration::looks_like_plan(&what) {
        return match crate::migration::load(&what) {
            Ok(m) => print_out(&crate::migration::describe(&m, &args.state))
                .map_or_else(|e| e, |()| ExitCode::from(EXIT_OK)),
            Err(e) => fail(EXIT_USAGE, &e.to_string()),
        };
    }
    let url = what.to_string_lossy();
    if crate::source::remote::is_object_url(&url) {
        return status_of_objects(&url);
    }
    // A sharded backfill: its shards' checkpoints in a directory (not a backfill's in
    // the state directory), or beside a checkpoint path.
    let in_state = args.state.join(&what).join(state::CHECKPOINT_FILE);
    if !what.is_file() && !in_state.is_file() {
        match crate::checkpoint::find_shards(&what) {
            Ok(shards) if !shards.is_empty() => {
                return print_out(&crate::checkpoint::describe_shards(&shards))
                    .map_or_else(|e| e, |()| ExitCode::from(EXIT_OK));
            }
            Ok(_) => {}
            Err(e) => return fail(EXIT_FAILURE, &e.to_string()),
        }
    }
    // A name in the state directory, else a checkpoint file.
    let path = if what.is_file() { what } else { in_state };
    match crate::checkpoint::load(&path) {
        Ok(Some(cp)) => print_out(&crate::checkpoint::describe(&cp))
            .map_or_else(|e| e, |()| ExitCode::from(EXIT_OK)),
        Ok(None) => fail(
            EXIT_FAILURE,
            &format!(
                "no checkpoint at {}: no backfill of that name in {} (`cdp-backfill status` lists them), nor a checkpoint file of that path",
                path.display(),
                args.state.display()
            ),
        ),
        Err(e) => fail(EXIT_FAILURE, &e.to_string()),
    }
}

/// `status URL`: a checkpoint, or a sharded backfill's checkpoints, in object storage.
#[cfg(feature = "object-store")]
fn status_of_objects(url: &str) -> ExitCode {
    use crate::checkpoint::object::{find, Found};
    let found = crate::pipeline::object_runtime(
        [std::path::Path::new(url)],
        crate::source::remote::DEFAULT_RETRY_FOR,
    )
    .map_err(|e| e.to_string())
    .and_then(|rt| match rt {
        Some(rt) => find(&rt, url).map_err(|e| e.to_string()),
        None => Ok(Found::Nothing),
    });
    let text = match found {
        Ok(Found::One(cp)) => crate::checkpoint::describe(&cp),
        Ok(Found::Shards(shards)) => crate::checkpoint::describe_shards(&shards),
        Ok(Found::Nothing) => {
            let shown = crate::source::remote::redact::redact_url(url);
            return fail(
                EXIT_FAILURE,
                &format!("no checkpoint at {shown}: no backfill has started with it (see `run --checkpoint`)"),
            );
        }
        Err(e) => return fail(EXIT_FAILURE, &e),
    };
    print_out(&text).map_or_else(|e| e, |()| ExitCode::from(EXIT_OK))
}

#[cfg(not(feature = "object-store"))]
fn status_of_objects(url: &str) -> ExitCode {
    let shown = crate::source::remote::redact::redact_url(url);
    fail(
        EXIT_FAILURE,
        &format!("{shown}: this cdp-backfill was built without the object-store feature"),
    )
}

/// `inspect`: a profile of the input, and perhaps a starter mapping.
fn inspect(what: InspectRun) -> ExitCode {
    let (opts, src, emit_mapping) = match what {
        InspectRun::Profile(o, s, e) => (o, s, e),
        InspectRun::Plan { dir, plan, src } => {
            return match crate::migration::starter_plan(&dir, &plan, &src) {
                Ok(written) => {
                    for w in &written {
                        note(&format!("wrote {}", w.display()));
                    }
                    note(&format!(
                        "check each step's mapping and the steps' order, then: cdp-backfill validate {}",
                        plan.display()
                    ));
                    ExitCode::from(EXIT_OK)
                }
                Err(e) => fail(EXIT_USAGE, &e.to_string()),
            };
        }
    };
    let p = match crate::inspect::inspect(&opts, &src) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_FAILURE, &e.to_string()),
    };
    if let Err(code) = print_out(&p.to_string()) {
        return code;
    }
    if let Some(path) = &emit_mapping {
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| f.write_all(crate::inspect::starter_mapping(&p).as_bytes()));
        if let Err(e) = written {
            return fail(
                EXIT_FAILURE,
                &format!("cannot write {}: {e}", path.display()),
            );
        }
        note(&format!("wrote a starter mapping to {}", path.display()));
    }
    ExitCode::from(EXIT_OK)
}

/// `validate`: everything a run does but sending, and a report.
fn validate(run: ValidateRun) -> ExitCode {
    let ValidateRun {
        opts,
        src,
        plan,
        state,
    } = run;
    if let Some(m) = plan {
        return validate_plan(&m, &opts, &src, &state);
    }
    let r = match crate::validate::validate(&opts, &src) {
        Ok(r) => r,
        Err(e) => return fail(exit_code(&e), &e.to_string()),
    };
    if let Err(code) = print_out(&r.to_string()) {
        return code;
    }
    if let Some(p) = &opts.report_json {
        let json = serde_json::to_vec_pretty(&r).unwrap_or_default();
        if let Err(e) = std::fs::write(p, json) {
            return fail(
                EXIT_FAILURE,
                &format!("cannot write --report-json {}: {e}", p.display()),
            );
        }
    }
    if opts.strict_mapping && !r.never_matched.is_empty() {
        let rows = r.rows as usize;
        return fail(
            EXIT_USAGE,
            &crate::pipeline::strict_mapping_message(&r.coverage(), rows),
        );
    }
    if r.rows_rejected > 0 {
        ExitCode::from(EXIT_REJECTS)
    } else {
        ExitCode::from(EXIT_OK)
    }
}

/// `validate PLAN`: every step, each with its report; the worst exit code (2 for a step
/// whose mapping or inputs cannot be used, 3 for rejects).
fn validate_plan(
    m: &crate::migration::MigrationPlan,
    base: &ValidateOptions,
    src: &SourceOptions,
    state: &std::path::Path,
) -> ExitCode {
    let mut code = EXIT_OK;
    let n = m.steps.len();
    for (i, step) in m.steps.iter().enumerate() {
        if let Err(c) = print_out(&format!(
            "== step {}/{n} {} ({}) ==\n",
            i + 1,
            step.name,
            step.backfill
        )) {
            return c;
        }
        let mapping = match step.mapping_file(state) {
            Ok(p) => p,
            Err(e) => return fail(EXIT_FAILURE, &e.to_string()),
        };
        let mut opts = ValidateOptions {
            inputs: step.inputs.clone(),
            mapping,
            ..base.clone()
        };
        let mut step_src = step.source_options(src);
        // A step that derives one row per person: validated over the derived rows.
        if step.derive.is_some() {
            match step.derived(&step.inputs, state, &step_src, &|| false) {
                Ok(Some((path, s, d))) => {
                    note(&d.describe(&step.name));
                    opts.inputs = vec![path];
                    step_src = s;
                }
                Ok(None) => {}
                Err(e) => {
                    note(&format!("error: step {}: {e}", step.name));
                    code = exit_code(&e).max(code);
                    continue;
                }
            }
        }
        match crate::validate::validate(&opts, &step_src) {
            Ok(r) => {
                if let Err(c) = print_out(&format!("{r}\n")) {
                    return c;
                }
                if r.rows_rejected > 0 && code == EXIT_OK {
                    code = EXIT_REJECTS;
                }
            }
            Err(e) => {
                note(&format!("error: step {}: {e}", step.name));
                let c = exit_code(&e);
                if code != EXIT_USAGE {
                    code = c;
                }
            }
        }
    }
    let verdict = match code {
        EXIT_OK => "every step is valid".to_string(),
        EXIT_REJECTS => {
            "every step can run; some rows would be rejected (see each step)".to_string()
        }
        _ => "a step cannot run as it is (see the errors above); nothing was sent".to_string(),
    };
    note(&format!("plan {}: {verdict}", m.path.display()));
    ExitCode::from(code)
}

/// `generate`: a realistic test input.
fn generate(args: GenerateArgs) -> ExitCode {
    let shape = match args.shape {
        GenerateShape::Events => crate::generate::Shape::Events,
        GenerateShape::Rich => crate::generate::Shape::Rich,
    };
    match crate::generate::generate_file_as(&args.out, shape, args.rows, args.seed) {
        Ok(g) => {
            note(&format!(
                "wrote {} rows to {} ({} planted bad rows)",
                g.rows,
                args.out.display(),
                g.bad_rows.len()
            ));
            ExitCode::from(EXIT_OK)
        }
        Err(e) => fail(
            EXIT_FAILURE,
            &format!("cannot write {}: {e}", args.out.display()),
        ),
    }
}

/// `completions`: a shell completion script.
fn completions(args: CompletionsArgs) -> ExitCode {
    use clap::CommandFactory;
    // Into memory first: clap_complete panics when its writer fails (`| head -1`).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "cdp-backfill", &mut script);
    print_out(&String::from_utf8_lossy(&script)).map_or_else(|e| e, |()| ExitCode::from(EXIT_OK))
}

/// SIGINT/SIGTERM set the returned flag (the run drains and stops); a second one says so
/// and exits at once with 130, leaving the last checkpoint written, which is always a
/// valid one.
/// `second`: what the second signal prints.
fn install_interrupt_handler(
    second: Vec<u8>,
) -> std::io::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    use std::sync::atomic::Ordering;
    let term = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let message = std::sync::Arc::new(second);
    for sig in [SIGINT, SIGTERM] {
        // Order matters: this action sees the flag set by an earlier signal, before the
        // one registered next sets it for this one.
        let earlier = term.clone();
        let msg = message.clone();
        let second = move || {
            if earlier.load(Ordering::SeqCst) {
                // SAFETY: write(2) on stderr from a buffer built before the handler was
                // installed and never changed; async-signal-safe.
                unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
                signal_hook::low_level::exit(EXIT_INTERRUPTED as i32);
            }
        };
        // SAFETY: the action only loads an atomic, calls write(2) and _exit(2), all
        // async-signal-safe; it allocates nothing and takes no lock.
        unsafe { signal_hook::low_level::register(sig, second)? };
        flag::register(sig, term.clone())?;
    }
    Ok(term)
}

/// The command line that was run, without `--restart`, quoted for a POSIX shell (it never
/// holds the key: the key is only read from the environment or a file).
fn resume_command() -> String {
    std::env::args()
        // Rerunning with --restart would start over instead of resuming.
        .filter(|a| a != "--restart")
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where a run's summary goes: stderr (unless quiet), `--summary-json`, `--report`.
struct RunOutputs {
    summary_json: Option<PathBuf>,
    report: Option<PathBuf>,
    quiet: bool,
}

impl RunOutputs {
    /// A plan's step: its own report (`REPORT.<step>.html`); the plan writes the
    /// summary file.
    fn for_step(&self, step: &crate::migration::Step) -> RunOutputs {
        RunOutputs {
            summary_json: None,
            report: self.report.as_ref().map(|r| step.report_path(r)),
            quiet: self.quiet,
        }
    }

    /// `stopped`: why the run ended early, for the report.
    fn write(
        &self,
        s: &Summary,
        recorded: &Recorded,
        settings: &[(&'static str, String)],
        stopped: Option<&str>,
    ) -> Result<(), String> {
        use std::io::Write as _;
        // Writes to a closed stderr (`| head`) are dropped, not a panic: the files below
        // still matter, and on a drain timeout a panic would wait for stuck senders.
        if !self.quiet {
            let _ = write!(std::io::stderr(), "{s}");
        }
        if let Some(p) = &self.summary_json {
            let json = serde_json::to_vec_pretty(s).unwrap_or_default();
            std::fs::write(p, json)
                .map_err(|e| format!("cannot write --summary-json {}: {e}", p.display()))?;
        }
        if let Some(p) = &self.report {
            let html = crate::report::render(s, recorded, settings, stopped);
            std::fs::write(p, html)
                .map_err(|e| format!("cannot write --report {}: {e}", p.display()))?;
            if !self.quiet {
                let _ = writeln!(std::io::stderr(), "report: {}", p.display());
            }
        }
        Ok(())
    }
}

/// `--max-reject-rate`: a share from 0 to 1 (`0.05`) or a percentage (`5%`).
fn reject_rate(s: &str) -> Result<f64, String> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(p) => (p, 100.0),
        None => (s, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a rate; write 0.05 or 5%"))?;
    let v = v / scale;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} is not between 0 and 1 (0% and 100%)"));
    }
    Ok(v)
}

/// An output file that cannot be written is a usage error found before the run starts.
fn check_output_path(flag: &str, p: &std::path::Path) -> Result<(), UsageError> {
    if p.is_dir() {
        return Err(UsageError(format!(
            "{flag} {}: is a directory; name a file",
            p.display()
        )));
    }
    let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = parent.filter(|d| !d.is_dir()) {
        return Err(UsageError(format!(
            "{flag} {}: the directory {} does not exist; create it or name another file",
            p.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// 2 for mistakes found before any work (flags, mapping, checkpoint), 1 for the rest.
fn exit_code(e: &RunError) -> u8 {
    if e.is_usage() {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    note(&format!("error: {msg}"));
    ExitCode::from(code)
}

/// Writes a command's output to stdout. A reader that went away (`| head -1`) is no
/// error: the command stops printing and ends as it would have, never with a panic. Any
/// other failure (a full disk under a redirect) is one, with exit code 1.
fn print_out(text: &str) -> Result<(), ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(fail(
            EXIT_FAILURE,
            &format!("cannot write to standard output: {e}"),
        )),
        _ => Ok(()),
    }
}

/// A line on stderr that a closed stderr does not turn into a panic.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
