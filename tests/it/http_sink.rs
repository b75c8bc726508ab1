//! A small HTTP/1.1 receiver for webhook tests: records every request on
//! keep-alive connections and answers as the test says (or hangs).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// How the sink answers.
#[derive(Clone, Debug)]
pub enum Answer {
    Status(u16),
    /// Status and a Retry-After header.
    RetryAfter(u16, u64),
    /// Answer with the status, then close the connection without saying
    /// so, as receivers that drop idle keep-alive connections do.
    Close(u16),
    /// Answer with the status and `connection: close`, then close, as
    /// servers that take one request per connection do.
    CloseSaying(u16),
    /// Never answer (until the sink is dropped).
    Hang,
    /// Status and this JSON body.
    Body(u16, String),
}

pub struct HttpSink {
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Answer>>,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
}

impl HttpSink {
    pub fn start(answer: Answer) -> HttpSink {
        HttpSink::start_on(0, answer)
    }

    pub fn start_on(port: u16, answer: Answer) -> HttpSink {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the HTTP sink");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answer = Arc::new(Mutex::new(answer));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (g, a, s, c) = (got.clone(), answer.clone(), stop.clone(), connections.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        c.fetch_add(1, Ordering::Relaxed);
                        let (g, a, s) = (g.clone(), a.clone(), s.clone());
                        std::thread::spawn(move || {
                            let _ = connection(stream, &g, &a, &s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        HttpSink {
            port,
            got,
            answer,
            stop,
            connections,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (or panics after `within`).
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "expected {n} request(s), got {}", got.len());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn connection(
    stream: TcpStream,
    got: &Mutex<Vec<Received>>,
    answer: &Mutex<Answer>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        got.lock().unwrap().push(Received {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
        });
        let a = answer.lock().unwrap().clone();
        let (status, extra) = match &a {
            Answer::Status(s) | Answer::Close(s) | Answer::Body(s, _) => (*s, String::new()),
            Answer::CloseSaying(s) => (*s, "connection: close\r\n".to_string()),
            Answer::RetryAfter(s, secs) => (*s, format!("retry-after: {secs}\r\n")),
            Answer::Hang => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(());
            }
        };
        let body = match &a {
            Answer::Body(_, b) => b.clone(),
            _ => format!("{{\"status\":{status}}}"),
        };
        // One write: the pieces of a `write!` on the bare stream would go as
        // small segments, and Nagle with delayed ACKs stalls each answer 40 ms.
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
            body.len()
        );
        out.write_all(reply.as_bytes())?;
        if let Answer::Close(_) | Answer::CloseSaying(_) = a {
            return Ok(());
        }
    }
}
