//! The `canopy` command line. `main.rs` parses it; each command lives here,
//! one file per command, and only parses and prints: the work is done by
//! the library (model: mini-redis's `bin/cli.rs` over `client.rs`, ripgrep's
//! `main.rs` over `flags/`). Argument groups several commands share are in
//! [`args`]; exit codes in [`exit`].

pub mod args;
pub mod config;
pub mod demo;
pub mod exit;
pub mod get;
pub mod group;
pub mod open;
pub mod probe;
pub mod run;
pub mod search;
pub mod status;
pub mod trust;
pub mod vote;

pub use args::parse_peer_addr;

/// Waits for Ctrl-C or SIGTERM; on Windows for Ctrl-C, Ctrl-Break, the
/// console window closing, logoff or shutdown (Windows allows a few
/// seconds after those: enough for a supernode to hand its leaves on).
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
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_close, ctrl_logoff, ctrl_shutdown};
        let (Ok(mut brk), Ok(mut close), Ok(mut logoff), Ok(mut shutdown)) =
            (ctrl_break(), ctrl_close(), ctrl_logoff(), ctrl_shutdown())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = brk.recv() => {}
            _ = close.recv() => {}
            _ = logoff.recv() => {}
            _ = shutdown.recv() => {}
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
