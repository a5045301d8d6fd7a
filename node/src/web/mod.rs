//! The node's HTTP side, on one small hand-written HTTP/1.1 server
//! ([`http`]) with three listeners:
//!
//! * the **desktop app** ([`api`]): the page ([`assets`]), its JSON API and
//!   live updates ([`events`]), on loopback, guarded by an API key ([`auth`]);
//! * **metrics** ([`control`]): Prometheus text for monitoring and `canopy status`;
//! * the **gateway** ([`gateway`]): shared content by hash over plain HTTP,
//!   off unless configured.
//!
//! [`Services`] attaches them to a running node.

pub mod api;
pub mod assets;
pub mod auth;
pub mod control;
pub mod events;
pub mod gateway;
pub mod http;
pub mod links;
pub mod open;
pub mod play;
pub mod services;
pub mod settings;

pub use services::{Services, ServicesConfig, ServicesError};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the desktop app is served.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// Where to listen (loopback unless remote access is configured).
    pub listen: SocketAddr,
    /// If `listen`'s port is taken, take any free port instead.
    pub fallback: bool,
    /// Required (HTTP Basic) from requests that do not name a loopback host.
    pub password: Option<String>,
    /// Why the node plays its role, as the election put it.
    pub role_reason: String,
    /// Where the app saves the settings it changes.
    pub settings_file: PathBuf,
    /// The settings in force, shown on the settings page.
    pub settings: settings::EditableSettings,
}

/// Where the app's address is written, inside the data folder.
pub const UI_ADDR_FILE: &str = "ui.addr";

/// Why the app could not be served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the desktop app would be reachable from other machines on {0}: set a password \
         (--ui-password) or listen on 127.0.0.1"
    )]
    RemoteWithoutPassword(SocketAddr),
    #[error("cannot create the API key in {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A listener's task; stops when dropped (and removes `record`, if any).
pub struct Served {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    record: Option<PathBuf>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(record) = &self.record {
            let _ = std::fs::remove_file(record);
        }
    }
}

/// Binds `addr`; with `fallback`, any free port on the same host if it is taken.
async fn bind(addr: SocketAddr, fallback: bool) -> Result<TcpListener, WebError> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        Err(error) if fallback && addr.port() != 0 => {
            tracing::info!(%addr, %error, "port taken; using a free one");
            TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                .await
                .map_err(|source| WebError::Bind { addr, source })
        }
        Err(source) => Err(WebError::Bind { addr, source }),
    }
}

/// Serves the desktop app for `app`; records its address in `data_dir`.
pub async fn serve_app(config: &UiConfig, app: Arc<api::App>, data_dir: &Path) -> Result<Served, WebError> {
    if !config.listen.ip().is_loopback() && config.password.is_none() {
        return Err(WebError::RemoteWithoutPassword(config.listen));
    }
    let listener = bind(config.listen, config.fallback).await?;
    let addr = listener.local_addr().map_err(|source| WebError::Bind {
        addr: config.listen,
        source,
    })?;
    let record = data_dir.join(UI_ADDR_FILE);
    if let Err(error) = std::fs::write(&record, format!("{addr}\n")) {
        tracing::warn!(file = %record.display(), %error, "cannot record the app's address");
    }
    let publisher = api::publish_loop(app.clone());
    let server = http::serve(listener, Arc::new(app), http::Limits::default());
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = publisher => {}
            _ = server => {}
        }
    });
    Ok(Served {
        addr,
        task,
        record: Some(record),
    })
}

/// Serves the gateway on `addr`.
pub async fn serve_gateway(addr: SocketAddr, gateway: gateway::Gateway) -> Result<Served, WebError> {
    let listener = bind(addr, false).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| WebError::Bind { addr, source })?;
    let limits = http::Limits {
        max_body: 0,
        ..http::Limits::default()
    };
    let task = tokio::spawn(http::serve(listener, Arc::new(gateway), limits));
    Ok(Served {
        addr: bound,
        task,
        record: None,
    })
}
