//! Live updates for the page, as server-sent events on `/api/events`.
//!
//! Everything that changes is published here once, as a named event with a
//! JSON payload, and copied to every connected page. Pages are capped
//! ([`MAX_CLIENTS`]); a page that reads too slowly misses events and is
//! told to `resync` (fetch the lists again) rather than holding memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, Semaphore};

use super::http::Response;

/// Pages connected at once.
pub const MAX_CLIENTS: usize = 8;
/// Events buffered for a slow page before it must resync.
const BACKLOG: usize = 256;
/// A comment line this often keeps proxies and the browser from timing out.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A page that takes longer than this to take one event is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One event: its name and its JSON text.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub data: String,
}

/// The event bus.
#[derive(Debug, Clone)]
pub struct Events {
    sender: broadcast::Sender<Arc<Event>>,
    clients: Arc<Semaphore>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            sender: broadcast::channel(BACKLOG).0,
            clients: Arc::new(Semaphore::new(MAX_CLIENTS)),
        }
    }
}

impl Events {
    /// Sends `data` as event `name` to every page connected now.
    pub fn publish(&self, name: &'static str, data: &serde_json::Value) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::new(Event {
                name,
                data: data.to_string(),
            }));
        }
    }

    /// Whether any page listens.
    pub fn has_clients(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Streams events to one page until it goes away; `initial` events are
    /// sent first so the page starts with the whole picture.
    pub async fn stream(&self, mut stream: TcpStream, initial: Vec<Event>) {
        let Ok(_permit) = self.clients.clone().try_acquire_owned() else {
            let _ = Response::error(503, "Service Unavailable", "too many pages are connected")
                .with_header("Retry-After", "5")
                .send(&mut stream, false)
                .await;
            return;
        };
        let mut receiver = self.sender.subscribe();
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                    X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\nretry: 2000\n\n";
        if write(&mut stream, head).await.is_err() {
            return;
        }
        for event in initial {
            if write(&mut stream, &frame(&event)).await.is_err() {
                return;
            }
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            let text = tokio::select! {
                received = receiver.recv() => match received {
                    Ok(event) => frame(&event),
                    Err(broadcast::error::RecvError::Lagged(_)) => "event: resync\ndata: {}\n\n".to_string(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = heartbeat.tick() => ": ping\n\n".to_string(),
            };
            if write(&mut stream, &text).await.is_err() {
                return;
            }
        }
    }
}

/// `event: NAME` and one `data:` line (JSON text has no raw newlines).
fn frame(event: &Event) -> String {
    format!("event: {}\ndata: {}\n\n", event.name, event.data)
}

async fn write(stream: &mut TcpStream, text: &str) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(text.as_bytes()))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}
