//! A real S3-compatible server for the object-storage tests, in this process, on
//! 127.0.0.1: s3s-fs (s3s's file-system backend) behind hyper, with SigV4 checked, on a
//! tokio runtime of its own; and a fault proxy in front of it.
//!
//! Why s3s-fs and not moto's server: it starts in milliseconds as a thread, needs no
//! Python in CI and checks real SigV4 signatures (moto passed the same spike checks but
//! costs minutes of installing). Two things it lacks are added by [`Atomic`]:
//! - its conditional PUT checks `If-None-Match`/`If-Match` and then writes, with no lock
//!   between: two racing writers could both win. PUT and DELETE run under one lock here,
//!   as S3 guarantees;
//! - it ignores `If-Match` on GET: checked here against the object's ETag (read from the
//!   ETag s3s-fs stored when the object was PUT, else an MD5 cached by size and time).
//!
//! [`Proxy`]: a std-thread HTTP/1.1 proxy that counts the body bytes it serves and
//! injects faults into GETs: `500 InternalError` answers, a TCP reset part way into a
//! body, and a slow body.
//!
//! Included with `#[path = "common/s3.rs"] mod s3;` by the tests that need it, so the
//! other test binaries do not build it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use object_store::ObjectStoreExt;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, S3};
use s3s_fs::FileSystem;

pub const ACCESS_KEY: &str = "AKIDCDPBACKFILLTEST";
pub const SECRET_KEY: &str = "cdp-backfill-test-secret-key";
pub const BUCKET: &str = "exports";

/// The server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub root: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Server {
    /// A server over a fresh temp dir holding the bucket [`BUCKET`].
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("a temp dir for the server");
        std::fs::create_dir_all(dir.path().join(BUCKET)).expect("the bucket's directory");
        let mut s = start(dir.path()).expect("the S3 server starts on loopback");
        s._dir = Some(dir);
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment a child needs to reach `endpoint` (this server, or a proxy in
    /// front of it) with the test credentials, and nothing of the machine's own.
    pub fn env(endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_ENDPOINT_URL", endpoint.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
            ("AWS_CONFIG_FILE", "/nonexistent".into()),
        ]
    }

    /// An object store client of this server, for the test itself.
    pub fn client(&self) -> Client {
        Client::new(&self.endpoint())
    }
}

/// A small client of the server, for setting objects up and changing them.
pub struct Client {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn object_store::ObjectStore>,
}

impl Client {
    pub fn new(endpoint: &str) -> Client {
        cdp_backfill::source::remote::locate::install_crypto_provider();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("a client of the test server");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the client");
        Client {
            rt,
            store: Arc::new(store),
        }
    }

    /// Writes `key` (its ETag is then stored by the server: GETs need no MD5).
    pub fn put(&self, key: &str, bytes: impl Into<Vec<u8>>) {
        let (store, path) = (self.store.clone(), object_store::path::Path::from(key));
        let payload = object_store::PutPayload::from(bytes.into());
        self.rt
            .block_on(async move { store.put(&path, payload).await })
            .expect("PUT an object");
    }

    /// Writes every file under `dir` as `prefix/<relative path>`.
    pub fn put_dir(&self, dir: &Path, prefix: &str) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read a dir") {
                let p = e.expect("a dir entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    self.put(&format!("{prefix}/{rel}"), std::fs::read(&p).unwrap());
                }
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let (store, path) = (self.store.clone(), object_store::path::Path::from(key));
        self.rt.block_on(async move {
            match store.get(&path).await {
                Ok(r) => Some(r.bytes().await.ok()?.to_vec()),
                Err(_) => None,
            }
        })
    }

    /// Every key under `prefix`.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let (store, path) = (self.store.clone(), object_store::path::Path::from(prefix));
        let mut keys: Vec<String> = self
            .rt
            .block_on(async move { store.list(Some(&path)).try_collect::<Vec<_>>().await })
            .expect("list")
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        keys.sort();
        keys
    }
}

/// Starts the server over `root` (each directory in it is a bucket).
pub fn start(root: &Path) -> std::io::Result<Server> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;
    use s3s::auth::SimpleAuth;
    use s3s::service::S3ServiceBuilder;

    let fs = FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut b = S3ServiceBuilder::new(Atomic {
        inner: fs,
        lock: tokio::sync::Mutex::new(()),
        root: root.to_path_buf(),
        etags: Mutex::new(HashMap::new()),
    });
    b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = b.build();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("s3s-fs".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the server's runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            let Ok((sock, _)) = r else { continue };
                            // As a real store's front ends do: without it, Nagle's
                            // algorithm holds each small body write for the client's
                            // delayed ACK, 40 ms at a time (one object of 600 kB
                            // took 60 ms more than its bytes).
                            let _ = sock.set_nodelay(true);
                            let conn = http.serve_connection(TokioIo::new(sock), service.clone()).into_owned();
                            tokio::spawn(async move { let _ = conn.await; });
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            });
        })?;
    Ok(Server {
        addr,
        root: root.to_path_buf(),
        stop: Some(stop_tx),
        thread: Some(thread),
        _dir: None,
    })
}

