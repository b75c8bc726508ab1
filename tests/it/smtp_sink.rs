//! A small SMTP receiver for the tests: speaks enough of the protocol for
//! lettre, records every message, can refuse authentication, and speaks
//! STARTTLS or implicit TLS with a certificate the test made.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    /// Every header as sent (name, decoded value), in order.
    pub headers: Vec<(String, String)>,
    /// The message as it came (dot-unstuffed).
    pub raw: Vec<u8>,
}

pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

/// How the sink speaks TLS.
#[derive(Clone)]
pub enum Tls {
    None,
    /// Offers STARTTLS; takes mail without it too.
    Starttls(Arc<rustls::ServerConfig>),
    /// Offers STARTTLS and refuses mail before it (530).
    RequireStarttls(Arc<rustls::ServerConfig>),
    /// TLS from the first byte (port 465 style).
    Implicit(Arc<rustls::ServerConfig>),
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::start_on(0, false)
    }

    /// Listens on `port` (0: any); `refuse_auth` answers AUTH with 535.
    pub fn start_on(port: u16, refuse_auth: bool) -> SmtpSink {
        SmtpSink::start_with(port, refuse_auth, Tls::None)
    }

    pub fn start_tls(tls: Tls) -> SmtpSink {
        SmtpSink::start_with(0, false, tls)
    }

    fn start_with(port: u16, refuse_auth: bool, tls: Tls) -> SmtpSink {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the SMTP sink");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let mails: Arc<Mutex<Vec<Received>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (mails.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (m, tls) = (m.clone(), tls.clone());
                        std::thread::spawn(move || {
                            let _ = session(stream, &m, refuse_auth, &tls);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SmtpSink { port, mails, stop }
    }

    pub fn mails(&self) -> Vec<Received> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits until `n` mails arrived (or panics after `within`).
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} mail(s), got {}: {mails:?}",
                mails.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

fn reply(lines: &mut BufReader<Box<dyn Io>>, text: &[u8]) -> std::io::Result<()> {
    let out = lines.get_mut();
    out.write_all(text)?;
    out.flush()
}

fn tls_over(tcp: &TcpStream, config: &Arc<rustls::ServerConfig>) -> std::io::Result<Box<dyn Io>> {
    let conn = rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
    Ok(Box::new(rustls::StreamOwned::new(conn, tcp.try_clone()?)))
}

fn session(stream: TcpStream, mails: &Mutex<Vec<Received>>, refuse_auth: bool, tls: &Tls) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (offer, require, mut secure) = match tls {
        Tls::None => (None, false, false),
        Tls::Starttls(c) => (Some(c), false, false),
        Tls::RequireStarttls(c) => (Some(c), true, false),
        Tls::Implicit(_) => (None, false, true),
    };
    let first: Box<dyn Io> = match tls {
        Tls::Implicit(c) => tls_over(&stream, c)?,
        _ => Box::new(stream.try_clone()?),
    };
    let mut lines = BufReader::new(first);
    reply(&mut lines, b"220 sink ESMTP ready\r\n")?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            let starttls = if offer.is_some() && !secure {
                "250-STARTTLS\r\n"
            } else {
                ""
            };
            let ehlo = format!("250-sink\r\n{starttls}250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n");
            reply(&mut lines, ehlo.as_bytes())?;
        } else if upper == "STARTTLS" && offer.is_some() && !secure {
            reply(&mut lines, b"220 2.0.0 ready to start TLS\r\n")?;
            lines = BufReader::new(tls_over(&stream, offer.unwrap())?);
            secure = true;
        } else if require && !secure && (upper.starts_with("MAIL FROM:") || upper.starts_with("AUTH")) {
            reply(&mut lines, b"530 5.7.0 Must issue a STARTTLS command first\r\n")?;
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") || upper.starts_with("RSET") {
            reply(&mut lines, b"250 OK\r\n")?;
        } else if upper.starts_with("AUTH") {
            if refuse_auth {
                reply(&mut lines, b"535 5.7.8 Authentication credentials invalid\r\n")?;
            } else {
                reply(&mut lines, b"235 2.7.0 Authentication successful\r\n")?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&cmd[10..]);
            to.clear();
            reply(&mut lines, b"250 OK\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&cmd[8..]));
            reply(&mut lines, b"250 OK\r\n")?;
        } else if upper == "DATA" {
            reply(&mut lines, b"354 go ahead\r\n")?;
            let mut data = Vec::new();
            loop {
                line.clear();
                if lines.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.extend_from_slice(l.as_bytes());
            }
            let parsed = mailparse::parse_mail(&data).expect("a parseable message");
            let subject = parsed
                .headers
                .iter()
                .find(|h| h.get_key().eq_ignore_ascii_case("subject"))
                .map(|h| h.get_value());
            let body = parsed.get_body().unwrap_or_default();
            let headers = parsed.headers.iter().map(|h| (h.get_key(), h.get_value())).collect();
            mails.lock().unwrap().push(Received {
                from: from.clone(),
                to: to.clone(),
                subject: subject.unwrap_or_default(),
                body,
                headers,
                raw: data.clone(),
            });
            reply(&mut lines, b"250 OK queued\r\n")?;
        } else if upper.starts_with("QUIT") {
            reply(&mut lines, b"221 bye\r\n")?;
            return Ok(());
        } else {
            reply(&mut lines, b"500 unknown command\r\n")?;
        }
    }
}

fn address(s: &str) -> String {
    let s = s.trim();
    let inner = s.split('>').next().unwrap_or(s);
    inner.trim_start_matches('<').to_string()
}
