//! The outbound HTTP client: HTTP/1.1 over TCP or rustls (ring), public web
//! PKI roots plus the on-premise CA of `webhooks.ca_file`, keep-alive
//! connections pooled per origin, and one deadline per attempt.
//!
//! A delivery is strictly one request at a time, so its rate is set by the
//! round trip. hyper's pooled client runs each connection in a task of its
//! own and spawns one more per request to watch for the connection going
//! idle; every answer then costs wake-ups across tasks and threads. Here the
//! task that sends also drives the connection: the answer is read in the
//! same poll that waits for it.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;

use crate::net::{Origin, Stream};

/// Idle connections older than this are closed rather than reused.
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Idle connections kept per origin; more are closed.
const IDLE_PER_ORIGIN: usize = 64;

type Connection = Pin<Box<http1::Connection<TokioIo<Stream>, Full<Bytes>>>>;

/// Shared by all delivery tasks; the pool is behind one short-held lock.
pub struct HttpClient {
    tls: TlsConnector,
    idle: Mutex<HashMap<Origin, Vec<Conn>>>,
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

/// One HTTP/1.1 connection: the handle that sends, and the driver that
/// reads and writes the socket, polled by whoever is sending.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Driver,
    idle_since: Instant,
}

/// The connection's state machine; `None` once the connection has ended.
/// Dropping it fails whatever was in flight, so a waiting sender wakes.
struct Driver(Option<Connection>);

impl Driver {
    /// Runs `work` while driving the connection, since the answer `work`
    /// waits for is read by the driver.
    async fn drive<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if let Some(conn) = &mut self.0
                && conn.as_mut().poll(cx).is_ready()
            {
                self.0 = None;
            }
            // The driver may just have read the answer `work` waits for (or
            // failed it by closing): take it now rather than on a wake-up.
            work.as_mut().poll(cx)
        })
        .await
    }
}

impl Conn {
    /// Whether the connection can take a request: the peer may have closed
    /// it while it sat idle, which only polling the driver finds out.
    async fn usable(&mut self) -> bool {
        if self.driver.0.is_none() {
            return false;
        }
        let ready = self.driver.drive(self.sender.ready()).await.is_ok();
        ready && self.driver.0.is_some()
    }
}

/// Why an exchange failed.
enum Failure {
    /// The connection closed before any answer came.
    NoAnswer(String),
    Failed(String),
}

impl HttpClient {
    /// A client that trusts the public web PKI and the roots of `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<HttpClient, String> {
        let tls = crate::net::connector(ca_file)?;
        Ok(HttpClient {
            tls,
            idle: Mutex::default(),
        })
    }

    /// Sends `req` (an absolute URL) and reads at most `keep` bytes of the
    /// answer, all within `timeout`, connecting included.
    pub async fn send(&self, req: Request<Full<Bytes>>, timeout: Duration, keep: usize) -> Outcome {
        let started = Instant::now();
        let failed = |error, timed_out| Outcome::Failed {
            error,
            timed_out,
            elapsed: started.elapsed(),
        };
        let (origin, req) = match prepare(req) {
            Ok(v) => v,
            Err(e) => return failed(e, false),
        };
        match tokio::time::timeout(timeout, self.exchange(origin, req, keep)).await {
            Ok(Ok((status, headers, body))) => Outcome::Response {
                status,
                headers,
                body,
                elapsed: started.elapsed(),
            },
            Ok(Err(error)) => failed(error, false),
            Err(_) => failed(format!("no answer within {}s", timeout.as_secs_f32()), true),
        }
    }

    async fn exchange(
        &self,
        origin: Origin,
        mut req: Request<Full<Bytes>>,
        keep: usize,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        if let Some(mut conn) = self.checkout(&origin).await {
            let spare = copy(&req);
            match request(&mut conn, req, keep).await {
                Ok(answer) => {
                    self.checkin(origin, conn);
                    return Ok(answer);
                }
                // A keep-alive connection may be closed by the peer just as a
                // request goes out on it. Like browsers, we send once more on
                // a new connection: a delivery carries `webhook-id` for the
                // receiver to dedupe on, and would be retried anyway.
                Err(Failure::NoAnswer(_)) => req = spare,
                Err(Failure::Failed(e)) => return Err(e),
            }
        }
        let mut conn = self.connect(&origin).await?;
        match request(&mut conn, req, keep).await {
            Ok(answer) => {
                self.checkin(origin, conn);
                Ok(answer)
            }
            Err(Failure::NoAnswer(e) | Failure::Failed(e)) => Err(e),
        }
    }

    /// An idle connection to `origin` that still works, if there is one.
    async fn checkout(&self, origin: &Origin) -> Option<Conn> {
        loop {
            let mut conn = {
                let mut idle = self.idle.lock().unwrap();
                let list = idle.get_mut(origin)?;
                let conn = list.pop();
                if list.is_empty() {
                    idle.remove(origin);
                }
                conn?
            };
            if conn.idle_since.elapsed() < IDLE_FOR && conn.usable().await {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, origin: Origin, mut conn: Conn) {
        if conn.driver.0.is_none() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap();
        // Drop what has idled too long everywhere, so a receiver that is
        // no longer used does not keep its sockets open.
        idle.retain(|_, list| {
            list.retain(|c| c.idle_since.elapsed() < IDLE_FOR);
            !list.is_empty()
        });
        let list = idle.entry(origin).or_default();
        if list.len() < IDLE_PER_ORIGIN {
            list.push(conn);
        }
    }

    async fn connect(&self, origin: &Origin) -> Result<Conn, String> {
        let stream = origin.connect(&self.tls).await?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("connecting to {}:{}: {}", origin.host, origin.port, chain(e)))?;
        let driver = Driver(Some(Box::pin(driver)));
        Ok(Conn {
            sender,
            driver,
            idle_since: Instant::now(),
        })
    }
}