/// s3s-fs with PUT and DELETE serialised (so a conditional PUT is atomic) and GET
/// `If-Match` checked.
struct Atomic {
    inner: FileSystem,
    lock: tokio::sync::Mutex<()>,
    root: PathBuf,
    /// MD5 ETags of objects written without the S3 API, by size and time.
    etags: Mutex<HashMap<PathBuf, (u64, SystemTime, String)>>,
}

impl Atomic {
    /// The object's ETag as s3s-fs reports it: the one stored at PUT, else the MD5.
    fn etag(&self, bucket: &str, key: &str) -> Option<String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let info = self.root.join(format!(
            ".bucket-{}.object-{}.internal.json",
            b64.encode(bucket),
            b64.encode(key)
        ));
        if let Ok(text) = std::fs::read(&info) {
            let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
            if let Some(e) = v.get("e_tag").and_then(|e| e.as_str()) {
                return Some(e.to_string());
            }
        }
        let path = self.root.join(bucket).join(key);
        let meta = std::fs::metadata(&path).ok()?;
        let (len, time) = (meta.len(), meta.modified().ok()?);
        let mut cache = self.etags.lock().unwrap();
        if let Some((l, t, e)) = cache.get(&path) {
            if *l == len && *t == time {
                return Some(e.clone());
            }
        }
        use md5::Digest;
        let data = std::fs::read(&path).ok()?;
        let e: String = md5::Md5::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        cache.insert(path, (len, time, e.clone()));
        Some(e)
    }
}

#[async_trait::async_trait]
impl S3 for Atomic {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let _g = self.lock.lock().await;
        self.inner.put_object(req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let _g = self.lock.lock().await;
        self.inner.delete_object(req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        if let Some(ETagCondition::ETag(expected)) = &req.input.if_match {
            let Some(etag) = self.etag(&req.input.bucket, &req.input.key) else {
                return Err(s3s::s3_error!(NoSuchKey));
            };
            if !ETag::Strong(etag).strong_cmp(expected) {
                return Err(s3s::s3_error!(PreconditionFailed, "ETag does not match"));
            }
        }
        let path = self.root.join(&req.input.bucket).join(&req.input.key);
        let mut resp = self.inner.get_object(req).await?;
        // s3s-fs streams a body in 4 kB reads, each a hop to tokio's blocking pool, and
        // would cost more CPU than the client it serves on these shared cores; a real
        // store sends large writes. The same bytes, read 256 kB at a time.
        let len = resp.output.content_length.unwrap_or(0).max(0) as u64;
        let start = match resp.output.content_range.as_deref() {
            Some(r) => r
                .trim_start_matches("bytes ")
                .split('-')
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| s3s::s3_error!(InternalError, "content range {r}"))?,
            None => 0,
        };
        let chunks = FileChunks::open(&path, start, len)
            .map_err(|e| s3s::s3_error!(InternalError, "{e}"))?;
        resp.output.body = Some(StreamingBlob::wrap(chunks));
        Ok(resp)
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.inner.head_object(req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.inner.list_objects_v2(req).await
    }
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }
}

/// `len` bytes of a file from `start`, 256 kB a chunk.
struct FileChunks {
    file: std::fs::File,
    left: u64,
}

impl FileChunks {
    fn open(path: &Path, start: u64, len: u64) -> std::io::Result<FileChunks> {
        use std::io::Seek;
        let mut file = std::fs::File::open(path)?;
        file.seek(std::io::SeekFrom::Start(start))?;
        Ok(FileChunks { file, left: len })
    }
}

impl futures_lite::Stream for FileChunks {
    type Item = std::io::Result<bytes::Bytes>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        // A read of the page cache: short enough to do on the runtime's thread.
        let mut buf = vec![0; self.left.min(256 << 10) as usize];
        let r = match self.file.read(&mut buf) {
            Ok(0) => Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf.truncate(n);
                self.left -= n as u64;
                Ok(bytes::Bytes::from(buf))
            }
            Err(e) => Err(e),
        };
        std::task::Poll::Ready(Some(r))
    }
}

/// What the proxy does to GETs, and what it counted.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next N GETs are answered `500 InternalError`.
    pub fail_next: AtomicU32,
    /// When non-zero: the next GET's body is cut (RST) after this many bytes.
    pub reset_after: AtomicU64,
    /// When non-zero: GET bodies are served at about this many bytes per second.
    pub slow_bps: AtomicU64,
    /// When non-zero: every GET waits this many milliseconds before it is forwarded (a
    /// store a WAN round trip away).
    pub get_delay_ms: AtomicU64,
    /// Body bytes served to GETs.
    pub body_bytes: AtomicU64,
    pub requests: AtomicU64,
    /// `METHOD PATH RANGE` of every request, and `END PATH RANGE` when a GET's answer
    /// has been sent.
    pub log: Mutex<Vec<String>>,
}

