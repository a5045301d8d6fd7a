//! `canopy`: share, search and fetch files on the Canopy network.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use canopy_common::net::NodeKey;
use canopy_common::proto::network::{Invite, NetworkError, NetworkName};
use canopy_common::proto::{ContentHash, FileKind, Link, PeerAddr, Query};
use canopy_node::cli::config::{FileSettings, LogFormat, RunArgs, RunSettings};
use canopy_node::cli::{self, get::GetArgs, parse_peer_addr};
use canopy_node::download::{exit, DownloadError, DownloadOptions};
use canopy_node::serve::TransferLimits;
use canopy_node::units::{human_bytes, parse_bytes};
use canopy_node::{demo, NodeConfig};

/// The supernodes asked know no source for the file.
#[derive(Debug, thiserror::Error)]
#[error("no source shares {0}: the supernodes asked know of none")]
struct NoSources(ContentHash);

/// `canopy search` found nothing: exit 1, like grep.
#[derive(Debug, thiserror::Error)]
#[error("nothing found")]
struct NothingFound;
use clap::{Args, Parser, Subcommand};

/// Canopy: a peer-to-peer file-sharing network.
///
/// Files are named by their BLAKE3 content hash (what `b3sum` prints) and
/// every block is verified as it arrives. Peers are named by their public
/// key and addressed as PEERID@HOST:PORT.
///
/// Try `canopy demo` first: it runs a small network on loopback.
#[derive(Parser)]
#[command(name = "canopy", version, propagate_version = true)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides this.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole network on loopback: three supernodes in an overlay,
    /// twelve leaves publishing sample files, a search that reaches all of
    /// them, and a verified download from every source at once.
    Demo {
        /// Size of the big sample file, in bytes (K, M, G suffixes allowed).
        #[arg(long, default_value = "32M", value_parser = parse_bytes)]
        size: u64,
    },
    /// Print this node's peer id (creating its key on first use).
    Id {
        #[command(flatten)]
        data: DataDir,
    },
    /// Run a node that shares folders with the network until stopped
    /// (Ctrl-C or SIGTERM; a supernode hands its leaves on first).
    /// Settings come from flags, CANOPY_* variables and a config file.
    Run(Box<RunArgs>),
    /// Private groups: share with people you choose, apart from the public
    /// network. One machine runs `canopy group new NAME` and sends the
    /// invite it prints; each friend runs `canopy group join INVITE`; then
    /// everyone runs (or restarts) `canopy run`, and files put in the
    /// group's shared folder are found by group members only.
    #[command(subcommand, after_help = GROUP_HELP)]
    Group(GroupCommand),
    /// Show what the node running with this data folder is doing: role,
    /// leaves, neighbours, index, queries, traffic, memory.
    Status {
        /// Print every metric as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Measure this machine and its links as the election does, and say
    /// which role it would take and why.
    Probe {
        #[command(flatten)]
        network: NetworkArgs,
        /// Count our upload as capped at this rate (as `run` would).
        #[arg(long, value_name = "RATE", value_parser = parse_bytes)]
        max_upload_rate: Option<u64>,
        #[command(flatten)]
        election: ElectionArgs,
        #[command(flatten)]
        data: DataDir,
    },
    /// Search the network: ask a supernode, print a table (or JSON lines)
    /// of files with their sources and a canopy: link for `canopy get`.
    #[command(after_help = SEARCH_HELP)]
    Search {
        /// Words to find in file names and tags (all must match; case and
        /// accents do not matter).
        #[arg(required = true)]
        words: Vec<String>,
        /// Only files of this type: audio, video, image, document, archive,
        /// software or other.
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<FileKind>,
        /// Only files of at least this size (K, M, G suffixes allowed).
        #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
        min_size: Option<u64>,
        /// Only files of at most this size.
        #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
        max_size: Option<u64>,
        /// Most results to show (1 to 200).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=200))]
        limit: u16,
        /// Supernode hops the search may travel (the supernode caps it; by
        /// default it picks).
        #[arg(long)]
        ttl: Option<u8>,
        /// One JSON object per result on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        network: NetworkArgs,
        #[command(flatten)]
        data: DataDir,
    },
    /// Fetch a file by content hash or canopy: link from every source at
    /// once, verifying every block. Interrupted downloads resume.
    #[command(after_help = GET_HELP)]
    Get(GetCommand),
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group with a fresh secret key, this node as its first
    /// supernode, and print the invite to send to the members.
    New {
        /// The group's name: 1 to 32 of a-z, 0-9 and '-'.
        #[arg(value_parser = parse_group_name)]
        name: NetworkName,
        #[command(flatten)]
        place: GroupPlace,
        #[command(flatten)]
        data: DataDir,
    },
    /// Print again the invite to a group this node is in, to send to
    /// another member.
    Invite {
        /// The group's name, as `canopy group list` shows it.
        #[arg(value_parser = parse_group_name)]
        name: NetworkName,
        /// The IP address other members reach this machine at [default:
        /// the address of the route to the internet].
        #[arg(long, value_name = "IP")]
        host: Option<std::net::IpAddr>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Join a group from the invite a member sent (a canopy-group: text).
    /// `canopy run` then runs it beside the public network.
    Join {
        /// The invite, in quotes: canopy-group:NAME?key=…&peer=…
        #[arg(value_parser = parse_invite)]
        invite: Invite,
        #[command(flatten)]
        place: GroupPlace,
        #[command(flatten)]
        data: DataDir,
    },
    /// Give a group a fresh key, to cut off whoever held the old one, and
    /// print the new invite for the members who stay. Running nodes switch
    /// within seconds; until a member has joined with the new invite, it is
    /// refused.
    Rekey {
        /// The group's name, as `canopy group list` shows it.
        #[arg(value_parser = parse_group_name)]
        name: NetworkName,
        /// The IP address other members reach this machine at [default:
        /// the address of the route to the internet].
        #[arg(long, value_name = "IP")]
        host: Option<std::net::IpAddr>,
        #[command(flatten)]
        data: DataDir,
    },
    /// List the groups this node is in, with their port and shared folders.
    List {
        #[command(flatten)]
        data: DataDir,
    },
}

/// Where a group's traffic and files go.
#[derive(Args)]
struct GroupPlace {
    /// UDP port for the group's traffic [default: the first free one from 4670].
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// A folder to share with the group; repeat for several [default:
    /// DATA_DIR/networks/NAME/shared].
    #[arg(long = "share", value_name = "DIR")]
    share: Vec<PathBuf>,
    /// The IP address other members reach this machine at, for the invite
    /// [default: the address of the route to the internet].
    #[arg(long, value_name = "IP")]
    host: Option<std::net::IpAddr>,
}

impl GroupPlace {
    fn options(&self) -> cli::group::GroupOptions {
        cli::group::GroupOptions {
            port: self.port,
            share: self.share.clone(),
        }
    }
}

const GROUP_HELP: &str = "\
A group in one minute:
  alice$ canopy group new family        # prints an invite: canopy-group:family?key=…
  bob$   canopy group join 'canopy-group:family?key=…&peer=…'
  both$  canopy run                     # public network + every joined group
Put files in the shared folder each command prints. Members see only each
other's group files; outsiders cannot connect to the group's port at all.
The invite holds the key: send it only to members, over a channel you trust.
To cut someone off: `canopy group rekey NAME`, and send the new invite to
the members who stay (`canopy group join` it again). Running nodes pick up
the new key within seconds. Or list the admitted peer ids in
DATA_DIR/networks/NAME/allow.txt (also re-read while running).";

fn parse_group_name(text: &str) -> Result<NetworkName, String> {
    text.parse().map_err(|e: NetworkError| e.to_string())
}

fn parse_invite(text: &str) -> Result<Invite, String> {
    text.parse().map_err(|e: NetworkError| e.to_string())
}

fn print_invite(group: &cli::group::Group, host: Option<std::net::IpAddr>) -> anyhow::Result<()> {
    let host = host.unwrap_or_else(cli::group::likely_host);
    let invite = group.invite(host)?;
    println!("group {}: this node is {}", group.name, invite.members[0]);
    println!("shared with the group: {}", group.shared_folders());
    println!("invite (send it to members only; it holds the key):");
    println!("{invite}");
    if host.is_loopback() {
        println!("note: {host} reaches this machine only from itself; pass --host YOUR_IP for others");
    }
    Ok(())
}

const SEARCH_HELP: &str = "\
Exit codes:
  0  results were found
  1  nothing matched (or another error)
  2  bad command line
  4  no supernode could be asked";

const GET_HELP: &str = "\
Resuming: data goes to PATH.part and the verified blocks are recorded in
PATH.part.state. Run the same command again after an interruption (even
kill -9) and it continues where it stopped; blocks already on disk are
verified again before they are trusted.

Stalls: after 10 s without a verified byte the progress bar says
'stalled' and what the download waits for (sources busy, connecting,
without the missing blocks). A download that stops moving is re-planned
within seconds (its books checked, every source asked again); it never
waits silently.

Exit codes:
  0  the file was fetched and verified
  1  other error
  2  bad command line
  3  no source shares that hash
  4  network: sources unreachable, not who PEERID says, or gone before the end
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
   in_flight_blocks, rate, sources: [{peer, state, rate, bytes, failure?}],
   stalled?: {seconds, reason}} every 0.5 s; stalled appears once no
   verified byte has arrived for 10 s, with what the download waits for
   (a source state is queued, connecting, active, idle, busy, done or failed);
  {\"event\":\"banned\", peer, reason} when a source sends a bad block;
  last, {\"event\":\"done\", hash, path, size, seconds, rate, resumed,
   received, sources[, already_complete]} or
  {\"event\":\"error\", exit_code, message}, exit_code being the process's.";

#[derive(Args)]
struct DataDir {
    /// Folder for this node's key and caches (default: the platform data
    /// folder, e.g. ~/.local/share/canopy). Use one per node to run several
    /// side by side.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => dirs::data_dir()
                .map(|dir| dir.join("canopy"))
                .context("no platform data folder is known here; pass --data-dir DIR"),
        }
    }
}

