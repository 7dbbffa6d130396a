//! A URL → a store, a key (or prefix, or glob), and the form it is shown in.
//!
//! Credentials come from each cloud's standard chain, as its `from_env` builder reads
//! it: for S3 every `AWS_*` variable (static keys and session token, web identity for
//! EKS IRSA, the container endpoint for ECS and EKS pod identity, then the instance
//! metadata service), plus the static keys of `AWS_PROFILE` (or `[default]`) in the
//! shared credentials file ([`super::profile`]); `GOOGLE_*` for GCS (service account
//! file, workload identity, metadata server); `AZURE_*` for Azure (keys, SAS, client
//! secrets, workload and managed identity). An `https://ACCOUNT.blob.core.windows.net/…`
//! URL with a SAS query takes the query as its credential.
//!
//! A custom S3 endpoint (MinIO, R2, Ceph, a test server): `AWS_ENDPOINT_URL_S3`, else
//! `AWS_ENDPOINT_URL` (else object_store's `AWS_ENDPOINT`), addressed path-style, region
//! `us-east-1` unless one is set. Plain `http://` is allowed only for a loopback host or
//! with `AWS_ALLOW_HTTP=true`, and refused here, before the first request.
//!
//! Timeouts: connect 10 s, and 30 s of silence while reading a response; no
//! whole-request timeout (object_store's default would cut every object that takes
//! longer than 30 s to stream: [`super::stream`] resumes broken bodies instead).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::profile;
use super::redact::{describe, redact_url};
use super::RemoteError;

/// The environment a store is configured from (the process's, or a test's list).
#[derive(Debug, Clone, Default)]
pub struct StoreEnv {
    vars: Vec<(String, String)>,
    /// object_store's retry of one request gives up after this long.
    retry_for: Duration,
}

impl StoreEnv {
    /// The process environment.
    pub fn from_process() -> StoreEnv {
        StoreEnv::from_vars(std::env::vars().collect())
    }

    pub fn from_vars(vars: Vec<(String, String)>) -> StoreEnv {
        StoreEnv {
            vars,
            retry_for: super::DEFAULT_RETRY_FOR,
        }
    }

    /// The same, with object_store's retry of one request bounded by `d`.
    pub fn retrying_for(self, d: Duration) -> StoreEnv {
        StoreEnv {
            retry_for: d,
            ..self
        }
    }

    /// A variable, `None` when unset or empty.
    pub fn var(&self, k: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// A located URL.
#[derive(Debug, Clone)]
pub struct Located {
    pub store: Arc<dyn ObjectStore>,
    /// The key; for a prefix or a glob, the literal part before it (no trailing `/`).
    pub path: Path,
    /// The URL as shown in messages, checkpoints and rejects: redacted.
    pub display: String,
    /// What a key is appended to for display: `s3://bucket/` and the like.
    pub base: String,
    /// The URL ended with `/`: a prefix, never one object.
    pub is_prefix: bool,
    /// A glob pattern over the keys below `path` (the part from the first segment that
    /// holds `*`, `?` or `[`).
    pub glob: Option<String>,
}

impl Located {
    /// How the object at `key` is shown.
    pub fn show(&self, key: &Path) -> String {
        format!("{}{}", self.base, key.as_ref())
    }
}

/// Attempts of one request, and the backoff between them (object_store's own retry, for
/// 5xx, 429 and connection errors; the stream's resuming loop runs above it).
fn retry(retry_for: Duration) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 8,
        retry_timeout: retry_for,
    }
}

fn client() -> ClientOptions {
    let mut options = ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(Duration::from_secs(10))
        .with_read_timeout(Duration::from_secs(30));
    if BUNDLED_ROOTS.load(std::sync::atomic::Ordering::SeqCst) {
        for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
            if let Ok(c) = object_store::Certificate::from_der(der.as_ref()) {
                options = options.with_root_certificate(c);
            }
        }
    }
    options
}

/// True for an error text (its [`describe`]) saying rustls refused the store's
/// certificate: no authority it trusts signed it, or it names another host.
pub(crate) fn refused_certificate(why: &str) -> bool {
    why.contains("invalid peer certificate")
}