/// Logs `END PATH RANGE` when a GET's answer is over (dropped), however it ended.
struct GetEnd<'a> {
    f: &'a Faults,
    what: String,
}

impl Drop for GetEnd<'_> {
    fn drop(&mut self) {
        let line = format!("END {}", self.what);
        self.f.log.lock().unwrap().push(line);
    }
}

impl Faults {
    pub fn reset_counters(&self) {
        self.body_bytes.store(0, Ordering::SeqCst);
        self.requests.store(0, Ordering::SeqCst);
        self.log.lock().unwrap().clear();
    }
    pub fn gets(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("GET "))
            .cloned()
            .collect()
    }
}

/// The proxy; stops accepting when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("the proxy binds on loopback");
        let addr = l.local_addr().unwrap();
        let faults = Arc::new(Faults::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (faults.clone(), stop.clone());
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                for c in l.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(c) = c else { continue };
                    let f = f.clone();
                    std::thread::spawn(move || {
                        let _ = serve(c, upstream, &f);
                    });
                }
            })
            .expect("the proxy's thread");
        Proxy { addr, faults, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One client connection: each request goes to the server on a fresh connection with
/// `Connection: close`, so only request heads need parsing.
fn serve(client: TcpStream, upstream: SocketAddr, f: &Faults) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut out = client.try_clone()?;
    let mut r = BufReader::new(client);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let method = request_line.split(' ').next().unwrap_or("").to_string();
        let mut len = 0usize;
        let mut range = String::new();
        let mut fwd = format!("{request_line}\r\n");
        for h in lines.filter(|l| !l.is_empty()) {
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "connection" => continue,
                "range" => range = v.trim().to_string(),
                _ => {}
            }
            fwd.push_str(h);
            fwd.push_str("\r\n");
        }
        fwd.push_str("Connection: close\r\n\r\n");
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        f.requests.fetch_add(1, Ordering::SeqCst);
        let path = request_line.split(' ').nth(1).unwrap_or("");
        f.log
            .lock()
            .unwrap()
            .push(format!("{method} {path} {range}").trim().to_string());
        let is_get = method == "GET" && !path.contains("list-type");
        let _end = is_get.then(|| GetEnd {
            f,
            what: format!("{path} {range}").trim().to_string(),
        });
        match f.get_delay_ms.load(Ordering::SeqCst) {
            ms if is_get && ms > 0 => std::thread::sleep(Duration::from_millis(ms)),
            _ => {}
        }
        if is_get && f.fail_next.load(Ordering::SeqCst) > 0 {
            f.fail_next.fetch_sub(1, Ordering::SeqCst);
            let b = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>injected</Message></Error>";
            write!(
                out,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )?;
            continue;
        }
        let mut up = TcpStream::connect(upstream)?;
        up.set_nodelay(true)?;
        up.write_all(fwd.as_bytes())?;
        up.write_all(&body)?;
        let mut ur = BufReader::new(up);
        let mut rhead = Vec::new();
        loop {
            let mut line = Vec::new();
            if ur.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let end = line == b"\r\n";
            rhead.extend_from_slice(&line);
            if end {
                break;
            }
        }
        out.write_all(&rhead)?;
        let reset = if is_get {
            f.reset_after.load(Ordering::SeqCst)
        } else {
            0
        };
        let slow = if is_get {
            f.slow_bps.load(Ordering::SeqCst)
        } else {
            0
        };
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = ur.read(&mut buf)?;
            if n == 0 {
                break;
            }
            // Only a body that reaches the mark is cut (and uses the fault up).
            if reset > 0
                && sent + n as u64 >= reset
                && f.reset_after.swap(0, Ordering::SeqCst) == reset
            {
                let n = (reset - sent) as usize;
                out.write_all(&buf[..n])?;
                if is_get {
                    f.body_bytes.fetch_add(n as u64, Ordering::SeqCst);
                }
                rst(&out);
                return Ok(());
            }
            out.write_all(&buf[..n])?;
            sent += n as u64;
            if is_get {
                f.body_bytes.fetch_add(n as u64, Ordering::SeqCst);
            }
            if slow > 0 {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / slow as f64));
            }
        }
        // The upstream answer ended (it closes after one response): so does this one,
        // since its length was whatever the server framed it as.
        return Ok(());
    }
}

/// Closes with a TCP RST (SO_LINGER 0), as a dropped connection looks to the client.
fn rst(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor `s` keeps open, with a pointer to a live local
    // of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
