//! A local HTTP server standing in for a notification webhook (generic, Slack, Teams): it
//! records every request and answers with the statuses the test scripts, or never answers.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: String,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

pub struct WebhookServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    requests: Arc<Mutex<Vec<Request>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

impl WebhookServer {
    /// Answers 200 unless [`WebhookServer::answer`] scripted otherwise.
    pub fn start() -> Self {
        Self::spawn(false)
    }

    /// Reads each request, records it, and never answers (the connection stays open).
    pub fn hanging() -> Self {
        Self::spawn(true)
    }

    fn spawn(hang: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook server");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(VecDeque::new()));
        let (r, s) = (requests.clone(), statuses.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                r.lock().unwrap().push(request);
                if hang {
                    held.push(stream);
                    continue;
                }
                let code = s.lock().unwrap().pop_front().unwrap_or(200);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        });
        Self {
            base,
            requests,
            statuses,
        }
    }

    /// The statuses the next requests get, in order (then 200).
    pub fn answer(&self, codes: &[u16]) {
        self.statuses.lock().unwrap().extend(codes);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests to `path`, in the order they came.
    pub fn to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until `n` requests came to `path`, or panics after `limit`.
    #[track_caller]
    pub fn wait_for(&self, path: &str, n: usize, limit: Duration) -> Vec<Request> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.to(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} requests to {path}, got {}: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut length = 0;
    let mut content_type = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().ok()?,
                "content-type" => content_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
