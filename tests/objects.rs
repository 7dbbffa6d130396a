//! Inputs in object storage (issue 22), against a real S3-compatible server on
//! 127.0.0.1 (s3s-fs in this process, `tests/common/s3.rs`), sometimes through a proxy
//! that injects faults and counts the bytes served.
//!
//! - an `s3://…/prefix/` of CSV.gz, NDJSON.zst and Parquet parts gives byte for byte the
//!   request bodies (messageIds included) of a local run of the same files;
//! - a resume at 90% of a plain object is one ranged GET from there: only the tail is
//!   served (the time to its first chunk against a start's is printed; BENCHMARKS.md);
//! - 500s, a reset part way into a body and a slow body are retried, and the run is
//!   exact; an object changed since the checkpoint is refused, one replaced while it is
//!   read is never spliced; a read that keeps failing stops the run after
//!   `--read-retry-secs`, naming the object, and the same command resumes it exactly;
//! - Parquet fetches the footer and the mapped columns only;
//! - plain http to a host that is not loopback is refused before any request.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdp_backfill::source::remote::locate::StoreEnv;
use cdp_backfill::source::remote::{list, ObjectRuntime};
use cdp_backfill::source::{self, Format, InputInfo, Position, SourceOptions};
use common::{fixture, Workdir};
use s3::{Proxy, Server};

/// A dry run of `inputs`; its request bodies (one per line) and the process's output.
fn dry_run(
    w: &Workdir,
    inputs: &[&str],
    mapping: &Path,
    endpoint: Option<&str>,
) -> (Output, String) {
    dry_run_env(w, inputs, mapping, endpoint, &[])
}

