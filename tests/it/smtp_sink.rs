//! A small SMTP receiver for the tests: speaks enough of the protocol for
//! lettre, records every message, and can refuse authentication.

use std::io::{BufRead, BufReader, Write};
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
}

pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::start_on(0, false)
    }

    /// Listens on `port` (0: any); `refuse_auth` answers AUTH with 535.
    pub fn start_on(port: u16, refuse_auth: bool) -> SmtpSink {
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
                        let m = m.clone();
                        std::thread::spawn(move || {
                            let _ = session(stream, &m, refuse_auth);
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

fn session(stream: TcpStream, mails: &Mutex<Vec<Received>>, refuse_auth: bool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    out.write_all(b"220 sink ESMTP ready\r\n")?;
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
            out.write_all(b"250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")?;
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") || upper.starts_with("RSET") {
            out.write_all(b"250 OK\r\n")?;
        } else if upper.starts_with("AUTH") {
            if refuse_auth {
                out.write_all(b"535 5.7.8 Authentication credentials invalid\r\n")?;
            } else {
                out.write_all(b"235 2.7.0 Authentication successful\r\n")?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&cmd[10..]);
            to.clear();
            out.write_all(b"250 OK\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&cmd[8..]));
            out.write_all(b"250 OK\r\n")?;
        } else if upper == "DATA" {
            out.write_all(b"354 go ahead\r\n")?;
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
            mails.lock().unwrap().push(Received {
                from: from.clone(),
                to: to.clone(),
                subject: subject.unwrap_or_default(),
                body,
            });
            out.write_all(b"250 OK queued\r\n")?;
        } else if upper.starts_with("QUIT") {
            out.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            out.write_all(b"500 unknown command\r\n")?;
        }
    }
}

fn address(s: &str) -> String {
    let s = s.trim();
    let inner = s.split('>').next().unwrap_or(s);
    inner.trim_start_matches('<').to_string()
}
