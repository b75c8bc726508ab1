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
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::task::{Context, Poll, Wake, Waker};
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
/// A connection used this recently is taken as it is when its handle says
/// it can send: within a run, requests follow each other back to back.
const FRESH: Duration = Duration::from_millis(100);
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

/// The connection's state machine, and the waker it is polled with.
struct Driver {
    /// `None` once the connection has ended. Dropping it fails whatever was
    /// in flight, so a waiting sender wakes.
    conn: Option<Connection>,
    quiet: Arc<Quiet>,
    waker: Waker,
}

/// The waker a connection is polled with. The task that drives the
/// connection also sends on it and reads its answers, and each of those
/// wakes the connection's waker: with the task's own waker, tokio would
/// schedule the task again, and wake an idle worker thread to take it, two
/// or three times per request, for nothing. This one passes on only the
/// wake-ups that come while the task is not polling (the socket became
/// readable); those that come while it polls, it notes, and the task polls
/// again then and there.
#[derive(Default)]
struct Quiet {
    task: Mutex<Option<Waker>>,
    polling: AtomicBool,
    woken: AtomicBool,
}

impl Wake for Quiet {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Noted first, then passed on unless the task polls: a wake-up
        // that comes just as the task stops polling is then seen by the
        // task (`settle`) or passed on here, never lost.
        self.woken.store(true, SeqCst);
        if !self.polling.load(SeqCst)
            && let Some(task) = &*self.task.lock().unwrap()
        {
            task.wake_by_ref();
        }
    }
}

impl Quiet {
    fn polls(&self, task: &Waker) {
        let mut current = self.task.lock().unwrap();
        if !current.as_ref().is_some_and(|w| w.will_wake(task)) {
            *current = Some(task.clone());
        }
        drop(current);
        self.polling.store(true, SeqCst);
    }

    /// Stops polling; whether a wake-up came meanwhile.
    fn settle(&self) -> bool {
        self.polling.store(false, SeqCst);
        self.woken.swap(false, SeqCst)
    }
}

/// Rounds of polling again for wake-ups that came while polling, before
/// the task goes through the scheduler after all.
const REPOLLS: usize = 8;

impl Driver {
    fn new(conn: Connection) -> Driver {
        let quiet = Arc::new(Quiet::default());
        Driver {
            conn: Some(conn),
            waker: Waker::from(quiet.clone()),
            quiet,
        }
    }

    /// Runs `work` while driving the connection, since the answer `work`
    /// waits for is read by the driver.
    async fn drive<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            for _ in 0..REPOLLS {
                self.quiet.polls(cx.waker());
                let mut quiet = Context::from_waker(&self.waker);
                let mut done = work.as_mut().poll(&mut quiet);
                if done.is_pending() {
                    if let Some(conn) = &mut self.conn
                        && conn.as_mut().poll(&mut quiet).is_ready()
                    {
                        self.conn = None;
                    }
                    // The driver may just have read the answer `work` waits
                    // for (or failed it by closing): take it now.
                    done = work.as_mut().poll(&mut quiet);
                }
                let woken = self.quiet.settle();
                if done.is_ready() || !woken {
                    return done;
                }
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }

    /// Hands a request to the connection (`send`) and polls the connection
    /// once, so that the request goes out now; its answer is read later by
    /// [`Driver::drive`], which polls the connection first.
    async fn start<T>(&mut self, send: impl FnOnce() -> T) -> T {
        let mut send = Some(send);
        std::future::poll_fn(|cx| {
            self.quiet.polls(cx.waker());
            let sent = send.take().expect("polled once")();
            if let Some(conn) = &mut self.conn
                && conn.as_mut().poll(&mut Context::from_waker(&self.waker)).is_ready()
            {
                self.conn = None;
            }
            self.quiet.settle();
            Poll::Ready(sent)
        })
        .await
    }
}

impl Conn {
    /// Whether the connection can take a request: the peer may have closed
    /// it while it sat idle, which only polling the driver finds out.
    async fn usable(&mut self) -> bool {
        if self.driver.conn.is_none() {
            return false;
        }
        // Just used, and wanting the next request: no need to ask the socket.
        if self.idle_since.elapsed() < FRESH && self.sender.is_ready() {
            return true;
        }
        let ready = self.driver.drive(self.sender.ready()).await.is_ok();
        ready && self.driver.conn.is_some()
    }
}

/// Requests to one origin, one after the other on one connection: a
/// delivery run's. The connection goes back to the pool when it ends.
pub struct Session<'a> {
    client: &'a HttpClient,
    origin: Origin,
    /// The connection of the last exchange, when it can take another.
    conn: Option<Conn>,
}