/// [`dry_run`] with more environment variables.
fn dry_run_env(
    w: &Workdir,
    inputs: &[&str],
    mapping: &Path,
    endpoint: Option<&str>,
    env: &[(&str, &std::ffi::OsStr)],
) -> (Output, String) {
    let out_file = w.path("bodies.ndjson");
    let _ = std::fs::remove_file(&out_file);
    let mut cmd = w.cmd();
    cmd.arg("run")
        .args(inputs)
        .arg("--mapping")
        .arg(mapping)
        .args(["--dry-run", "--quiet", "--output"])
        .arg(&out_file)
        .arg("--rejects")
        .arg(w.path("rejects.ndjson"))
        .stdin(Stdio::null());
    if let Some(e) = endpoint {
        cmd.envs(Server::env(e));
    }
    cmd.envs(env.iter().copied());
    let out = common::run(&mut cmd);
    (out, std::fs::read_to_string(&out_file).unwrap_or_default())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The typed fixtures as an export: CSV.gz, NDJSON.zst and Parquet parts, with the
/// markers exporters leave beside them.
fn export_dir(w: &Workdir) -> PathBuf {
    let dir = w.path("export");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let read = |n: &str| std::fs::read(fixture(n)).unwrap();
    std::fs::write(dir.join("part-0000.csv.gz"), gzip(&read("typed.csv"))).unwrap();
    std::fs::write(
        dir.join("part-0001.ndjson.zst"),
        zstd::encode_all(&read("typed.ndjson")[..], 3).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("sub").join("part-0002.parquet"),
        read("typed.parquet"),
    )
    .unwrap();
    std::fs::write(dir.join("_SUCCESS"), b"").unwrap();
    std::fs::write(dir.join(".part-0000.csv.gz.crc"), b"xx").unwrap();
    std::fs::write(dir.join("notes.md"), b"not an input").unwrap();
    dir
}

#[test]
fn an_s3_prefix_gives_the_bodies_and_message_ids_of_a_local_run_of_the_same_files() {
    let w = Workdir::new();
    let dir = export_dir(&w);
    let server = Server::start();
    let c = server.client();
    c.put_dir(&dir, "export");
    // Neighbours a prefix must not reach: object keys are whole path segments.
    c.put(
        "export2/part-9.csv",
        std::fs::read(fixture("typed.csv")).unwrap(),
    );
    c.put("exportx.csv", std::fs::read(fixture("typed.csv")).unwrap());

    let (local, local_bodies) = dry_run(&w, &["export"], &fixture("typed.toml"), None);
    assert_eq!(local.status.code(), Some(3), "{}", common::stderr(&local));
    let (remote, remote_bodies) = dry_run(
        &w,
        &["s3://exports/export/"],
        &fixture("typed.toml"),
        Some(&server.endpoint()),
    );
    assert_eq!(remote.status.code(), Some(3), "{}", common::stderr(&remote));
    assert_eq!(local_bodies.lines().count(), remote_bodies.lines().count());
    assert!(local_bodies.len() > 10_000);
    // Byte for byte: the same calls, in the same requests, under the same messageIds.
    assert!(
        local_bodies == remote_bodies,
        "the S3 run's bodies differ from the local run's"
    );
    // Every input was read: 3 parts x 39 valid rows (row 14 has no id).
    let calls: usize = remote_bodies
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["batch"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(calls, 3 * 39);
    // The rejects name the object.
    let rejects = std::fs::read_to_string(w.path("rejects.ndjson")).unwrap();
    assert!(
        rejects.contains("s3://exports/export/part-0000.csv.gz"),
        "{rejects}"
    );

    // The same objects named one by one, and by a glob, give the same bodies.
    let (by_glob, glob_bodies) = dry_run(
        &w,
        &[
            "s3://exports/export/part-*",
            "s3://exports/export/sub/*.parquet",
        ],
        &fixture("typed.toml"),
        Some(&server.endpoint()),
    );
    assert_eq!(
        by_glob.status.code(),
        Some(3),
        "{}",
        common::stderr(&by_glob)
    );
    assert!(glob_bodies == local_bodies);
    // A prefix named without its slash reads as the prefix, as a local directory does.
    let (no_slash, bodies) = dry_run(
        &w,
        &["s3://exports/export"],
        &fixture("typed.toml"),
        Some(&server.endpoint()),
    );
    assert_eq!(
        no_slash.status.code(),
        Some(3),
        "{}",
        common::stderr(&no_slash)
    );
    assert!(bodies == local_bodies);
    // Nothing there: said, naming the URL.
    let (none, _) = dry_run(
        &w,
        &["s3://exports/nothing/"],
        &fixture("typed.toml"),
        Some(&server.endpoint()),
    );
    assert_eq!(none.status.code(), Some(1));
    assert!(
        common::stderr(&none).contains("s3://exports/nothing/ holds no input files"),
        "{}",
        common::stderr(&none)
    );
}

#[test]
fn plain_http_to_a_remote_endpoint_is_refused_before_any_request() {
    let w = Workdir::new();
    let (out, _) = dry_run(
        &w,
        &["s3://exports/export/"],
        &fixture("typed.toml"),
        // TEST-NET-1: never reached, the refusal comes first.
        Some("http://192.0.2.1:9000"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("AWS_ALLOW_HTTP=true") && err.contains("192.0.2.1"),
        "{err}"
    );
}

/// A runtime and the objects of `url` on `endpoint`, as inputs.
fn objects(endpoint: &str, url: &str) -> (Arc<ObjectRuntime>, Vec<Arc<InputInfo>>) {
    let rt = Arc::new(ObjectRuntime::new(cdp_backfill::source::remote::DEFAULT_RETRY_FOR).unwrap());
    let env = StoreEnv::from_vars(
        Server::env(endpoint)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    );
    let found = list::expand(&rt, url, &env, None).unwrap();
    let inputs = found
        .into_iter()
        .enumerate()
        .map(|(i, (o, f))| Arc::new(InputInfo::from_object(i as u32, o, f.unwrap())))
        .collect();
    (rt, inputs)
}

/// Time to the first chunk of `input` opened at `pos`, and that chunk's first row.
fn first_chunk(input: &Arc<InputInfo>, pos: Position) -> (Duration, u64) {
    let opts = SourceOptions::default();
    let t = Instant::now();
    let mut opened = source::open_at(input, &opts, pos).unwrap();
    let mut chunk = opened.new_chunk(input);
    opened.fill(&mut chunk, 1000).unwrap();
    assert!(!chunk.is_empty());
    (t.elapsed(), chunk.first_row())
}

#[test]
fn a_resume_at_90_percent_of_a_plain_object_is_one_ranged_get_from_there() {
    let w = Workdir::new();
    let csv = w.generate("big.csv", 60_000, 11);
    let size = std::fs::metadata(&csv).unwrap().len();
    let server = Server::start();
    server
        .client()
        .put("big/events.csv", std::fs::read(&csv).unwrap());
    let proxy = Proxy::start(server.addr);
    let (_rt, inputs) = objects(&proxy.endpoint(), "s3://exports/big/events.csv");
    let input = &inputs[0];

    // Where row 54,000 starts, found by reading the local copy.
    let local = Arc::new(InputInfo::new(0, csv.clone(), Format::Csv));
    let mut opened = source::open(&local, &SourceOptions::default()).unwrap();
    let mut chunk = opened.new_chunk(&local);
    let mut at = Position::default();
    while at.row < 54_000 {
        opened.fill(&mut chunk, 1000).unwrap();
        assert!(!chunk.is_empty());
        at = chunk.end();
    }
    assert!(at.offset > size * 85 / 100, "{} of {size}", at.offset);

    // Medians of five, alternating, so that load on the machine hits both alike.
    let (mut from_start, mut from_90) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        proxy.faults.reset_counters();
        let (t, row) = first_chunk(input, Position::default());
        assert_eq!(row, 0);
        from_start.push(t);
        proxy.faults.reset_counters();
        let (t, row) = first_chunk(input, at);
        assert_eq!(row, at.row);
        from_90.push(t);
        // The resume's GETs: the header's window from 0, and one from the offset on.
        let gets = proxy.faults.gets();
        assert!(
            gets.iter()
                .any(|g| g.contains(&format!("bytes={}-", at.offset))),
            "{gets:?}"
        );
    }
    from_start.sort();
    from_90.sort();
    let (s, r) = (from_start[2], from_90[2]);
    // The times are reported, not asserted (the machine's load is not the test's): the
    // proof that a resume does not re-read is the bytes served, below.
    eprintln!("first chunk: from the start {s:?}, resuming at 90% {r:?}");

    // Read to the end from there: only the tail (and the header's window) is served.
    proxy.faults.reset_counters();
    let mut opened = source::open_at(input, &SourceOptions::default(), at).unwrap();
    let mut chunk = opened.new_chunk(input);
    let mut rows = at.row;
    loop {
        opened.fill(&mut chunk, 4096).unwrap();
        if chunk.is_empty() {
            break;
        }
        rows = chunk.end().row;
    }
    assert_eq!(rows, 60_000);
    let served = proxy.faults.body_bytes.load(Ordering::SeqCst);
    let tail = size - at.offset;
    assert!(
        served >= tail && served <= tail + 2 * (1 << 20) + 65_536,
        "served {served} bytes for a tail of {tail} (object {size})"
    );
}

#[test]
fn object_store_faults_are_retried_and_the_run_is_exact() {
    let w = Workdir::new();
    let csv = w.generate("big.csv", 30_000, 5);
    let size = std::fs::metadata(&csv).unwrap().len();
    let server = Server::start();
    let c = server.client();
    c.put("f/events.csv", std::fs::read(&csv).unwrap());
    c.put("f/events.csv.gz", gzip(&std::fs::read(&csv).unwrap()));
    let (local, local_bodies) = dry_run(&w, &["big.csv"], &fixture("events.toml"), None);
    assert_eq!(local.status.code(), Some(3), "{}", common::stderr(&local));
    let proxy = Proxy::start(server.addr);
    let mapping = fixture("events.toml");
    let check = |what: &str, url: &str| {
        let (out, bodies) = dry_run(&w, &[url], &mapping, Some(&proxy.endpoint()));
        assert_eq!(
            out.status.code(),
            Some(3),
            "{what}: {}",
            common::stderr(&out)
        );
        // Other bytes, other ids: compare the calls without them.
        assert_eq!(
            strip_ids(&bodies),
            strip_ids(&local_bodies),
            "{what}: the calls differ from a local run's"
        );
    };
    // Two 500s, then a reset 3 MiB into the big body, a second later.
    proxy.faults.fail_next.store(2, Ordering::SeqCst);
    proxy.faults.reset_after.store(3 << 20, Ordering::SeqCst);
    check("500s and a reset", "s3://exports/f/events.csv");
    assert_eq!(proxy.faults.fail_next.load(Ordering::SeqCst), 0);
    assert_eq!(
        proxy.faults.reset_after.load(Ordering::SeqCst),
        0,
        "the reset happened"
    );
    // The same in a compressed body, which cannot seek: the stream resumes below it.
    proxy.faults.fail_next.store(1, Ordering::SeqCst);
    proxy.faults.reset_after.store(1 << 20, Ordering::SeqCst);
    check("a reset in gzip", "s3://exports/f/events.csv.gz");
    assert_eq!(
        proxy.faults.reset_after.load(Ordering::SeqCst),
        0,
        "the reset happened"
    );
    // A slow body (about 6 MB/s).
    proxy.faults.slow_bps.store(6_000_000, Ordering::SeqCst);
    check("a slow body", "s3://exports/f/events.csv");
    proxy.faults.slow_bps.store(0, Ordering::SeqCst);
    assert!(
        size > 3 << 20,
        "the reset must fall inside the body ({size} bytes)"
    );
}

/// A store a round trip away (every GET waits 100 ms before it is answered): the
/// content identities of the objects are read together, not one object after another,
/// so are their headers, and each object is read with one GET, asked for while the
/// object before it is still being answered. The run is exact.
#[test]
fn objects_a_round_trip_away_are_asked_for_ahead_not_in_turn() {
    let w = Workdir::new();
    std::fs::create_dir(w.path("ahead")).unwrap();
    let server = Server::start();
    let c = server.client();
    let mut sizes = Vec::new();
    for k in 0..6u64 {
        let name = format!("ahead/part-{k}.csv");
        let csv = w.generate(&name, 4_000, 40 + k);
        let bytes = std::fs::read(&csv).unwrap();
        // Larger than the first window of a header's open, and than two identity reads.
        assert!(bytes.len() > 512 << 10, "{name}: {} bytes", bytes.len());
        sizes.push(bytes.len());
        c.put(&format!("ahead/part-{k}.csv"), bytes);
    }
    let mapping = fixture("events.toml");
    let (local, local_bodies) = dry_run(&w, &["ahead"], &mapping, None);
    assert_eq!(local.status.code(), Some(3), "{}", common::stderr(&local));
    let proxy = Proxy::start(server.addr);
    proxy.faults.get_delay_ms.store(100, Ordering::SeqCst);
    let (out, bodies) = dry_run(
        &w,
        &["s3://exports/ahead/"],
        &mapping,
        Some(&proxy.endpoint()),
    );
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    assert!(
        bodies == local_bodies,
        "the S3 run's bodies differ from the local run's"
    );
    let log = proxy.faults.log.lock().unwrap().clone();
    let at = |line: &str| {
        let hits: Vec<usize> = (0..log.len()).filter(|&i| log[i] == line).collect();
        assert_eq!(hits.len(), 1, "{line:?} in {log:#?}");
        hits[0]
    };
    let last = sizes.len() - 1;
    // The identities: each object's first 64 KiB (and its last, alongside).
    let head = |k: usize| format!("/exports/ahead/part-{k}.csv bytes=0-65535");
    assert!(
        at(&format!("GET {}", head(last))) < at(&format!("END {}", head(0))),
        "the objects' identities were read one after another: {log:#?}"
    );
    // One GET per object reads it (no first window then the rest), and the next
    // object's is asked for before this one's is answered: the reading stage asks for
    // the first two objects as it starts.
    let whole = |k: usize| format!("/exports/ahead/part-{k}.csv bytes=0-{}", sizes[k] - 1);
    for k in 0..sizes.len() {
        assert!(at(&format!("GET {}", whole(k))) < at(&format!("END {}", whole(k))));
    }
    assert!(
        at(&format!("GET {}", whole(1))) < at(&format!("END {}", whole(0))),
        "part-1 was asked for only once part-0 was all served: {log:#?}"
    );
    // The opens that read each object's header (its first window) overlap too.
    let header = |k: usize| format!("/exports/ahead/part-{k}.csv bytes=0-{}", (256 << 10) - 1);
    assert!(
        at(&format!("GET {}", header(last))) < at(&format!("END {}", header(0))),
        "the objects' headers were read one after another: {log:#?}"
    );
}

/// A TLS front for `upstream` on 127.0.0.1, with the certificate in fixtures/tls (signed by
/// its throwaway CA, for 127.0.0.1); it serves until the test process ends.
fn tls_front(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = fixture("tls");
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((c, _)) = l.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends its connection here.
                    let Ok(mut tls) = acceptor.accept(c).await else {
                        return;
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
    });
    addr
}

/// Object stores are reached over TLS with the certificate verified: a store whose
/// certificate no trusted authority signed stops the run at once (no retry), saying so,
/// before a row is read; with its private CA in `SSL_CERT_FILE` (an internal MinIO's,
/// say) the same store gives the calls of a local run; and a system without CA
/// certificates still reads a plain-http store.
#[test]
fn tls_to_a_store_verifies_its_certificate_and_trusts_a_ca_in_ssl_cert_file() {
    let w = Workdir::new();
    let csv = w.generate("t.csv", 2_000, 7);
    let server = Server::start();
    server
        .client()
        .put("tls/t.csv", std::fs::read(&csv).unwrap());
    let front = tls_front(server.addr);
    let endpoint = format!("https://127.0.0.1:{}", front.port());
    let mapping = fixture("events.toml");
    let (local, local_bodies) = dry_run(&w, &["t.csv"], &mapping, None);
    assert_eq!(local.status.code(), Some(3), "{}", common::stderr(&local));
    let object = ["s3://exports/tls/t.csv"];
    // SSL_CERT_DIR empty: the authorities are SSL_CERT_FILE's alone.
    let run = |ca: &Path| {
        let env = [
            ("SSL_CERT_FILE", ca.as_os_str()),
            ("SSL_CERT_DIR", "".as_ref()),
        ];
        dry_run_env(&w, &object, &mapping, Some(&endpoint), &env)
    };
    // The certificate's CA is not among those trusted (the server's own certificate
    // is not a CA): refused.
    let (out, bodies) = run(&fixture("tls").join("server.pem"));
    let err = common::stderr(&out);
    assert!(
        !matches!(out.status.code(), Some(0) | Some(3)),
        "an unverified store was read: {err}"
    );
    assert!(bodies.is_empty());
    assert!(
        err.contains("TLS certificate was not accepted") && err.contains("SSL_CERT_FILE"),
        "{err}"
    );
    // At once: no retry makes an unknown authority known.
    assert!(
        !err.contains("retries"),
        "a refused certificate was retried: {err}"
    );
    let (out, bodies) = run(&fixture("tls").join("ca.pem"));
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    assert!(
        bodies == local_bodies,
        "the calls read over TLS differ from the local run's"
    );
    // A system with no CA certificates at all (a minimal container) can still read a
    // plain-http store on loopback (an in-cluster MinIO), saying what it trusts instead.
    let no_dir = w.path("no-such-dir");
    let env = [
        ("SSL_CERT_FILE", "/dev/null".as_ref()),
        ("SSL_CERT_DIR", no_dir.as_os_str()),
    ];
    let (out, bodies) = dry_run_env(&w, &object, &mapping, Some(&server.endpoint()), &env);
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no CA certificates"), "{err}");
    assert!(bodies == local_bodies);
}

/// Request bodies with every messageId taken out.
fn strip_ids(bodies: &str) -> Vec<serde_json::Value> {
    bodies
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for c in v["batch"].as_array_mut().unwrap() {
                c.as_object_mut().unwrap().remove("messageId");
            }
            v
        })
        .collect()
}

