//! `canopy get`: fetch one file from every source at once, like `aria2c`.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::net::SocketAddr;

use anyhow::Context;
use canopy_common::proto::{ContentHash, Link, PeerAddr};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::args::{parse_peer_addr, DataDir, NetworkArgs, TransferArgs};
use super::exit::{self, NoSources, NothingToAsk};
use crate::download::{DownloadOptions, DownloadReport, Progress, SourceSpec, SourceState};
use crate::searcher::Searcher;
use crate::units::{human_bytes, human_rate, Backoff};
use crate::{Node, NodeConfig};

/// With --wait, the first pause before asking again for sources; it
/// doubles up to the second (a minute: a source that appears is found
/// within about a minute, and a supernode is asked at most once a minute).
const WAIT_FIRST_RETRY: Duration = Duration::from_secs(2);
const WAIT_MAX_RETRY: Duration = Duration::from_secs(60);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// A progress bar on a terminal, or only the summary when piped.
    Human,
    /// One JSON object per line on stdout.
    Json,
    /// Nothing but errors.
    Quiet,
}

/// `canopy get`'s arguments.
#[derive(Args)]
pub struct GetArgs {
    /// What to fetch: a content hash (64 hex characters, as b3sum
    /// prints) or a canopy: link (its sources are used too).
    #[arg(value_parser = parse_target)]
    target: Link,
    /// A peer to fetch from, as PEERID@HOST:PORT; repeat for several.
    /// The connection is refused unless the peer proves it holds
    /// PEERID's key. More sources are learned from these as they
    /// are found.
    #[arg(long = "source", visible_alias = "from", value_name = "PEERID@HOST:PORT", value_parser = parse_peer_addr)]
    sources: Vec<PeerAddr>,
    /// Where to write the file (default: the link's name, else the hash,
    /// in the current folder). Data goes to PATH.part until the whole
    /// file is verified.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Sources connected at once.
    #[arg(long, default_value_t = DownloadOptions::default().max_sources)]
    max_sources: usize,
    /// When the network knows no source yet, keep asking this long
    /// (90s, 15m, 2h) before giving up with exit code 3; by default
    /// canopy gives up at once, as aria2c does.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    wait: Option<Duration>,
    #[command(flatten)]
    network: NetworkArgs,
    /// UDP address to use (default: any port). Other downloaders may
    /// fetch verified blocks from it while the download runs.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
    /// Print progress and the result as JSON lines on stdout.
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Replace PATH if it exists and is a different file (otherwise
    /// canopy refuses, to never destroy a file by accident).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    upload: TransferArgs,
    #[command(flatten)]
    data: DataDir,
}

pub const HELP: &str = "\
Resuming: data goes to PATH.part and the verified blocks are recorded in
PATH.part.state. Run the same command again after an interruption (even
kill -9) and it continues where it stopped; blocks already on disk are
verified again before they are trusted.

Sources: those given (--source, a link's) start at once; the supernodes
(--bootstrap, then those remembered) are asked meanwhile, and the sources
they know join the running download. A supernode that does not answer
within a second costs no more: the next is asked too. A source that served
data and then broke off (a lost link, a frozen peer) is tried again up to 5
times, after 2 s and then twice as long each time.

Stalls: after 10 s without a verified byte the progress bar says
'stalled' and what the download waits for (sources busy, connecting,
without the missing blocks). A download that stops moving is re-planned
within seconds (its books checked, every source asked again); it never
waits silently.

Exit codes:
  0  the file was fetched and verified
  1  other error
  2  bad command line, or no --source given and no supernode known to ask
  3  no source shares that hash (the supernodes asked know of none)
  4  network: no supernode could be asked, sources unreachable, not who
     PEERID says, or gone before the end
     (partial data is kept; run again to resume)
  5  every source sent data that failed verification and was banned
     (nothing unverified was written)
  6  local: the output could not be written (permissions, disk full), or
     PATH exists and is another file (see --force)
  130 interrupted (Ctrl-C or SIGTERM); run the same command to resume

A file already complete at PATH (an earlier run finished) is verified and
reported done with nothing fetched, exit 0, sources or not.

--json prints one object per line on stdout:
  {\"event\":\"progress\", hash, size (null until proved), verified, resumed,
   received (bytes, the block layer and duplicates included),
   in_flight_blocks, rate, sources: [{peer, state, rate, bytes, failure?,
   path?}],
   stalled?: {seconds, reason}} every 0.5 s; stalled appears once no
   verified byte has arrived for 10 s, with what the download waits for
   (a source state is queued, connecting, active, idle, busy, done or failed;
   its path, once connected: direct, pushed (it dialed us), punched (through
   a hole our packets opened in our router) or relayed (its supernode
   forwards the encrypted datagrams));
  {\"event\":\"banned\", peer, reason} when a source sends a bad block;
  {\"event\":\"waiting\", hash, retry_in_seconds} with --wait, while no
   source is known yet;
  last, {\"event\":\"done\", hash, path, size, seconds, first_block_seconds
   (null if nothing was fetched), rate, resumed, received,
   sources[, already_complete]} or
  {\"event\":\"error\", exit_code, message}, exit_code being the process's.";

/// A bare hash or a `canopy:` link.
fn parse_target(target: &str) -> Result<Link, String> {
    if target.starts_with(canopy_common::proto::link::SCHEME) {
        return target
            .parse()
            .map_err(|e: canopy_common::proto::LinkError| e.to_string());
    }
    let hash: ContentHash = target
        .parse()
        .map_err(|e: canopy_common::proto::IdError| e.to_string())?;
    Ok(Link::new(hash))
}

pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let json = args.json;
    let result = get(args).await;
    if let (true, Err(error)) = (json, &result) {
        // Scripts read one JSON object per line; the last says why and how it ends.
        println!(
            "{}",
            json!({"event": "error", "exit_code": exit::of(error), "message": exit::render(error)})
        );
    }
    result
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let mode = match (args.json, args.quiet) {
        (true, _) => Output::Json,
        (_, true) => Output::Quiet,
        _ => Output::Human,
    };
    // Settled before asking anyone: the same command after it finished
    // has nothing to fetch, even with every source gone (as aria2c reports
    // it complete), and another file in the way fails at once. Only a name
    // learned from the network below can change where the file goes.
    let planned = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(default_name(&args.target)));
    let mut output = match settle_output(&planned, &args.target, args.force)? {
        Settled::Fetch(output) => output,
        Settled::Complete(complete) => {
            complete.report(mode);
            return Ok(());
        }
    };
    let network = args.network.resolve(args.data.resolve()?)?;
    let mut link = args.target;
    link.sources.extend(args.sources);
    // Both families (IPv4 alone where the machine has no IPv6).
    let listen = args.listen.unwrap_or(SocketAddr::from(([0u16; 8], 0)));
    // One node for the whole command: it asks the supernodes, fetches, and
    // serves its verified blocks to other downloaders meanwhile. It joins
    // no supernode: they need not log and count a leaf per command.
    let mut config = NodeConfig::new(network.data_dir.clone(), listen);
    config.leaf_sessions = 0;
    config.upload = args.upload.limits();
    config.network = network.network.clone();
    let node = Node::start(config).await.context("cannot start the local node")?;
    // Where the supernodes see us, while the search runs: with two
    // answers, a download knows whether its router gives every peer a new
    // port, and plans its punches accordingly.
    tokio::spawn({
        let (endpoint, context) = (node.endpoint().clone(), node.context().clone());
        let supernodes = network.supernodes.clone();
        async move { crate::reach::learn(&endpoint, &context, &supernodes).await }
    });
    let asker = (!network.supernodes.is_empty())
        .then(|| Searcher::one_shot(node.endpoint().clone(), network.supernodes.clone()));
    let mut options = DownloadOptions {
        max_sources: args.max_sources,
        // With --wait, a download whose sources all went also waits that
        // long for new ones (found by the search below).
        wait_for_sources: args.wait.unwrap_or_default(),
        ..DownloadOptions::default()
    };
    let mut sources: Vec<SourceSpec> = link.sources.iter().copied().map(SourceSpec::from).collect();
    // Sources in hand and the file's place known: start at once; what the
    // network knows joins the running download as it is found, so a
    // supernode that is gone never delays the first byte. Otherwise (nothing
    // to start with, or the file's name to learn) ask first.
    let start_at_once = !sources.is_empty() && (args.output.is_some() || link.name.is_some());
    let download = match &asker {
        Some(_) if start_at_once => node.download_from(link.hash, &output, sources, options),
        asker => {
            if let Some(asker) = asker {
                let give_up_at = args.wait.map(|wait| tokio::time::Instant::now() + wait);
                let mut pauses = Backoff::new(WAIT_FIRST_RETRY, WAIT_MAX_RETRY);
                loop {
                    match asker.sources_of(link.hash).await {
                        Ok(found) => {
                            if let Some(answered) = found.answered {
                                crate::hostcache::remember(&network.data_dir, answered);
                                options.report_to = options.report_to.or(Some(answered));
                            }
                            sources.extend(found.sources);
                            if link.name.is_none() {
                                link.name = found.name;
                            }
                        }
                        // With nothing else to go on, that is the answer.
                        Err(error) if sources.is_empty() && give_up_at.is_none() => {
                            hang_up(node).await;
                            return Err(error.into());
                        }
                        Err(error) => tracing::warn!("cannot ask for sources: {error}"),
                    }
                    // --wait: no source yet, so ask again later, less and
                    // less often, until the time is up.
                    let Some(give_up_at) = give_up_at.filter(|_| sources.is_empty()) else {
                        break;
                    };
                    let now = tokio::time::Instant::now();
                    if now >= give_up_at {
                        break;
                    }
                    let pause = pauses.take().min(give_up_at - now);
                    if mode == Output::Json {
                        println!(
                            "{}",
                            json!({"event": "waiting", "hash": link.hash.to_hex(), "retry_in_seconds": pause.as_secs_f64()})
                        );
                    } else if mode == Output::Human {
                        eprintln!(
                            "no source yet; asking again in {:.0} s",
                            pause.as_secs_f64().ceil()
                        );
                    }
                    tokio::time::sleep(pause).await;
                }
            }
            if sources.is_empty() {
                hang_up(node).await;
                if network.supernodes.is_empty() {
                    return Err(NothingToAsk(link.hash).into());
                }
                return Err(NoSources(link.hash).into());
            }
            if args.output.is_none() {
                let named = PathBuf::from(default_name(&link));
                if named != planned {
                    // The network named the file: settle that place instead.
                    output = match settle_output(&named, &link, args.force)? {
                        Settled::Fetch(output) => output,
                        Settled::Complete(complete) => {
                            complete.report(mode);
                            hang_up(node).await;
                            return Ok(());
                        }
                    };
                }
            }
            node.download_from(link.hash, &output, sources, options)
        }
    };
    // Either way, the network is asked again while the download is short
    // of sources or stalled (at once if it was not asked yet).
    let finding = asker.map(|asker| {
        let (hash, watch, data_dir) = (link.hash, download.watch(), network.data_dir.clone());
        tokio::spawn(async move {
            asker
                .keep_finding(hash, watch, !start_at_once, Some(data_dir))
                .await
        })
    });
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
    if let Some(finding) = finding {
        finding.abort();
    }
    // The download's own connections were closed when it completed, before
    // the final check and the report.
    hang_up(node).await;
    result.map(|_| ())
}

/// Shuts the command's node down, waiting long enough for the close frames
/// to leave (peers that miss them time out within seconds anyway): a script
/// waits for our exit, not for them.
async fn hang_up(node: Node) {
    let _ = tokio::time::timeout(Duration::from_millis(10), node.shutdown()).await;
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
enum Settled {
    Fetch(PathBuf),
    Complete(Complete),
}

/// The file already at the output path, verified by hashing it again: an
/// earlier run finished.
struct Complete {
    hash: canopy_common::proto::ContentHash,
    path: PathBuf,
    size: u64,
}

impl Complete {
    /// Says so as a finished download would, with nothing fetched.
    fn report(&self, mode: Output) {
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
fn default_name(link: &Link) -> String {
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
fn settle_output(output: &Path, link: &Link, force: bool) -> anyhow::Result<Settled> {
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
                    "{bar:30.cyan/blue} {percent:>3}% {bytes}/{total_bytes} {prefix} {msg}",
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
            if !source.banned || !self.reported_failures.insert(source.peer.clone()) {
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
                        // The rate and the ETA from one figure, the sources'
                        // (the bar's own estimate could say 0 B/s beside
                        // an ETA computed from theirs).
                        let rate = progress.rate();
                        bar.set_prefix(format!(
                            "{} {}",
                            human_rate(rate as u64),
                            eta(size.saturating_sub(progress.verified), rate)
                        ));
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
                    "first_block_seconds": report.first_block.map(|d| d.as_secs_f64()),
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
    /// It goes on a line of its own: the bar leaves the cursor at its end
    /// (and Ctrl-C's echoed `^C` may sit there too), where the message
    /// would otherwise be glued on.
    fn failed(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
            if self.terminal && !bar.is_hidden() {
                eprintln!();
            }
        }
    }
}

/// "ETA 1m05s" at the sources' current rate; "ETA --" while nothing flows
/// (a bar's own estimate would say "0s" at 0 B/s).
fn eta(left: u64, rate: f64) -> String {
    if rate < 1.0 {
        return "ETA --".into();
    }
    let seconds = (left as f64 / rate).ceil() as u64;
    match seconds {
        0..=59 => format!("ETA {seconds}s"),
        60..=3599 => format!("ETA {}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("ETA {}h{:02}m", seconds / 3600, seconds % 3600 / 60),
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

#[cfg(test)]
mod tests {
    use super::eta;

    #[test]
    fn the_eta_is_a_dash_until_bytes_flow() {
        assert_eq!(eta(1 << 20, 0.0), "ETA --");
        assert_eq!(eta(1 << 20, 0.4), "ETA --");
        assert_eq!(eta(1000, 100.0), "ETA 10s");
        assert_eq!(eta(65_000, 1000.0), "ETA 1m05s");
        assert_eq!(eta(7_200_000, 1000.0), "ETA 2h00m");
    }
}
