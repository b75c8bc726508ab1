//! The server: hyper 1.x over HTTP/1.1 with keep-alive, optional TLS, the
//! connections `net::Gate` admits, and a graceful drain.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::router::Router;
use crate::net::{Admitted, Gate};

/// A client must send its request headers within this time (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `stop`, then lets in-flight requests finish
/// for at most `drain`.
pub async fn serve(
    router: Arc<Router>,
    gate: Gate,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    // Connections are tracked so that those still open at the drain timeout
    // can be closed: their tasks hold the store, which must close cleanly.
    let mut conns = tokio::task::JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    // half_close: a client that sent its whole request and shut its write
    // side still gets the answer.
    builder
        .keep_alive(true)
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    loop {
        let Admitted { stream, peer, place } = tokio::select! {
            _ = stop.cancelled() => break,
            admitted = gate.accept() => admitted,
        };
        while conns.try_join_next().is_some() {}
        let router = router.clone();
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let _place = place;
            let service = service_fn(move |req| {
                let router = router.clone();
                async move { Ok::<_, std::convert::Infallible>(router.handle(req, peer).await) }
            });
            let stream = match tls {
                None => Either::Left(stream),
                Some(acceptor) => match crate::net::accept(&acceptor, stream).await {
                    Ok(stream) => Either::Right(stream),
                    Err(error) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                },
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let result = watcher.watch(connection).await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(gate);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("all connections closed"),
        _ = tokio::time::sleep(drain) => tracing::warn!("drain timeout reached; closing the remaining connections"),
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}