#[test]
fn an_object_changed_since_the_checkpoint_is_refused() {
    let w = Workdir::with_fixtures(&["typed.csv", "typed.toml"]);
    let server = Server::start();
    let c = server.client();
    let csv = std::fs::read(w.path("typed.csv")).unwrap();
    c.put("c/typed.csv", csv.clone());
    let (receiver, _) = common::receiver(w.dir(), Default::default());
    let run = || {
        let mut cmd = w.cmd();
        cmd.args([
            "run",
            "s3://exports/c/typed.csv",
            "--mapping",
            "typed.toml",
            "--quiet",
            // A named checkpoint: in the state directory, an export whose content
            // changed is another backfill (found by content), not a refusal.
            "--checkpoint",
            "typed.checkpoint.json",
        ])
        .arg("--endpoint")
        .arg(receiver.base_url())
        .envs(Server::env(&server.endpoint()));
        common::run(&mut cmd)
    };
    let first = run();
    assert_eq!(first.status.code(), Some(3), "{}", common::stderr(&first));
    // Done already: said, nothing sent (its one reject still counts: exit 3).
    let again = run();
    assert_eq!(again.status.code(), Some(3), "{}", common::stderr(&again));
    assert!(
        !common::stderr(&again).contains("error"),
        "{}",
        common::stderr(&again)
    );
    // Replaced by other bytes of the same length: the ETag says so.
    let mut changed = csv.clone();
    let i = changed.iter().position(|&b| b == b'4').unwrap();
    changed[i] = b'5';
    c.put("c/typed.csv", changed);
    let refused = run();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        common::stderr(&refused)
    );
    let err = common::stderr(&refused);
    assert!(
        err.contains("s3://exports/c/typed.csv changed since the checkpoint"),
        "{err}"
    );
}