/// object_store's reqwest connector, except that a certificate refused ends the request
/// at once: object_store retries any failed connect (some 25 s with the defaults), and
/// no retry makes an unknown authority known.
#[derive(Debug, Default)]
struct Verified;

impl HttpConnector for Verified {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(CertificateFinal(inner)))
    }
}

#[derive(Debug)]
struct CertificateFinal(HttpClient);

#[async_trait::async_trait]
impl HttpService for CertificateFinal {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.0
            .execute(req)
            .await
            .map_err(|e| match refused_certificate(&describe(&e)) {
                true => HttpError::new(HttpErrorKind::Unknown, e),
                false => e,
            })
    }
}

/// Makes ring the process's rustls crypto provider (once; a provider already installed
/// stays): reqwest is built without one of its own, and a client cannot be built before.
/// ring, which object_store already signs with, rather than aws-lc-rs and its C build;
/// it offers no post-quantum key exchange (rustls deprecates it for that), as neither
/// did the OpenSSL 3.0 this replaced.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Set once this system was found to have no CA certificates: stores are then built
/// trusting the Mozilla roots compiled in (`webpki-root-certs`).
static BUNDLED_ROOTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Locates `arg` (an object, a prefix or a glob URL).
///
/// A client verifies certificates against the system's authorities (`/etc/ssl/certs`,
/// `SSL_CERT_FILE`, `SSL_CERT_DIR`) and cannot be built where there are none, not even
/// for a plain-http endpoint: a minimal container talking to an in-cluster MinIO. There
/// the Mozilla roots built in are used instead, and a warning says so.
pub fn locate(arg: &str, env: &StoreEnv) -> Result<Located, RemoteError> {
    use std::sync::atomic::Ordering;
    install_crypto_provider();
    match locate_once(arg, env) {
        Err(RemoteError::Url { why, .. })
            if why.contains("No CA certificates")
                && !BUNDLED_ROOTS.swap(true, Ordering::SeqCst) =>
        {
            crate::source::note(format_args!("this system has no CA certificates (install ca-certificates, or set SSL_CERT_FILE): object stores are verified against the Mozilla roots built in"));
            locate_once(arg, env)
        }
        r => r,
    }
}

