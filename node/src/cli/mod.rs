//! The `canopy` command line: argument definitions live in `main.rs`, what
//! each command does lives here, one file per command.

pub mod config;
pub mod get;
pub mod group;
pub mod probe;
pub mod run;
pub mod search;
pub mod status;

use std::net::ToSocketAddrs;

use canopy_common::proto::PeerAddr;

/// Parses `PEERID@HOST:PORT`, resolving HOST if it is a name.
pub fn parse_peer_addr(text: &str) -> Result<PeerAddr, String> {
    let (id, host_port) = PeerAddr::split(text).map_err(|e| e.to_string())?;
    if !host_port.contains(':') {
        return Err(format!("{host_port:?} has no port: write PEERID@HOST:PORT"));
    }
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host_port:?} resolves to no address"))?;
    Ok(PeerAddr::new(id, addr))
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