#[test]
fn an_object_replaced_while_it_is_read_is_refused_not_spliced() {
    let w = Workdir::new();
    let csv = w.generate("big.csv", 20_000, 2);
    let server = Server::start();
    let c = server.client();
    c.put("r/events.csv", std::fs::read(&csv).unwrap());
    let (_rt, inputs) = objects(&server.endpoint(), "s3://exports/r/events.csv");
    let obj = inputs[0].object.as_ref().unwrap();
    let mut r = obj.reader_at(0).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    r.read_exact(&mut buf).unwrap();
    // The rest of the first window is in flight; the object is replaced now.
    let mut other = std::fs::read(&csv).unwrap();
    other.reverse();
    c.put("r/events.csv", other);
    let mut rest = Vec::new();
    let err = r.read_to_end(&mut rest).unwrap_err().to_string();
    assert!(
        err.contains("s3://exports/r/events.csv changed while it was read"),
        "{err}"
    );
}

#[test]
fn parquet_objects_fetch_the_footer_and_the_mapped_columns_only() {
    let w = Workdir::new();
    let path = w.path("wide.parquet");
    wide_parquet(&path, 40_000, 8);
    let size = std::fs::metadata(&path).unwrap().len();
    let mapping = w.write(
        "wide.toml",
        "[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\n",
    );
    let server = Server::start();
    server
        .client()
        .put("p/wide.parquet", std::fs::read(&path).unwrap());
    let proxy = Proxy::start(server.addr);
    let (local, local_bodies) = dry_run(&w, &["wide.parquet"], &mapping, None);
    assert_eq!(local.status.code(), Some(0), "{}", common::stderr(&local));
    let (remote, bodies) = dry_run(
        &w,
        &["s3://exports/p/wide.parquet"],
        &mapping,
        Some(&proxy.endpoint()),
    );
    assert_eq!(remote.status.code(), Some(0), "{}", common::stderr(&remote));
    assert!(bodies == local_bodies);
    let served = proxy.faults.body_bytes.load(Ordering::SeqCst);
    eprintln!("served {served} of {size} bytes");
    // Two of 20 columns, the small ones, and the footer (read at the plan and again).
    assert!(served < size / 4, "served {served} of {size} bytes");
}