#[derive(Args)]
struct NetworkArgs {
    /// A supernode to join or ask, as PEERID@HOST:PORT; repeat for several.
    /// Supernodes reached before are remembered in the data folder and
    /// tried too.
    #[arg(long, value_name = "PEERID@HOST:PORT", value_parser = parse_peer_addr)]
    bootstrap: Vec<PeerAddr>,
    /// Ask inside this private group (joined with `canopy group new|join`)
    /// instead of the public network: its key, its members and this node's
    /// identity in it.
    #[arg(long, value_name = "NAME", value_parser = parse_group_name)]
    network: Option<NetworkName>,
}

/// Where a one-shot command talks: its data folder, its network and the
/// supernodes to ask.
struct Place {
    data_dir: PathBuf,
    network: Option<canopy_node::network::NetworkSettings>,
    supernodes: Vec<PeerAddr>,
}

impl Place {
    /// The network as it is on disk now.
    fn membership(&self) -> anyhow::Result<Option<canopy_common::net::Network>> {
        Ok(self.network.as_ref().map(|n| n.load()).transpose()?)
    }
}

impl NetworkArgs {
    /// The data folder, network and supernodes for `data_dir`: the public
    /// network's, or with --network, the group's.
    fn place(&self, data_dir: PathBuf) -> anyhow::Result<Place> {
        let Some(name) = &self.network else {
            return Ok(Place {
                supernodes: self.supernodes(&data_dir),
                data_dir,
                network: None,
            });
        };
        let group = cli::group::open(&data_dir, name)?;
        let mut supernodes = self.supernodes(&group.dir);
        for member in group.settings.members() {
            if !supernodes.iter().any(|s| s.id == member.id) {
                supernodes.push(member);
            }
        }
        Ok(Place {
            network: Some(group.network_settings()),
            data_dir: group.dir,
            supernodes,
        })
    }

