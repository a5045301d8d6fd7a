//! A small, bounded HTTP/1.1 server: enough for a local page, its JSON API,
//! Prometheus metrics and the content gateway, and nothing more.
//!
//! Written by hand rather than with hyper: every request here is one
//! request per connection (`Connection: close`), the head is capped at
//! [`Limits::max_head`] bytes, a body is accepted only with a
//! `Content-Length` no larger than [`Limits::max_body`] (no chunked
//! uploads), the whole request must arrive within [`Limits::deadline`], and
//! connections served at once are capped by a semaphore. A request that
//! breaks a rule gets a 4xx answer and the connection is closed; nothing a
//! client sends can make the server panic or buffer without bound.

pub use canopy_common::proto::link::percent_decode;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Caps on what one listener accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request line plus headers.
    pub max_head: usize,
    /// Longest body (given by `Content-Length`).
    pub max_body: usize,
    /// Time allowed to receive the whole request.
    pub deadline: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8 * 1024,
            max_body: 64 * 1024,
            deadline: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// Headers kept per request at most.
const MAX_HEADERS: usize = 64;

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoding left to the handler.
    pub path: String,
    /// The text after `?`, if any (without the `?`).
    pub query: String,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Who connected.
    pub peer: SocketAddr,
}

impl Request {
    /// The first header called `name` (give it lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key)? == name).then(|| percent_decode(value))?
        })
    }
}

/// Why a request could not be read. Each maps to the status sent back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the client closed the connection")]
    Closed,
    #[error("request head over {0} bytes")]
    HeadTooLarge(usize),
    #[error("request body over {0} bytes")]
    BodyTooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("chunked request bodies are not accepted")]
    Chunked,
    #[error("the request did not arrive in time")]
    Timeout,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// The answer for this error, if the client is still there to read one.
    fn status(&self) -> Option<(u16, &'static str)> {
        match self {
            ReadError::Closed | ReadError::Io(_) => None,
            ReadError::HeadTooLarge(_) => Some((431, "Request Header Fields Too Large")),
            ReadError::BodyTooLarge(_) => Some((413, "Content Too Large")),
            ReadError::Malformed(_) => Some((400, "Bad Request")),
            ReadError::Chunked => Some((411, "Length Required")),
            ReadError::Timeout => Some((408, "Request Timeout")),
        }
    }
}

/// Reads one request from `stream` within the limits.
pub async fn read_request(
    stream: &mut TcpStream,
    peer: SocketAddr,
    limits: &Limits,
) -> Result<Request, ReadError> {
    tokio::time::timeout(limits.deadline, read_inner(stream, peer, limits))
        .await
        .map_err(|_| ReadError::Timeout)?
}

async fn read_inner(stream: &mut TcpStream, peer: SocketAddr, limits: &Limits) -> Result<Request, ReadError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > limits.max_head {
            return Err(ReadError::HeadTooLarge(limits.max_head));
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(ReadError::Closed);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    if head_end > limits.max_head {
        return Err(ReadError::HeadTooLarge(limits.max_head));
    }
    let head =
        std::str::from_utf8(&buffer[..head_end]).map_err(|_| ReadError::Malformed("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version), None) => (method, target, version),
        _ => return Err(ReadError::Malformed("bad request line")),
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Malformed("not HTTP/1.x"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ReadError::Malformed("bad method"));
    }
    if !target.starts_with('/') {
        return Err(ReadError::Malformed("the target must be a path"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(ReadError::Malformed("header without a colon"))?;
        if name.is_empty() || name.contains(' ') {
            return Err(ReadError::Malformed("bad header name"));
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ReadError::HeadTooLarge(limits.max_head));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
        peer,
    };
    if request
        .header("transfer-encoding")
        .is_some_and(|te| !te.eq_ignore_ascii_case("identity"))
    {
        return Err(ReadError::Chunked);
    }
    let length: usize = match request.header("content-length") {
        None => 0,
        Some(text) => text
            .parse()
            .map_err(|_| ReadError::Malformed("bad Content-Length"))?,
    };
    if length > limits.max_body {
        return Err(ReadError::BodyTooLarge(limits.max_body));
    }
    let mut body = buffer.split_off(head_end + 4);
    if body.len() > length {
        // Pipelined requests are not served: one request per connection.
        body.truncate(length);
    }
    while body.len() < length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(ReadError::Closed);
        }
        let wanted = (length - body.len()).min(read);
        body.extend_from_slice(&chunk[..wanted]);
    }
    request.body = body;
    Ok(request)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// A response with its whole body in memory.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, reason: &'static str, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            reason,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    /// `200 OK` with a JSON body.
    pub fn json(value: &serde_json::Value) -> Self {
        Self::json_status(200, "OK", value)
    }

    pub fn json_status(status: u16, reason: &'static str, value: &serde_json::Value) -> Self {
        Response::new(status, reason, "application/json", value.to_string())
    }

    /// An error as JSON: `{"error": message}`.
    pub fn error(status: u16, reason: &'static str, message: impl std::fmt::Display) -> Self {
        Self::json_status(
            status,
            reason,
            &serde_json::json!({ "error": message.to_string() }),
        )
    }

    pub fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        Response::new(status, reason, "text/plain; charset=utf-8", body.into())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the response (the body unless `head_only`) and closes the write side.
    pub async fn send(&self, stream: &mut TcpStream, head_only: bool) -> std::io::Result<()> {
        let mut head = status_line(self.status, self.reason);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            stream.write_all(&self.body).await?;
        }
        stream.shutdown().await
    }
}

