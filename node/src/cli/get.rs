//! `canopy get`: fetch one file from every source at once, like `aria2c`.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use canopy_common::proto::search::RelayedSource;
use canopy_common::proto::Link;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::download::{DownloadOptions, DownloadReport, Progress, SourceSpec, SourceState};
use crate::units::human_bytes;
use crate::{Node, NodeConfig};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A progress bar on a terminal, or only the summary when piped.
    Human,
    /// One JSON object per line on stdout.
    Json,
    /// Nothing but errors.
    Quiet,
}

pub struct GetArgs {
    pub link: Link,
    /// Replace an existing output file.
    pub force: bool,
    /// Firewalled sources, reached by push through their supernodes.
    pub relayed: Vec<RelayedSource>,
    pub output: PathBuf,
    pub node: NodeConfig,
    pub options: DownloadOptions,
    pub mode: Output,
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let GetArgs {
        link,
        force,
        relayed,
        output,
        node,
        options,
        mode,
    } = args;
    let output = match settle_output(&output, &link, force)? {
        Settled::Fetch(output) => output,
        Settled::Complete(complete) => {
            complete.report(mode);
            return Ok(());
        }
    };
    let node = Node::start(node).await.context("cannot start the local node")?;
    let mut sources: Vec<SourceSpec> = link.sources.iter().copied().map(SourceSpec::from).collect();
    sources.extend(
        relayed
            .iter()
            .map(|source| SourceSpec::relayed(source.leaf, source.via)),
    );
    let download = node.download_from(link.hash, &output, sources, options);
    let mut reporter = Reporter::new(mode);
    let mut ticker = tokio::time::interval(reporter.interval());
    let interrupted = super::shutdown_signal();
    tokio::pin!(interrupted);
    // `finished` is cancel-safe, so the progress ticks can interleave with it.
    let result: anyhow::Result<DownloadReport> = loop {
        tokio::select! {
            result = download.finished() => break result.map_err(anyhow::Error::from),
            _ = ticker.tick() => reporter.update(&download.progress()),
            _ = &mut interrupted => {
                download.abort();
                break Err(Interrupted(crate::download::part_path(&output)).into());
            }
        }
    };
    // One last look, so events of the final moments (a ban) are reported.
    reporter.update(&download.progress());
    // Report first: the file is in place, and the user should not wait for
    // peers to hear our goodbye.
    match &result {
        Ok(report) => reporter.done(report),
        Err(_) => reporter.failed(),
    }
    drop(download);
    // Long enough for the close frames to leave (peers that miss them time
    // out within seconds anyway); a script waits for our exit, not for them.
    // The download's own connections were closed when it completed, before
    // the final check and the report.
    let _ = tokio::time::timeout(Duration::from_millis(10), node.shutdown()).await;
    result.map(|_| ())
}

/// Ctrl-C or SIGTERM during a download.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; verified data is kept in {}, run the same command again to resume", .0.display())]
pub struct Interrupted(pub PathBuf);

/// The file must not already be in the way.
#[derive(Debug, thiserror::Error)]
#[error("{} already exists and is not this file; pass --force to replace it, or -o another path", .0.display())]
pub struct OutputExists(pub PathBuf);

/// Where a download goes, or that it is already there.
pub enum Settled {
    Fetch(PathBuf),
    Complete(Complete),
}

/// The file already at the output path, verified by hashing it again: an
/// earlier run finished.
pub struct Complete {
    hash: canopy_common::proto::ContentHash,
    path: PathBuf,
    size: u64,
}

impl Complete {
    /// Says so as a finished download would, with nothing fetched.
    pub fn report(&self, mode: Output) {
        match mode {
            Output::Json => println!(
                "{}",
                json!({
                    "event": "done",
                    "hash": self.hash.to_hex(),
                    "path": self.path,
                    "size": self.size,
                    "seconds": 0.0,
                    "rate": 0.0,
                    "resumed": self.size,
                    "received": 0,
                    "sources": [],
                    "already_complete": true,
                })
            ),
            Output::Human => println!(
                "{}  {}  {} already complete (verified on disk, nothing fetched)",
                self.hash,
                self.path.display(),
                human_bytes(self.size)
            ),
            Output::Quiet => {}
        }
    }
}

/// The name a download of `link` gets when no path says otherwise: the
/// link's name, else the hash.
pub fn default_name(link: &Link) -> String {
    link.file_name().unwrap_or_else(|| link.hash.to_hex())
}

/// Where `link` would be saved given `output` (a file, or a folder to put
/// it in).
fn output_path(output: &Path, link: &Link) -> PathBuf {
    if output.is_dir() {
        output.join(default_name(link))
    } else {
        output.to_path_buf()
    }
}

/// The file `link` names, if it is already at `path` (hashed to be sure).
fn already_complete(path: PathBuf, link: &Link) -> Option<Complete> {
    let size = std::fs::metadata(&path).ok().filter(|meta| meta.is_file())?.len();
    let hashes = crate::share::hash_file(&path, size).ok()?;
    (hashes.root() == link.hash).then_some(Complete {
        hash: link.hash,
        path,
        size,
    })
}

