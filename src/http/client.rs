//! The outbound HTTP client: hyper over rustls (ring), pooled keep-alive
//! connections, public web PKI roots plus the on-premise CA of
//! `webhooks.ca_file`, and a timeout on every request.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::{CertificateDer, pem::PemObject};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A cheap clone; all clones share one connection pool.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<Connector, Full<Bytes>>,
}

/// What came back, or why nothing did.
#[derive(Debug)]
pub enum Outcome {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        elapsed: Duration,
    },
    /// No answer: refused, reset, DNS, TLS, or the timeout.
    Failed {
        error: String,
        timed_out: bool,
        elapsed: Duration,
    },
}

/// Reads the PEM certificates of a CA file; the error says what to fix.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read PEM certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

impl HttpClient {
    pub fn new(ca_file: Option<&Path>) -> Result<HttpClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            for cert in load_roots(path)? {
                roots.add(cert).map_err(|e| format!("webhooks.ca_file: {e}"))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        Ok(HttpClient { inner })
    }

    /// Sends `req` and reads at most `keep` bytes of the answer, all within `timeout`.
    pub async fn send(&self, req: Request<Full<Bytes>>, timeout: Duration, keep: usize) -> Outcome {
        let started = Instant::now();
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(|e| error_chain(&e))?;
            let (parts, body) = resp.into_parts();
            // Read a little more than we keep, so a large answer is cut, not refused.
            let body = match Limited::new(body, keep.max(1) * 4).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            Ok::<_, String>((parts.status, parts.headers, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((status, headers, body))) => {
                let body = body.slice(..body.len().min(keep));
                Outcome::Response {
                    status,
                    headers,
                    body,
                    elapsed: started.elapsed(),
                }
            }
            Ok(Err(error)) => Outcome::Failed {
                error,
                timed_out: false,
                elapsed: started.elapsed(),
            },
            Err(_) => Outcome::Failed {
                error: format!("no answer within {}s", timeout.as_secs_f32()),
                timed_out: true,
                elapsed: started.elapsed(),
            },
        }
    }
}

/// hyper's errors say little at the top ("client error (Connect)"); the
/// causes say what happened ("Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