/// A Parquet file of `rows` rows in `groups` row groups: two small columns the test maps
/// (`user_id`, `event`) and 18 wide text columns it does not.
fn wide_parquet(path: &Path, rows: usize, groups: usize) {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    let per = rows / groups;
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(per))
        .build();
    let mut cols: Vec<(String, ArrayRef)> = vec![
        (
            "user_id".into(),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("u{i}")),
            )),
        ),
        (
            "event".into(),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("E{}", i % 7)),
            )),
        ),
    ];
    for c in 0..18 {
        cols.push((
            format!("wide_{c}"),
            Arc::new(StringArray::from_iter_values((0..rows).map(|i| {
                format!(
                    "{:016x}{:016x}",
                    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ c,
                    i
                )
            }))),
        ));
    }
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut wr = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    wr.write(&batch).unwrap();
    wr.close().unwrap();
}

#[test]
fn a_read_that_keeps_failing_stops_the_run_resumably_naming_the_object() {
    let w = Workdir::new();
    let csv = w.generate("big.csv", 30_000, 7);
    let server = Server::start();
    server
        .client()
        .put("p/events.csv", std::fs::read(&csv).unwrap());
    let proxy = Proxy::start(server.addr);
    let (receiver, record) = common::receiver(w.dir(), Default::default());
    let run = || {
        let mut cmd = w.cmd();
        cmd.args([
            "run",
            "s3://exports/p/events.csv",
            "--mapping",
            fixture("events.toml").to_str().unwrap(),
            "--quiet",
            "--read-retry-secs",
            "2",
        ])
        .arg("--endpoint")
        .arg(receiver.base_url())
        .envs(Server::env(&proxy.endpoint()));
        common::run(&mut cmd)
    };
    // The body is cut 2 MiB into the second GET; from then on every GET is a 500.
    proxy.faults.reset_after.store(2 << 20, Ordering::SeqCst);
    let faults = proxy.faults.clone();
    let outage = std::thread::spawn(move || {
        while faults.reset_after.load(Ordering::SeqCst) != 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        faults.fail_next.store(u32::MAX, Ordering::SeqCst);
    });
    let started = Instant::now();
    let failed = run();
    outage.join().unwrap();
    let err = common::stderr(&failed);
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(
        err.contains("s3://exports/p/events.csv: reading failed at byte"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the retries stop after --read-retry-secs"
    );
    let partial = common::recorded_calls(&record).len();
    assert!(partial > 0, "calls before the outage were delivered");

    // The store answers again: the same command resumes and ends exact.
    proxy.faults.fail_next.store(0, Ordering::SeqCst);
    let resumed = run();
    assert_eq!(
        resumed.status.code(),
        Some(3),
        "{}",
        common::stderr(&resumed)
    );
    let calls = common::recorded_calls(&record);
    let ids = common::message_ids(&calls);
    let (local, bodies) = dry_run(&w, &["big.csv"], &fixture("events.toml"), None);
    assert_eq!(local.status.code(), Some(3), "{}", common::stderr(&local));
    let want: std::collections::HashSet<String> = bodies
        .lines()
        .flat_map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            v["batch"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["messageId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, want, "every call of a local run, and no other");
    // What a resume sends again is bounded by the durable window; nothing is lost.
    assert!(
        calls.len() - ids.len() <= 2 * 2_000,
        "{} calls sent twice",
        calls.len() - ids.len()
    );
}