    /// The given supernodes, then the remembered ones.
    fn supernodes(&self, data_dir: &std::path::Path) -> Vec<PeerAddr> {
        let mut supernodes = self.bootstrap.clone();
        for known in canopy_node::hostcache::load(data_dir) {
            if !supernodes.iter().any(|s| s.id == known.id) {
                supernodes.push(known);
            }
        }
        supernodes
    }
}

/// What the election asks of a machine before it may be a supernode.
#[derive(Args)]
struct ElectionArgs {
    /// Never become a supernode, whatever the election says (for metered
    /// or slow links).
    #[arg(long)]
    never_supernode: bool,
    /// Least measured upload, in Mbit/s, for a supernode.
    #[arg(long, value_name = "MBIT", default_value_t = 5.0)]
    supernode_min_upload: f64,
    /// Least measured download, in Mbit/s, for a supernode.
    #[arg(long, value_name = "MBIT", default_value_t = 5.0)]
    supernode_min_download: f64,
    /// Least memory for a supernode (K, M, G as for rates).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes, default_value = "2G")]
    supernode_min_memory: u64,
    /// Least CPU cores for a supernode.
    #[arg(long, value_name = "N", default_value_t = 2)]
    supernode_min_cores: u32,
}

impl ElectionArgs {
    fn thresholds(&self) -> canopy_common::proto::election::Thresholds {
        let bytes_per_second = |mbit: f64| (mbit.max(0.0) * 1e6 / 8.0) as u64;
        canopy_common::proto::election::Thresholds {
            min_cores: self.supernode_min_cores,
            min_memory: self.supernode_min_memory,
            min_upload: bytes_per_second(self.supernode_min_upload),
            min_download: bytes_per_second(self.supernode_min_download),
            ..Default::default()
        }
    }
}