fn locate_once(arg: &str, env: &StoreEnv) -> Result<Located, RemoteError> {
    let display = redact_url(arg);
    let bad = |why: String| RemoteError::Url {
        url: display.clone(),
        why,
    };
    let url = url::Url::parse(arg).map_err(|e| bad(format!("not a valid URL ({e})")))?;
    let host = url.host_str().unwrap_or("").to_string();
    if host.is_empty() {
        return Err(bad("no bucket or container in the URL".into()));
    }
    let mut key = url.path().trim_start_matches('/').to_string();
    let built = |e: object_store::Error| bad(describe(&e));
    let (store, base): (Arc<dyn ObjectStore>, String) = match url.scheme() {
        "s3" | "s3a" => (
            Arc::new(s3(arg, env).map_err(|e| match e {
                Built::Store(e) => built(e),
                Built::Refused(e) => e,
            })?),
            format!("s3://{host}/"),
        ),
        "gs" => {
            let s = GoogleCloudStorageBuilder::from_env()
                .with_url(arg)
                .with_client_options(client())
                .with_retry(retry(env.retry_for))
                .with_http_connector(Verified)
                .build()
                .map_err(built)?;
            (Arc::new(s), format!("gs://{host}/"))
        }
        "az" | "abfs" | "abfss" | "azure" => {
            let s = MicrosoftAzureBuilder::from_env()
                .with_url(arg)
                .with_client_options(client())
                .with_retry(retry(env.retry_for))
                .with_http_connector(Verified)
                .build()
                .map_err(built)?;
            let user = match url.username() {
                "" => String::new(),
                u => format!("{u}@"),
            };
            (Arc::new(s), format!("{}://{user}{host}/", url.scheme()))
        }
        "https" | "http" if host.ends_with(".blob.core.windows.net") => {
            // An Azure blob URL: the container is the first segment; a SAS query is the
            // credential, so it never travels in a key or a message.
            let (container, rest) = key.split_once('/').unwrap_or((&key, ""));
            let (container, rest) = (container.to_string(), rest.to_string());
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(format!("https://{host}/{container}"))
                .with_container_name(&container);
            if let Some(q) = url.query() {
                b = b.with_config(AzureConfigKey::SasKey, q);
            }
            let s = b
                .with_client_options(client())
                .with_retry(retry(env.retry_for))
                .with_http_connector(Verified)
                .build()
                .map_err(built)?;
            key = rest;
            (Arc::new(s), format!("https://{host}/{container}/"))
        }
        "https" | "http" => {
            let allow_http = match url.scheme() {
                "http" => http_allowed(arg, env.var("AWS_ALLOW_HTTP"))?,
                _ => false,
            };
            if url.query().is_some() {
                return Err(bad(
                    "a signed query on a plain https URL is not supported (the query would be dropped); use the store's own URL (s3://, gs://, az://) with credentials in the environment".into(),
                ));
            }
            let mut root = url.clone();
            root.set_path("/");
            let s = HttpBuilder::new()
                .with_url(root.as_str())
                .with_client_options(client().with_allow_http(allow_http))
                .with_retry(retry(env.retry_for))
                .with_http_connector(Verified)
                .build()
                .map_err(built)?;
            (Arc::new(s), redact_url(root.as_str()))
        }
        other => return Err(bad(format!("unsupported scheme {other}://"))),
    };
    let is_prefix = key.is_empty() || key.ends_with('/');
    // A glob: the literal segments before the first one with a pattern character.
    let (literal, glob) = match key.find(['*', '?', '[']) {
        Some(i) => {
            let cut = key[..i].rfind('/').map_or(0, |s| s + 1);
            (key[..cut].to_string(), Some(key[cut..].to_string()))
        }
        None => (key.clone(), None),
    };
    let path = Path::from_url_path(literal.trim_end_matches('/'))
        .map_err(|e| bad(format!("not a valid object key ({e})")))?;
    let glob = glob
        .map(|g| {
            // Keys are matched decoded, as the listing gives them.
            Path::from_url_path(&g)
                .map(|p| p.as_ref().to_string())
                .map_err(|e| bad(format!("not a valid object key pattern ({e})")))
        })
        .transpose()?;
    Ok(Located {
        store,
        path,
        display,
        base,
        is_prefix,
        glob,
    })
}

enum Built {
    Store(object_store::Error),
    Refused(RemoteError),
}

/// An S3 store from the environment (and the profile file), for `arg`.
fn s3(arg: &str, env: &StoreEnv) -> Result<object_store::aws::AmazonS3, Built> {
    let mut b = AmazonS3Builder::new();
    for (k, v) in &env.vars {
        if k.starts_with("AWS_") && !v.is_empty() {
            if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                b = b.with_config(key, v);
            }
        }
    }
    let endpoint = env
        .var("AWS_ENDPOINT_URL_S3")
        .or(env.var("AWS_ENDPOINT_URL"))
        .or(env.var("AWS_ENDPOINT"));
    let allow_http = match endpoint {
        Some(e) => {
            b = b.with_endpoint(e);
            http_allowed(e, env.var("AWS_ALLOW_HTTP")).map_err(Built::Refused)?
        }
        None => false,
    };
    // Path-style addressing for custom endpoints (MinIO, Ceph, the test server).
    if endpoint.is_some() && env.var("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_none() {
        b = b.with_virtual_hosted_style_request(false);
    }
    let profile_name = env.var("AWS_PROFILE");
    if env.var("AWS_ACCESS_KEY_ID").is_none() && env.var("AWS_WEB_IDENTITY_TOKEN_FILE").is_none() {
        let name = profile_name.unwrap_or("default");
        let var = |k: &str| env.var(k).map(str::to_string);
        if let Some(file) = profile::credentials_file(var) {
            if let Some(k) =
                profile::static_keys(&file, name, profile_name.is_some()).map_err(Built::Refused)?
            {
                b = b
                    .with_access_key_id(k.access_key_id)
                    .with_secret_access_key(k.secret_access_key);
                if let Some(t) = k.session_token {
                    b = b.with_token(t);
                }
            }
        }
    }
    if env.var("AWS_REGION").is_none() && env.var("AWS_DEFAULT_REGION").is_none() {
        let var = |k: &str| env.var(k).map(str::to_string);
        let region = profile::config_file(var)
            .and_then(|f| profile::region(&f, profile_name.unwrap_or("default")));
        b = b.with_region(region.unwrap_or_else(|| "us-east-1".into()));
    }
    b.with_url(arg)
        .with_client_options(client().with_allow_http(allow_http))
        .with_retry(retry(env.retry_for))
        .with_http_connector(Verified)
        .build()
        .map_err(Built::Store)
}

