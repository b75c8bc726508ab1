//! The transport under HTTP, in both directions: TLS set-up (rustls on
//! ring) with the server's certificate and key (`server.tls_cert`,
//! `server.tls_key`) and the roots the outbound client trusts (web PKI plus
//! `webhooks.ca_file`); handshakes with their deadline; and connecting to
//! an origin. Kept apart from `config` and `http` because both use it: the
//! config checks the files when it is read, the server and the client are
//! built on them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use tokio_util::either::Either;

/// A connection to a counterpart: plain TCP or TLS over it.
pub type Stream = Either<TcpStream, client::TlsStream<TcpStream>>;

/// host:port of a URL: the unit of "one counterpart" for concurrency limits.
pub fn authority(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(u) => {
            let port = u
                .port_u16()
                .unwrap_or(if u.scheme_str() == Some("https") { 443 } else { 80 });
            format!("{}:{port}", u.host().unwrap_or(""))
        }
        Err(_) => url.split('/').nth(2).unwrap_or(url).to_string(),
    }
}

/// Where a connection goes: requests to the same origin may share one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn of(uri: &Uri) -> Result<Origin, String> {
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{uri} is not an http or https URL")),
        };
        let host = uri.host().ok_or_else(|| format!("{uri} names no host"))?;
        Ok(Origin {
            tls,
            // An IPv6 literal comes bracketed; sockets and TLS want it bare.
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        })
    }

    /// Connects, with TLS when the origin is https; errors name the origin.
    pub async fn connect(&self, tls: &TlsConnector) -> Result<Stream, String> {
        let what = |e: &dyn std::fmt::Display| format!("connecting to {}:{}: {e}", self.host, self.port);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| what(&e))?;
        tcp.set_nodelay(true).map_err(|e| what(&e))?;
        if !self.tls {
            return Ok(Either::Left(tcp));
        }
        let name = ServerName::try_from(self.host.clone()).map_err(|e| what(&e))?;
        let stream = tls.connect(name, tcp).await;
        stream
            .map(Either::Right)
            .map_err(|e| format!("TLS with {}:{}: {e}", self.host, self.port))
    }
}

/// Whether `host` (as a URL names it, port aside) can be connected to: a
/// name, an IPv4 address, or an IPv6 address in brackets (`[zz]` parses as
/// a URI's host, but names nothing).
pub fn valid_host(host: &str) -> bool {
    match host.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !host.is_empty() && !host.contains([']', '[']),
    }
}