#[derive(Args)]
struct TransferArgs {
    /// Cap on the total upload rate, in bytes per second; K, M and G mean
    /// KiB, MiB and GiB (2M = 2 MiB/s). Shared fairly between everyone
    /// fetching from us. Without it, uploads are not capped.
    #[arg(long, value_name = "RATE", value_parser = parse_bytes)]
    max_upload_rate: Option<u64>,
    /// Cap on the download rate, as for uploads.
    #[arg(long, value_name = "RATE", value_parser = parse_bytes)]
    max_download_rate: Option<u64>,
    /// Block requests served at once; more are told to retry later.
    #[arg(long, value_name = "N", default_value_t = TransferLimits::default().upload_slots)]
    upload_slots: usize,
}

impl TransferArgs {
    fn limits(&self) -> TransferLimits {
        TransferLimits {
            max_upload_rate: self.max_upload_rate,
            upload_slots: self.upload_slots,
            max_download_rate: self.max_download_rate,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One-shot commands report through their own output; a node that runs
    // for a long time logs what it does, as its settings say.
    let outcome = match cli.command {
        // Its settings (read before logging starts) choose the log format.
        Command::Run(args) => run_settings(*args).and_then(|settings| {
            init_logging(cli.verbose, Some(settings.log_format));
            runtime()?.block_on(cli::run::run(settings))
        }),
        command => {
            init_logging(cli.verbose, None);
            runtime().and_then(|runtime| runtime.block_on(run(command)))
        }
    };
    match outcome {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) if error.downcast_ref::<NothingFound>().is_some() => ExitCode::from(exit::OTHER),
        Err(error) => {
            eprintln!("canopy: {}", render_error(&error));
            let resumable = error
                .downcast_ref::<DownloadError>()
                .and_then(DownloadError::kept_part)
                .is_some();
            if resumable {
                eprintln!("canopy: run the same command again to resume");
            }
            ExitCode::from(exit_code(&error))
        }
    }
}

/// The process exit code for `error` (`canopy get --help` lists them).
fn exit_code(error: &anyhow::Error) -> u8 {
    if let Some(error) = error.downcast_ref::<DownloadError>() {
        error.exit_code()
    } else if error.downcast_ref::<cli::search::NoSupernode>().is_some() {
        exit::NETWORK
    } else if error.downcast_ref::<cli::get::OutputExists>().is_some() {
        exit::LOCAL_IO
    } else if error.downcast_ref::<cli::get::Interrupted>().is_some() {
        exit::INTERRUPTED
    } else if error.downcast_ref::<NoSources>().is_some() {
        exit::NOT_FOUND
    } else {
        exit::OTHER
    }
}

/// The error and its causes on one line, skipping causes whose text the
/// message already includes (typed errors often quote their source).
fn render_error(error: &anyhow::Error) -> String {
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `canopy run`'s settings: flags and environment over the config file.
fn run_settings(args: RunArgs) -> anyhow::Result<RunSettings> {
    let (file, path) = FileSettings::load(args.config.as_deref())?;
    let file = file.with_app_changes(args.data_dir.as_deref());
    RunSettings::resolve(args, file, path)
}

/// `long_running`: the log format of a node that runs until stopped; `None`
/// for one-shot commands, which log only warnings unless asked.
fn init_logging(verbose: u8, long_running: Option<LogFormat>) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if long_running.is_none() => "warn",
        0 => "warn,canopy=info,canopy_node=info,canopy_common=info,canopy_supernode=info",
        1 => "warn,canopy=debug,canopy_node=debug,canopy_common=debug,canopy_supernode=debug",
        _ => "info,canopy=trace,canopy_node=trace,canopy_common=trace,canopy_supernode=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if long_running == Some(LogFormat::Json) {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo { size } => run_demo(size).await,
        Command::Id { data } => {
            let key = NodeKey::load_or_create(&data.resolve()?)?;
            println!("{}", key.peer_id());
            Ok(())
        }
        Command::Run(args) => cli::run::run(run_settings(*args)?).await,
        Command::Group(command) => group(command),
        Command::Status { json, data } => cli::status::status(&data.resolve()?, json).await,
        Command::Probe {
            network,
            max_upload_rate,
            election,
            data,
        } => {
            anyhow::ensure!(
                network.network.is_none(),
                "canopy probe measures against the public network; --network is not for it"
            );
            let data_dir = data.resolve()?;
            let peers = network.supernodes(&data_dir);
            let listen = SocketAddr::from(([0, 0, 0, 0], 0));
            let (profile, measured, decision, _) = cli::probe::elect(
                &data_dir,
                listen,
                &peers,
                max_upload_rate,
                &election.thresholds(),
                election.never_supernode,
                None,
            )
            .await?;
            cli::probe::print(&profile, &measured, &decision, "would be");
            Ok(())
        }
        Command::Search {
            words,
            kind,
            min_size,
            max_size,
            limit,
            ttl,
            json,
            network,
            data,
        } => {
            let place = network.place(data.resolve()?)?;
            let data_dir = place.data_dir.clone();
            let query = Query {
                text: words.join(" "),
                hash: None,
                kind,
                min_size,
                max_size,
                max_hits: limit,
                ttl,
            };
            query.check().map_err(|reason| anyhow::anyhow!("{reason}"))?;
            let endpoint = cli::search::endpoint_in(&data_dir, place.membership()?)?;
            // Results are shown as they arrive from across the network.
            let mut first = true;
            let mut show = |hit: &canopy_common::proto::Hit| {
                if first && !json {
                    cli::search::print_header();
                }
                first = false;
                cli::search::print_hit(hit, json);
            };
            let result = cli::search::ask_streaming(&endpoint, &place.supernodes, &query, &mut show).await;
            endpoint.shutdown().await;
            let (hits, answered) = result?;
            canopy_node::hostcache::remember(&data_dir, answered);
            if hits.is_empty() {
                if !json {
                    eprintln!("canopy: nothing found for {:?}", query.text);
                }
                return Err(NothingFound.into());
            }
            Ok(())
        }
        Command::Get(args) => {
            let json_errors = args.json;
            let result = get_command(args).await;
            if json_errors {
                if let Err(error) = &result {
                    // Scripts read one JSON object per line; the last says why and how it ends.
                    println!(
                        "{}",
                        serde_json::json!({"event": "error", "exit_code": exit_code(error), "message": render_error(error)})
                    );
                }
            }
            result
        }
    }
}