/// Whether a plain-http `endpoint` may be used: a loopback host always, another only
/// with `AWS_ALLOW_HTTP=true`. `Ok(false)` for https, which needs nothing.
pub fn http_allowed(endpoint: &str, allow_http: Option<&str>) -> Result<bool, RemoteError> {
    let shown = redact_url(endpoint);
    let u = url::Url::parse(endpoint).map_err(|e| RemoteError::Url {
        url: shown.clone(),
        why: format!("the endpoint is not a URL ({e})"),
    })?;
    if u.scheme() != "http" {
        return Ok(false);
    }
    let loopback = match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
        }
        None => false,
    };
    let opted_in = allow_http.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if loopback || opted_in {
        Ok(true)
    } else {
        Err(RemoteError::PlainHttp { endpoint: shown })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> StoreEnv {
        StoreEnv::from_vars(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn plain_http_only_for_loopback_or_opt_in() {
        assert!(http_allowed("http://127.0.0.1:9000", None).unwrap());
        assert!(http_allowed("http://127.8.0.3:9000", None).unwrap());
        assert!(http_allowed("http://[::1]:9000", None).unwrap());
        assert!(http_allowed("http://localhost:9000", None).unwrap());
        assert!(http_allowed("http://10.0.0.5:9000", None).is_err());
        assert!(http_allowed("http://minio.internal:9000", Some("false")).is_err());
        assert!(http_allowed("http://minio.internal:9000", Some("true")).unwrap());
        assert!(!http_allowed("https://minio.internal", None).unwrap());
    }

    #[test]
    fn s3_urls_locate_prefixes_objects_and_globs() {
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        ]);
        let l = locate("s3://bucket/prefix/", &e).unwrap();
        assert!(l.is_prefix && l.glob.is_none());
        assert_eq!(l.path.as_ref(), "prefix");
        assert_eq!(l.base, "s3://bucket/");
        let l = locate("s3://bucket/a/b.csv", &e).unwrap();
        assert!(!l.is_prefix);
        assert_eq!(l.show(&l.path), "s3://bucket/a/b.csv");
        let l = locate("s3://bucket/exp/2024-*/part-*.csv.gz", &e).unwrap();
        assert_eq!(l.path.as_ref(), "exp");
        assert_eq!(l.glob.as_deref(), Some("2024-*/part-*.csv.gz"));
    }

    #[test]
    fn plain_http_to_a_remote_endpoint_is_refused_before_any_request() {
        let e = env(&[("AWS_ENDPOINT_URL", "http://192.0.2.1:9000")]);
        let err = locate("s3://bucket/x.csv", &e).unwrap_err().to_string();
        assert!(err.contains("AWS_ALLOW_HTTP"), "{err}");
        let e = env(&[
            ("AWS_ENDPOINT_URL", "http://192.0.2.1:9000"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        assert!(locate("s3://bucket/x.csv", &e).is_ok());
    }

    #[test]
    fn a_sas_url_is_shown_redacted_and_a_signed_https_query_refused() {
        let sas = "https://acct.blob.core.windows.net/exports/part-0.csv?sv=2022&sig=SECRETSIG";
        let l = locate(sas, &StoreEnv::default()).unwrap();
        assert!(!l.display.contains("SECRETSIG"), "{}", l.display);
        assert_eq!(l.path.as_ref(), "part-0.csv");
        assert_eq!(l.base, "https://acct.blob.core.windows.net/exports/");
        let err = locate(
            "https://example.com/x.csv?X-Amz-Signature=SECRETSIG",
            &StoreEnv::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            !err.contains("SECRETSIG") && err.contains("not supported"),
            "{err}"
        );
    }
}
