//! The tests' S3-compatible server (s3s-fs on 127.0.0.1, `tests/common/s3.rs`) as a
//! program, for benchmarks and rehearsals: it uploads every file under `DIR` (through
//! the S3 API, so the server stores their ETags) as `exports/PREFIX/<relative path>`,
//! prints the endpoint, and serves until stdin closes or `SECS` pass. With
//! `S3_SERVER_GET_DELAY_MS=N` every GET is held N ms first (the tests' fault proxy).
//!
//! Usage: `cargo run --release --example s3_server -- DIR PREFIX [SECS]`, then
//! `AWS_ENDPOINT_URL=<printed> AWS_ACCESS_KEY_ID=AKIDCDPBACKFILLTEST
//! AWS_SECRET_ACCESS_KEY=cdp-backfill-test-secret-key cdp-backfill run s3://exports/PREFIX/ …`
//! (see `scripts/objstore-bench`).

#[path = "../tests/common/s3.rs"]
mod s3;

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: s3_server DIR PREFIX [SECS]");
        return ExitCode::from(2);
    }
    let server = s3::Server::start();
    server.client().put_dir(
        std::path::Path::new(&args[1]),
        args[2].trim_end_matches('/'),
    );
    // S3_SERVER_GET_DELAY_MS=N: the endpoint printed is the tests' proxy in front of the
    // server, holding every GET N ms (a store a WAN round trip away).
    let delay: u64 = std::env::var("S3_SERVER_GET_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let proxy = (delay > 0).then(|| {
        let p = s3::Proxy::start(server.addr);
        p.faults
            .get_delay_ms
            .store(delay, std::sync::atomic::Ordering::SeqCst);
        p
    });
    match &proxy {
        Some(p) => println!("{}", p.endpoint()),
        None => println!("{}", server.endpoint()),
    }
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3600);
    // Until stdin closes (the script that started it ends) or the time is up.
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    std::thread::sleep(Duration::from_secs(secs));
    ExitCode::SUCCESS
}