/// `canopy get`'s arguments.
#[derive(Args)]
struct GetCommand {
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

async fn get_command(command: GetCommand) -> anyhow::Result<()> {
    let GetCommand {
        target,
        sources,
        output,
        max_sources,
        network,
        listen,
        json,
        quiet,
        force,
        upload,
        data,
    } = command;
    let mode = match (json, quiet) {
        (true, _) => cli::get::Output::Json,
        (_, true) => cli::get::Output::Quiet,
        _ => cli::get::Output::Human,
    };
    // Settled before asking anyone: the same command after it finished
    // has nothing to fetch, even with every source gone (as aria2c reports
    // it complete), and another file in the way fails at once. Only a name
    // learned from the network below can change where the file goes.
    let planned = output
        .clone()
        .unwrap_or_else(|| PathBuf::from(cli::get::default_name(&target)));
    if let cli::get::Settled::Complete(complete) = cli::get::settle_output(&planned, &target, force)? {
        complete.report(mode);
        return Ok(());
    }
    let place = network.place(data.resolve()?)?;
    let data_dir = place.data_dir.clone();
    let mut link = target;
    link.sources.extend(sources);
    let supernodes = place.supernodes.clone();
    let mut relayed = Vec::new();
    if !supernodes.is_empty() {
        // Ask the network who has it, too.
        let endpoint = cli::search::endpoint_in(&data_dir, place.membership()?)?;
        let query = Query::for_hash(link.hash);
        match cli::search::ask(&endpoint, &supernodes, &query).await {
            Ok((hits, answered)) => {
                canopy_node::hostcache::remember(&data_dir, answered);
                for hit in hits.into_iter().filter(|hit| hit.hash == link.hash) {
                    link.sources.extend(hit.sources);
                    relayed.extend(hit.relayed);
                    if link.name.is_none() {
                        link.name = Some(hit.name);
                    }
                }
            }
            Err(error) => tracing::warn!("cannot ask for sources: {error:#}"),
        }
        endpoint.shutdown().await;
    }
    if link.sources.is_empty() && relayed.is_empty() {
        if supernodes.is_empty() {
            anyhow::bail!(
                "no sources for {}: pass --source PEERID@HOST:PORT, or --bootstrap a supernode to ask",
                link.hash
            );
        }
        return Err(NoSources(link.hash).into());
    }
    let output = output.unwrap_or_else(|| PathBuf::from(cli::get::default_name(&link)));
    let listen = listen.unwrap_or_else(|| match link.sources.first().map(|s| s.addr) {
        Some(SocketAddr::V6(_)) => SocketAddr::from(([0u16; 8], 0)),
        _ => SocketAddr::from(([0, 0, 0, 0], 0)),
    });
    let mut node = NodeConfig::new(data_dir, listen);
    // Fetching (and serving what it has to other downloaders) needs no
    // session: supernodes need not log and count a leaf per command.
    node.leaf_sessions = 0;
    node.upload = upload.limits();
    node.network = place.network;
    let options = DownloadOptions {
        max_sources,
        ..DownloadOptions::default()
    };
    cli::get::get(GetArgs {
        link,
        force,
        relayed,
        output,
        node,
        options,
        mode,
    })
    .await
}

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

async fn run_demo(size: u64) -> anyhow::Result<()> {
    println!(
        "canopy demo: {} supernodes and {} leaves on loopback, a search across them, a {} multi-source download",
        demo::SUPERNODES,
        demo::LEAVES,
        human_bytes(size)
    );
    let report = demo::run(size).await?;
    println!("  bytes from each source:");
    for (peer, bytes) in demo::sources_line(&report.fetched) {
        println!("          {peer}  {}", human_bytes(bytes));
    }
    println!("  hash     {}", report.fetched_hash);
    println!(
        "  verified {} (BLAKE3, same as b3sum)",
        if report.fetched_hash == report.expected {
            "yes"
        } else {
            "NO"
        }
    );
    Ok(())
}

/// `canopy group …`: files on disk only, no network.
fn group(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::New { name, place, data } => {
            let group = cli::group::create(&data.resolve()?, &name, &place.options())?;
            print_invite(&group, place.host)?;
            println!("run `canopy run` to start sharing with the group");
        }
        GroupCommand::Invite { name, host, data } => {
            print_invite(&cli::group::open(&data.resolve()?, &name)?, host)?;
        }
        GroupCommand::Rekey { name, host, data } => {
            let group = cli::group::rekey(&data.resolve()?, &name)?;
            println!("group {name} has a new key; whoever holds only the old one is cut off");
            print_invite(&group, host)?;
        }
        GroupCommand::Join { invite, place, data } => {
            let group = cli::group::join(&data.resolve()?, &invite, &place.options())?;
            let members = invite.members.len();
            println!(
                "joined group {} through {members} member{}; this node listens for it on port {}",
                group.name,
                if members == 1 { "" } else { "s" },
                group.settings.listen.port()
            );
            println!("shared with the group: {}", group.shared_folders());
            println!("run (or restart) `canopy run` to start sharing with the group");
        }
        GroupCommand::List { data } => {
            let groups = cli::group::list(&data.resolve()?);
            if groups.is_empty() {
                println!(
                    "no groups: `canopy group new NAME` makes one, `canopy group join INVITE` joins one"
                );
            }
            for group in groups {
                println!(
                    "{}  port {}  {}  sharing {}",
                    group.name,
                    group.settings.listen.port(),
                    format!("{:?}", group.settings.role).to_lowercase(),
                    group.shared_folders()
                );
            }
        }
    }
    Ok(())
}
