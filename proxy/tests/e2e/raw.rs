//! Raw sockets for what HTTP clients hide: trickled heads, pipelining, half-closes, and
//! an upstream that answers from a script.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub fn address(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// A POST of `{}` to `path` with the test client key.
pub fn post(address: &str, path: &str, extra_headers: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\n{extra_headers}\r\n{{}}",
        crate::harness::CLIENT_KEY
    )
}

/// A chat completion POST of `body` (JSON text) with the test client key.
pub fn chat_request(address: &str, body: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        crate::harness::CLIENT_KEY,
        body.len()
    )
}

/// Reads until the peer closes or `limit` passes; returns what arrived and whether the
/// peer closed.
pub async fn read_until_closed(socket: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
        }
    }
}

/// Reads until `needle` has arrived (or `limit` passes); returns everything read.
pub async fn read_until(socket: &mut TcpStream, needle: &str, limit: Duration) -> String {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buffer = [0_u8; 16 * 1024];
    while !String::from_utf8_lossy(&received).contains(needle) {
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// What the scripted upstream does with one request.
#[derive(Clone)]
pub enum Reply {
    /// Writes these bytes and keeps the connection for the next request.
    KeepAlive(&'static str),
    /// Writes these bytes, then closes.
    Close(&'static str),
    /// Reads the request head only, then resets the connection (a backend that closes
    /// while the request body is still coming).
    ResetAfterHead,
}

/// An upstream that answers each request from a script and records what it received.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    /// Every request head it read, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedUpstream {
    /// Answers request `i` (counted over all connections) with `script[i]`; requests past
    /// the script get the last entry.
    pub async fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                tokio::spawn(serve(socket, seen.clone(), script.clone()));
            }
        });
        Self { addr, requests, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut socket: TcpStream, seen: Arc<Mutex<Vec<String>>>, script: Vec<Reply>) {
    let mut pending = Vec::new();
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        // One request: the head, then a Content-Length body.
        let head_end = loop {
            if let Some(end) = find(&pending, b"\r\n\r\n") {
                break end + 4;
            }
            match socket.read(&mut buffer).await {
                Ok(n) if n > 0 => pending.extend_from_slice(&buffer[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
        if matches!(script[seen.lock().unwrap().len().min(script.len() - 1)], Reply::ResetAfterHead) {
            seen.lock().unwrap().push(format!("(reset after head) {head}"));
            // Linger 0 resets at once; it blocks nothing, as nothing is left to send.
            #[expect(deprecated, reason = "tokio's set_linger is the plain SO_LINGER this test wants")]
            let _ = socket.set_linger(Some(Duration::ZERO));
            return;
        }
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while pending.len() < head_end + length {
            match socket.read(&mut buffer).await {
                Ok(n) if n > 0 => pending.extend_from_slice(&buffer[..n]),
                _ => return,
            }
        }
        pending.drain(..head_end + length);
        let index = {
            let mut seen = seen.lock().unwrap();
            seen.push(head);
            seen.len() - 1
        };
        let reply = script[index.min(script.len() - 1)].clone();
        match reply {
            Reply::KeepAlive(bytes) => {
                if socket.write_all(bytes.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Close(bytes) => {
                let _ = socket.write_all(bytes.as_bytes()).await;
                return;
            }
            Reply::ResetAfterHead => unreachable!("handled before the body"),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