/// Where the file goes: into `output` if it is a folder; never over an
/// existing different file unless `force`; nowhere if it is already there.
pub fn settle_output(output: &Path, link: &Link, force: bool) -> anyhow::Result<Settled> {
    let path = output_path(output, link);
    if path.exists() && !force {
        return match already_complete(path.clone(), link) {
            Some(complete) => Ok(Settled::Complete(complete)),
            None => Err(OutputExists(path).into()),
        };
    }
    Ok(Settled::Fetch(path))
}

struct Reporter {
    mode: Output,
    terminal: bool,
    bar: Option<ProgressBar>,
    reported_failures: HashSet<String>,
    /// A stall was reported on its own line (no bar to show it on).
    stall_reported: bool,
}

impl Reporter {
    fn new(mode: Output) -> Self {
        Reporter {
            mode,
            terminal: std::io::stderr().is_terminal(),
            bar: None,
            reported_failures: HashSet::new(),
            stall_reported: false,
        }
    }

    /// The bar, made once the size is known and starting from what is
    /// already on disk, so resumed bytes do not count as speed.
    fn bar(&mut self, size: u64, verified: u64) -> &ProgressBar {
        self.bar.get_or_insert_with(|| {
            // Hidden until the rate estimator has taken `verified` as its
            // starting point: a bar built at that position would count it
            // all as the first moment's speed (GiB/s on the first frame).
            let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::hidden());
            bar.set_position(verified);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {percent:>3}% {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("█▌ "),
            );
            bar.reset_eta();
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar
        })
    }

    fn interval(&self) -> Duration {
        match self.mode {
            Output::Json => Duration::from_millis(500),
            _ => Duration::from_millis(200),
        }
    }

    fn update(&mut self, progress: &Progress) {
        for source in &progress.sources {
            let Some(failure) = &source.failure else {
                continue;
            };
            if !failure.starts_with("banned") || !self.reported_failures.insert(source.peer.clone()) {
                continue;
            }
            match self.mode {
                Output::Json => println!(
                    "{}",
                    json!({"event": "banned", "peer": source.peer, "reason": failure})
                ),
                Output::Human => self.say(&format!("canopy: {} {failure}", source.peer)),
                Output::Quiet => {}
            }
        }
        match self.mode {
            Output::Json => {
                let mut line = serde_json::to_value(progress).expect("progress serializes");
                line["event"] = json!("progress");
                line["rate"] = json!(progress.rate());
                println!("{line}");
            }
            Output::Human => {
                let message = match &progress.stalled {
                    Some(stall) => format!("stalled {} s: {}", stall.seconds, stall.reason),
                    None => sources_summary(progress),
                };
                match (self.terminal, progress.size) {
                    (true, Some(size)) => {
                        let bar = self.bar(size, progress.verified);
                        bar.set_position(progress.verified);
                        bar.set_message(message);
                    }
                    // No bar to show it on (piped, or the size is not known
                    // yet): a stall gets a line of its own, once per spell.
                    _ if progress.stalled.is_some() && !self.stall_reported => {
                        self.stall_reported = true;
                        self.say(&format!("canopy: {message}"));
                    }
                    _ => {}
                }
                if progress.stalled.is_none() {
                    self.stall_reported = false;
                }
            }
            Output::Quiet => {}
        }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn done(&mut self, report: &DownloadReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        match self.mode {
            Output::Json => println!(
                "{}",
                json!({
                    "event": "done",
                    "hash": report.hash.to_hex(),
                    "path": report.path,
                    "size": report.size,
                    "seconds": report.elapsed.as_secs_f64(),
                    "rate": report.bytes_per_second(),
                    "resumed": report.resumed_bytes,
                    "received": report.received_bytes,
                    "sources": report.sources,
                })
            ),
            Output::Human => {
                let contributing = report.sources.iter().filter(|s| s.bytes > 0).count();
                let resumed = if report.resumed_bytes > 0 {
                    format!(", {} resumed", human_bytes(report.resumed_bytes))
                } else {
                    String::new()
                };
                println!(
                    "{}  {}  {} in {:.2?} ({}/s from {contributing} source{}{resumed})",
                    report.hash,
                    report.path.display(),
                    human_bytes(report.size),
                    report.elapsed,
                    human_bytes(report.bytes_per_second() as u64),
                    if contributing == 1 { "" } else { "s" },
                );
            }
            Output::Quiet => {}
        }
    }

    /// The bar stops where it is; the error itself is reported by the
    /// caller (as a JSON line with `--json`), with the process's exit code.
    fn failed(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

fn sources_summary(progress: &Progress) -> String {
    let active: Vec<_> = progress
        .sources
        .iter()
        .filter(|s| matches!(s.state, SourceState::Active | SourceState::Idle))
        .collect();
    let top: Vec<String> = active
        .iter()
        .take(3)
        .map(|s| {
            format!(
                "{} {}/s",
                &s.peer[..8.min(s.peer.len())],
                human_bytes(s.rate as u64)
            )
        })
        .collect();
    format!(
        "{} source{} [{}]",
        active.len(),
        if active.len() == 1 { "" } else { "s" },
        top.join(", ")
    )
}