/// A client must finish the TLS handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Loads the server's certificate chain and key; the error names the file and the fix.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("server.tls_cert: cannot read certificates from {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("server.tls_cert: {} holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "server.tls_key: cannot read a PEM private key from {}: {e}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("server.tls_cert: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls_key: does not match server.tls_cert or is unusable: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The outbound client's TLS: the public web PKI roots, plus the PEM roots
/// of `ca_file` for receivers behind an on-premise CA (see [`Trust`]).
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    let extra = match ca_file {
        Some(path) => load_roots(path)?,
        None => Vec::new(),
    };
    let trust = Trust::new(&extra).map_err(|e| format!("webhooks.ca_file: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(trust))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Whom herald trusts as a server: certificates that chain to the public
/// web PKI or to a root of `ca_file`, and a certificate `ca_file` holds
/// itself. The last is how an on-site server with a self-signed
/// certificate is trusted: one made the usual way (`openssl req -x509`)
/// marks itself CA:TRUE, which the web PKI's rules refuse for a server
/// (`CaUsedAsEndEntity`). Such a certificate is taken only when it is,
/// byte for byte, one the operator put in `ca_file`, and still only for
/// the names it holds, and the handshake proves the server has its key.
#[derive(Debug)]
pub struct Trust {
    chains: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Trust {
    /// The web PKI and `extra` (the PEM certificates of a `ca_file`).
    pub fn new(extra: &[CertificateDer<'static>]) -> Result<Trust, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra {
            roots.add(cert.clone()).map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chains = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Trust {
            chains,
            pinned: extra.to_vec(),
            provider,
        })
    }

    /// Whether the chain a server presented (its own certificate first)
    /// is trusted for `name`.
    pub fn check(&self, chain: &[CertificateDer<'_>], name: &ServerName<'_>) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        let Some((end, intermediates)) = chain.split_first() else {
            return Err(rustls::Error::NoCertificatesPresented);
        };
        let now = rustls::pki_types::UnixTime::now();
        match self.chains.verify_server_cert(end, intermediates, name, &[], now) {
            Ok(_) => Ok(()),
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end.as_ref()) => {
                let cert = rustls::server::ParsedCertificate::try_from(end)?;
                rustls::client::verify_server_name(&cert, name)
            }
            Err(e) => Err(e),
        }
    }
}

impl rustls::client::danger::ServerCertVerifier for Trust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone()];
        chain.extend(intermediates.iter().cloned());
        self.check(&chain, server_name)?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The server side of a handshake, within [`HANDSHAKE_TIMEOUT`].
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &TlsAcceptor,
    tcp: S,
) -> Result<server::TlsStream<S>, String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(done) => done.map_err(|e| e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

/// The server's side of its listener: connections up to a limit, each with
/// a deadline on a peer that stops sending or reading. When the limit is
/// reached, a few more are let in with a short deadline, so that a quick
/// caller (`/healthz`, a local program) still gets through while slow ones
/// hold every regular place.
pub struct Gate {
    listener: TcpListener,
    regular: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    /// How long a read or a write may wait on the peer.
    patience: Duration,
}

/// An accepted connection.
pub struct Admitted {
    pub stream: Deadline<TcpStream>,
    pub peer: SocketAddr,
    /// Held for as long as the connection lives.
    pub place: OwnedSemaphorePermit,
}

/// The deadline of connections let in over the limit.
const OVERFLOW_PATIENCE: Duration = Duration::from_secs(1);

impl Gate {
    pub fn new(listener: TcpListener, max_connections: usize, patience: Duration) -> Gate {
        Gate {
            listener,
            regular: Arc::new(Semaphore::new(max_connections)),
            overflow: Arc::new(Semaphore::new((max_connections / 4).max(8))),
            patience,
        }
    }

    pub async fn accept(&self) -> Admitted {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let short = OVERFLOW_PATIENCE.min(self.patience);
            let (place, patience) = match self.regular.clone().try_acquire_owned() {
                Ok(place) => (place, self.patience),
                Err(_) => tokio::select! {
                    biased;
                    Ok(place) = self.regular.clone().acquire_owned() => (place, self.patience),
                    Ok(place) = self.overflow.clone().acquire_owned() => (place, short),
                },
            };
            let stream = Deadline::new(tcp, patience);
            return Admitted { stream, peer, place };
        }
    }
}

/// A stream whose reads and writes fail with `TimedOut` once they have
/// waited on the peer for `patience`: a body that never comes, a client that
/// never reads its answer, an idle keep-alive connection. The clock runs
/// only while an operation waits, so an answer written in steady steps or
/// a handler at work is never cut.
pub struct Deadline<S> {
    inner: S,
    patience: Duration,
    read: Timer,
    write: Timer,
}

struct Timer {
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl Timer {
    fn new() -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
        }
    }

    /// After the inner operation returned `Pending`: the error once waited out.
    fn expired(&mut self, patience: Duration, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.armed {
            self.sleep.as_mut().reset(Instant::now() + patience);
            self.armed = true;
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer stopped sending or reading",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The operation went on: the clock stops.
    fn progress<T>(&mut self, ready: T) -> Poll<T> {
        self.armed = false;
        Poll::Ready(ready)
    }
}

impl<S> Deadline<S> {
    pub fn new(inner: S, patience: Duration) -> Deadline<S> {
        Deadline {
            inner,
            patience,
            read: Timer::new(),
            write: Timer::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => this.read.progress(r),
            Poll::Pending => this.read.expired(this.patience, cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => this.write.progress(r),
            Poll::Pending => this.write.expired(this.patience, cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => this.write.progress(r),
            Poll::Pending => this.write.expired(this.patience, cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => this.write.progress(r),
            Poll::Pending => this.write.expired(this.patience, cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::valid_host;

    #[test]
    fn a_host_is_a_name_or_an_ipv6_address_in_brackets() {
        for ok in ["erp.example.com", "10.0.0.7", "[::1]", "[fe80::1]", "@"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "[zz]", "[::1", "a]b", "[]"] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
