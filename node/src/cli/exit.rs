//! How `canopy` ends: its exit codes (`canopy get --help` lists them) and
//! errors rendered for a person. The library's errors are typed; which
//! number each becomes is the command line's business.

use std::process::ExitCode;

use crate::download::{DownloadError, SourceFailure};
use crate::searcher::SearchError;

pub const OK: u8 = 0;
pub const OTHER: u8 = 1;
pub const USAGE: u8 = 2;
pub const NOT_FOUND: u8 = 3;
pub const NETWORK: u8 = 4;
pub const VERIFICATION: u8 = 5;
pub const LOCAL_IO: u8 = 6;
/// Ctrl-C or SIGTERM, as shells report a SIGINT.
pub const INTERRUPTED: u8 = 130;

/// The supernodes asked know no source for the file.
#[derive(Debug, thiserror::Error)]
#[error("no source shares {0}: the supernodes asked know of none")]
pub struct NoSources(pub canopy_common::proto::ContentHash);

/// No source was given and no supernode is known to ask: a usage error.
#[derive(Debug, thiserror::Error)]
#[error("no sources for {0}: pass --source PEERID@HOST:PORT, or --bootstrap a supernode to ask")]
pub struct NothingToAsk(pub canopy_common::proto::ContentHash);

/// `canopy search` found nothing: exit 1, like grep, with no message.
#[derive(Debug, thiserror::Error)]
#[error("nothing found")]
pub struct NothingFound;

/// The exit code for a failed download.
pub fn of_download(error: &DownloadError) -> u8 {
    match error {
        DownloadError::NoSources { failures, .. } => {
            let all =
                |f: fn(&SourceFailure) -> bool| !failures.is_empty() && failures.iter().all(|(_, x)| f(x));
            if all(|f| matches!(f, SourceFailure::NotFound)) {
                NOT_FOUND
            } else if all(|f| matches!(f, SourceFailure::Banned(_) | SourceFailure::Protocol(_))) {
                VERIFICATION
            } else {
                NETWORK
            }
        }
        DownloadError::Output { .. } | DownloadError::DiskCheck { .. } => LOCAL_IO,
        DownloadError::Paused => INTERRUPTED,
    }
}

/// The exit code for any error a command returns.
pub fn of(error: &anyhow::Error) -> u8 {
    if let Some(error) = error.downcast_ref::<DownloadError>() {
        of_download(error)
    } else if let Some(error) = error.downcast_ref::<SearchError>() {
        match error {
            // Nothing to ask: the command line must say where (as for get).
            SearchError::NoSupernodeKnown => USAGE,
            SearchError::NoneAnswered(_) => NETWORK,
        }
    } else if error.downcast_ref::<super::get::OutputExists>().is_some() {
        LOCAL_IO
    } else if error.downcast_ref::<super::get::Interrupted>().is_some() {
        INTERRUPTED
    } else if error.downcast_ref::<NoSources>().is_some() {
        NOT_FOUND
    } else if error.downcast_ref::<NothingToAsk>().is_some() {
        USAGE
    } else {
        OTHER
    }
}

/// Reports `error` on stderr (with a hint when a rerun resumes) and returns
/// the process's exit code. [`NothingFound`] is reported by its command.
pub fn report(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<NothingFound>().is_some() {
        return ExitCode::from(OTHER);
    }
    eprintln!("canopy: {}", render(error));
    let resumable = error
        .downcast_ref::<DownloadError>()
        .and_then(DownloadError::kept_part)
        .is_some();
    if resumable {
        eprintln!("canopy: run the same command again to resume");
    }
    ExitCode::from(of(error))
}

/// The error and its causes on one line, skipping causes whose text the
/// message already includes (typed errors often quote their source).
pub fn render(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_common::proto::{ContentHash, PeerAddr, PeerId};

    fn failed(failures: Vec<SourceFailure>) -> DownloadError {
        let peer = PeerAddr::new(PeerId([1; 32]), "127.0.0.1:1".parse().unwrap());
        DownloadError::NoSources {
            hash: ContentHash::of(b"x"),
            part: None,
            failures: failures.into_iter().map(|failure| (peer, failure)).collect(),
        }
    }

    /// The README's table, for the failures a process test cannot easily
    /// stage (every source lying needs a malicious peer).
    #[test]
    fn download_failures_map_to_the_documented_codes() {
        assert_eq!(of_download(&failed(vec![SourceFailure::NotFound])), NOT_FOUND);
        assert_eq!(
            of_download(&failed(vec![
                SourceFailure::Banned("block 3 does not match".into()),
                SourceFailure::Protocol("a frame too long".into()),
            ])),
            VERIFICATION
        );
        assert_eq!(
            of_download(&failed(vec![
                SourceFailure::Banned("block 3 does not match".into()),
                SourceFailure::Unreachable("timed out".into()),
            ])),
            NETWORK,
            "not every source lied: the network is to blame"
        );
        assert_eq!(of_download(&failed(vec![])), NETWORK);
        assert_eq!(of_download(&DownloadError::Paused), INTERRUPTED);
        assert_eq!(INTERRUPTED, 130, "128 + SIGINT, as shells report it");
    }
}