/// `HTTP/1.1 STATUS REASON\r\n`.
pub fn status_line(status: u16, reason: &str) -> String {
    format!("HTTP/1.1 {status} {reason}\r\n")
}

/// What answers a listener's requests. The handler owns the stream, so it
/// can stream a long body (a file, server-sent events).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request, stream: TcpStream) -> impl Future<Output = ()> + Send;
}

/// Accepts connections on `listener` until the task is dropped, reading one
/// request from each within `limits` and passing it to `handler`.
pub async fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>, limits: Limits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            match read_request(&mut stream, peer, &limits).await {
                Ok(request) => handler.handle(request, stream).await,
                Err(error) => {
                    tracing::debug!(%peer, %error, "bad HTTP request");
                    if let Some((status, reason)) = error.status() {
                        let _ = Response::text(status, reason, format!("{error}\n"))
                            .send(&mut stream, false)
                            .await;
                    }
                }
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roundtrip(raw: &[u8], limits: Limits) -> Result<Request, ReadError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let raw = raw.to_vec();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let _ = stream.write_all(&raw).await;
            // Keep the connection open until the server has read.
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
        });
        let (mut stream, peer) = listener.accept().await.unwrap();
        let result = read_request(&mut stream, peer, &limits).await;
        drop(stream);
        let _ = client.await;
        result
    }

    #[tokio::test]
    async fn parses_a_request_with_a_body_and_query() {
        let request = roundtrip(
            b"POST /api/x?key=a%20b&n=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nbody",
            Limits::default(),
        )
        .await
        .unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/x");
        assert_eq!(request.param("key").as_deref(), Some("a b"));
        assert_eq!(request.param("n").as_deref(), Some("1"));
        assert_eq!(request.header("host"), Some("localhost"));
        assert_eq!(request.body, b"body");
    }

    #[tokio::test]
    async fn refuses_what_breaks_the_caps() {
        let limits = Limits {
            max_head: 256,
            max_body: 8,
            ..Limits::default()
        };
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(400));
        assert!(matches!(
            roundtrip(long.as_bytes(), limits).await,
            Err(ReadError::HeadTooLarge(_))
        ));
        assert!(matches!(
            roundtrip(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n", limits).await,
            Err(ReadError::BodyTooLarge(_))
        ));
        assert!(matches!(
            roundtrip(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", limits).await,
            Err(ReadError::Chunked)
        ));
        assert!(matches!(
            roundtrip(b"GET http://x/ HTTP/1.1\r\n\r\n", limits).await,
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            roundtrip(b"GET / HTTP/1.1\r\nno colon\r\n\r\n", limits).await,
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            roundtrip(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", limits).await,
            Err(ReadError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_slow_client_times_out() {
        let limits = Limits {
            deadline: Duration::from_millis(100),
            ..Limits::default()
        };
        assert!(matches!(
            roundtrip(b"GET / HTTP/1.1\r\n", limits).await,
            Err(ReadError::Timeout)
        ));
    }

    #[test]
    fn percent_decoding_rejects_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