impl Session<'_> {
    /// Sends `req` (addressed by [`Target::address`]) and reads at most
    /// `keep` bytes of the answer, all within `timeout`, connecting
    /// included. `meanwhile` runs once the request is on its way, while the
    /// answer is awaited: a delivery run builds its next request there, off
    /// the round trip. It runs once, whatever happens to the request.
    pub async fn exchange<T>(
        &mut self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
        keep: usize,
        meanwhile: impl FnOnce() -> T,
    ) -> (Outcome, T) {
        let started = Instant::now();
        let mut meanwhile = Some(meanwhile);
        let mut done = None;
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let exchanged = tokio::time::timeout_at(deadline, async {
            let mut req = req;
            if let Some(mut conn) = self.reusable().await {
                let spare = copy(&req);
                let sent = conn.driver.start(|| conn.sender.send_request(req)).await;
                done = meanwhile.take().map(|f| f());
                match answer(&mut conn, sent, keep).await {
                    Ok(answer) => {
                        self.keep(conn);
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
            let mut conn = self.client.connect(&self.origin).await?;
            let sent = conn.driver.start(|| conn.sender.send_request(req)).await;
            if done.is_none() {
                done = meanwhile.take().map(|f| f());
            }
            match answer(&mut conn, sent, keep).await {
                Ok(answer) => {
                    self.keep(conn);
                    Ok(answer)
                }
                Err(Failure::NoAnswer(e) | Failure::Failed(e)) => Err(e),
            }
        })
        .await;
        let outcome = match exchanged {
            Ok(Ok((status, headers, body))) => Outcome::Response {
                status,
                headers,
                body,
                elapsed: started.elapsed(),
            },
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
        };
        let done = done.or_else(|| meanwhile.take().map(|f| f()));
        (outcome, done.expect("meanwhile runs once"))
    }

    fn keep(&mut self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        self.conn = Some(conn);
    }

    /// The session's connection if it can take a request, else an idle one
    /// of the pool that can.
    async fn reusable(&mut self) -> Option<Conn> {
        if let Some(mut conn) = self.conn.take()
            && conn.usable().await
        {
            return Some(conn);
        }
        self.client.checkout(&self.origin).await
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.client.checkin(self.origin.clone(), conn);
        }
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
        let mut req = req;
        match Target::of(req.uri()) {
            Ok(target) => {
                target.address(&mut req);
                self.session(&target).exchange(req, timeout, keep, || ()).await.0
            }
            Err(error) => Outcome::Failed {
                error,
                timed_out: false,
                elapsed: Duration::ZERO,
            },
        }
    }

    /// A session with `target`'s origin: its requests go out one after the
    /// other on one connection, taken from the pool at the first and given
    /// back when the session ends.
    pub fn session(&self, target: &Target) -> Session<'_> {
        Session {
            client: self,
            origin: target.origin.clone(),
            conn: None,
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
        if conn.driver.conn.is_none() {
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
        let driver = Driver::new(Box::pin(driver));
        Ok(Conn {
            sender,
            driver,
            idle_since: Instant::now(),
        })
    }
}

/// Where the requests to one URL go, and what HTTP/1.1 sends of the URL:
/// the path as target and the authority as `Host`. Credentials in the URL
/// (`http://user:pw@host/`) go as HTTP Basic authentication, as every HTTP
/// client sends them, unless the request has its own `Authorization`.
/// Worked out once for all the requests of a delivery run.
pub struct Target {
    origin: Origin,
    path: hyper::Uri,
    host: hyper::header::HeaderValue,
    authorization: Option<hyper::header::HeaderValue>,
}

impl Target {
    pub fn of(uri: &hyper::Uri) -> Result<Target, String> {
        let origin = Origin::of(uri)?;
        let authority = uri.authority().map_or("", |a| a.as_str());
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Ok(Target {
            origin,
            path: path.parse().map_err(|e| format!("{path}: {e}"))?,
            host: host.parse().map_err(|e| format!("{host}: {e}"))?,
            authorization: userinfo.map(basic_auth).transpose()?,
        })
    }

    /// Puts `req` in the form HTTP/1.1 sends to this target.
    pub fn address(&self, req: &mut Request<Full<Bytes>>) {
        *req.uri_mut() = self.path.clone();
        let headers = req.headers_mut();
        headers.insert(hyper::header::HOST, self.host.clone());
        if let Some(authorization) = &self.authorization
            && !headers.contains_key(hyper::header::AUTHORIZATION)
        {
            headers.insert(hyper::header::AUTHORIZATION, authorization.clone());
        }
    }
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

/// The answer to the request in flight on `conn`, the body cut at four
/// times `keep` so a large answer is shortened, not refused.
async fn answer(
    conn: &mut Conn,
    sent: impl Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
    keep: usize,
) -> Result<(StatusCode, HeaderMap, Bytes), Failure> {
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
            conn.driver.conn = None;
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
    use std::sync::atomic::AtomicUsize;

    /// A task's waker that counts its wake-ups.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn the_connection_waker_passes_on_only_what_comes_while_the_task_is_away() {
        let task = Arc::new(Task::default());
        let task_waker = Waker::from(task.clone());
        let quiet = Arc::new(Quiet::default());
        let waker = Waker::from(quiet.clone());

        // While the task polls (sends, reads an answer), a wake-up is noted
        // for the task to poll again, and the scheduler hears nothing.
        quiet.polls(&task_waker);
        waker.wake_by_ref();
        let held = waker.clone();
        held.wake();
        assert_eq!(task.0.load(SeqCst), 0);
        assert!(quiet.settle(), "the task learns it must poll again");
        assert!(!quiet.settle(), "once");

        // Between polls (the socket became readable): the task is woken.
        waker.wake_by_ref();
        assert_eq!(task.0.load(SeqCst), 1);
        // The note it leaves is cleared by the next poll's settling.
        quiet.polls(&task_waker);
        quiet.settle();

        // A task polled with another waker (moved to another worker) is woken
        // through that one.
        let other = Arc::new(Task::default());
        quiet.polls(&Waker::from(other.clone()));
        quiet.settle();
        waker.wake_by_ref();
        assert_eq!((task.0.load(SeqCst), other.0.load(SeqCst)), (1, 1));
    }

    fn prepare(mut req: Request<Full<Bytes>>) -> Result<(Origin, Request<Full<Bytes>>), String> {
        let target = Target::of(req.uri())?;
        target.address(&mut req);
        Ok((target.origin, req))
    }

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
