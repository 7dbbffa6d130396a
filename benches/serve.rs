//! The local receiver (`cdp-backfill serve`) in MB/s of request bodies: the batches a
//! backfill of generated events sends, posted one after another over a keep-alive
//! connection on 127.0.0.1, each read, validated, counted and answered. In
//! `scripts/bench` step c) the receiver shares the two cores with the engine, so a
//! slower receiver shows there as a slower backfill; here it shows on its own.
//!
//! Quick check: `cargo bench --bench serve -- --test`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use cdp_backfill::pack::Packer;
use cdp_backfill::serve::{ServeConfig, Server};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ROWS: u64 = 20_000;

/// Each request a run would send for the generated events, ready to write: the head,
/// then the body. Also the number of calls they hold.
fn requests() -> (Vec<Vec<u8>>, u64) {
    let (arena, ranges) = common::encoded_calls(ROWS);
    let mut packer = Packer::new(Default::default());
    let mut bodies = Vec::new();
    for &(start, len) in &ranges {
        if let Some(body) = packer
            .push(&arena[start..start + len])
            .expect("the mapper refused every call over the limit")
        {
            bodies.push(body.bytes);
        }
    }
    bodies.extend(packer.finish().map(|b| b.bytes));
    let requests = bodies
        .into_iter()
        .map(|body| {
            let mut r = format!(
                "POST /v1/batch HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(&body);
            r
        })
        .collect();
    (requests, ranges.len() as u64)
}

/// Sends one request and reads its answer, which must be 200.
fn post(conn: &mut BufReader<TcpStream>, request: &[u8], answer: &mut Vec<u8>) {
    conn.get_mut()
        .write_all(request)
        .expect("the receiver reads the request");
    let mut line = String::new();
    conn.read_line(&mut line).expect("the receiver answers");
    assert!(line.starts_with("HTTP/1.1 200"), "answered {line:?}");
    let mut len = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).expect("the answer has a head");
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("a numeric Content-Length");
        }
    }
    answer.resize(len, 0);
    conn.read_exact(answer).expect("the answer has its body");
}

fn serve(c: &mut Criterion) {
    let (requests, calls) = requests();
    let bytes: usize = requests.iter().map(Vec::len).sum();
    let server = Server::start(ServeConfig::default()).expect("the receiver starts on 127.0.0.1");
    let stream = TcpStream::connect(server.local_addr()).expect("the receiver accepts");
    stream.set_nodelay(true).expect("TCP_NODELAY on loopback");
    let mut conn = BufReader::new(stream);
    let mut answer = Vec::new();
    let mut sent = 0u64;
    let mut g = c.benchmark_group("serve");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("events_batches", |b| {
        b.iter(|| {
            for r in &requests {
                post(&mut conn, r, &mut answer);
            }
            sent += calls;
        })
    });
    g.finish();
    // Every call of every request was accepted, none dropped as invalid.
    assert_eq!(server.shutdown().calls_accepted, sent);
}

criterion_group!(benches, serve);
criterion_main!(benches);