/// The origin to connect to, and the request in the form HTTP/1.1 sends:
/// the path as target and the authority as `Host`. Credentials in the URL
/// (`http://user:pw@host/`) go as HTTP Basic authentication, as every HTTP
/// client sends them, unless the request has its own `Authorization`.
fn prepare(mut req: Request<Full<Bytes>>) -> Result<(Origin, Request<Full<Bytes>>), String> {
    let origin = Origin::of(req.uri())?;
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host.to_string()),
        None => (None, authority.clone()),
    };
    if let Some(userinfo) = userinfo
        && !req.headers().contains_key(hyper::header::AUTHORIZATION)
    {
        req.headers_mut()
            .insert(hyper::header::AUTHORIZATION, basic_auth(userinfo)?);
    }
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = target.parse().map_err(|e| format!("{target}: {e}"))?;
    let host = host.parse().map_err(|e| format!("{host}: {e}"))?;
    req.headers_mut().insert(hyper::header::HOST, host);
    Ok((origin, req))
}

/// `Authorization: Basic` for the userinfo of a URL (`user:password`,
/// each percent-decoded); marked sensitive, so it is never logged.
fn basic_auth(userinfo: &str) -> Result<hyper::header::HeaderValue, String> {
    use base64::Engine;
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let credentials = format!("{}:{}", decode(user), decode(password));
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = hyper::header::HeaderValue::try_from(format!("Basic {encoded}"))
        .map_err(|e| format!("the URL's credentials cannot be sent: {e}"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The same request again; the body is shared, not copied.
fn copy(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut again = Request::new(req.body().clone());
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.headers_mut() = req.headers().clone();
    again
}

/// One request and its answer on `conn`, the body cut at four times `keep`
/// so a large answer is shortened, not refused.
async fn request(
    conn: &mut Conn,
    req: Request<Full<Bytes>>,
    keep: usize,
) -> Result<(StatusCode, HeaderMap, Bytes), Failure> {
    let sent = conn.sender.send_request(req);
    let resp = match conn.driver.drive(sent).await {
        Ok(resp) => resp,
        Err(e) if closed_early(&e) => return Err(Failure::NoAnswer(chain(e))),
        Err(e) => return Err(Failure::Failed(chain(e))),
    };
    let (parts, body) = resp.into_parts();
    let body = conn.driver.drive(Limited::new(body, keep.max(1) * 4).collect()).await;
    let body = match body {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            // Unread bytes are left on the socket: it cannot be reused.
            conn.driver.0 = None;
            Bytes::new()
        }
    };
    Ok((parts.status, parts.headers, body.slice(..body.len().min(keep))))
}

/// Whether the connection went away before an answer started: closed,
/// reset, or the request never left.
fn closed_early(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    use std::io::ErrorKind::*;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            )
        {
            return true;
        }
        source = s.source();
    }
    e.is_canceled() || e.is_incomplete_message()
}

/// hyper's errors say little at the top ("connection error"); the causes say
/// what happened ("Connection reset by peer").
fn chain(e: hyper::Error) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(url: &str) -> (Origin, Request<Full<Bytes>>) {
        prepare(Request::post(url).body(Full::new(Bytes::new())).unwrap()).unwrap()
    }

    #[test]
    fn requests_go_out_in_origin_form_with_a_host_header() {
        let (origin, req) = prepared("https://user:pw@erp.example.com:8443/hooks/in?x=1");
        assert_eq!(
            origin,
            Origin {
                tls: true,
                host: "erp.example.com".into(),
                port: 8443
            }
        );
        assert_eq!(req.uri().to_string(), "/hooks/in?x=1");
        assert_eq!(req.headers()["host"], "erp.example.com:8443");
        // The URL's credentials, as Basic authentication ("user:pw").
        assert_eq!(req.headers()["authorization"], "Basic dXNlcjpwdw==");
        assert!(req.headers()["authorization"].is_sensitive());
        // Percent-encoded characters are decoded: "erp:p@ss:w".
        let (_, req) = prepared("http://erp:p%40ss%3Aw@h/");
        assert_eq!(req.headers()["authorization"], "Basic ZXJwOnBAc3M6dw==");
        // A request's own Authorization wins.
        let mut own = Request::post("http://u:p@h/").body(Full::new(Bytes::new())).unwrap();
        own.headers_mut().insert("authorization", "Bearer t".parse().unwrap());
        assert_eq!(prepare(own).unwrap().1.headers()["authorization"], "Bearer t");
        let (_, req) = prepared("http://h/");
        assert!(!req.headers().contains_key("authorization"));

        let (origin, req) = prepared("http://[::1]/");
        assert_eq!((origin.host.as_str(), origin.port, origin.tls), ("::1", 80, false));
        assert_eq!(req.headers()["host"], "[::1]");
        assert!(prepare(Request::post("ftp://x/").body(Full::new(Bytes::new())).unwrap()).is_err());
    }
}
