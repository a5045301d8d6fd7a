//! `canopy`: share, search and fetch files on the Canopy network.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use canopy_common::net::{Endpoint, EndpointConfig, NodeKey};
use canopy_common::proto::{ContentHash, PeerAddr};
use canopy_node::fetch::{exit, fetch, FetchError, FetchOptions};
use canopy_node::{demo, Node, NodeConfig};
use clap::{Args, Parser, Subcommand};

const DEFAULT_PORT: u16 = 4663;

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
    /// Run a small network on loopback: share a generated file, fetch it by
    /// hash over QUIC, verify it and report the throughput.
    Demo {
        /// Size of the generated file, in bytes.
        #[arg(long, default_value_t = 64 << 20)]
        size: u64,
    },
    /// Print this node's peer id (creating its key on first use).
    Id {
        #[command(flatten)]
        data: DataDir,
    },
    /// Run a node that shares folders with the network until stopped
    /// (Ctrl-C or SIGTERM).
    Run {
        /// A folder to share, scanned recursively; repeat for several.
        /// Hidden files and partial downloads (*.part) are not shared.
        #[arg(long = "share", value_name = "DIR")]
        share: Vec<PathBuf>,
        /// UDP address to listen on.
        #[arg(long, value_name = "HOST:PORT", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
        listen: SocketAddr,
        #[command(flatten)]
        data: DataDir,
    },
    /// Fetch a file by its content hash from a peer, verifying every block.
    #[command(after_help = GET_EXIT_CODES)]
    Get {
        /// Content hash of the file (64 hex characters, as b3sum prints).
        hash: ContentHash,
        /// The peer to fetch from, as PEERID@HOST:PORT. The connection is
        /// refused unless the peer proves it holds PEERID's key.
        #[arg(long, value_name = "PEERID@HOST:PORT", value_parser = parse_peer_addr)]
        from: PeerAddr,
        /// Where to write the file (default: the hash, in the current folder).
        /// Data goes to PATH.part until the whole file is verified.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// UDP address to send from (default: any port).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<SocketAddr>,
        /// Print nothing but errors.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        data: DataDir,
    },
}

const GET_EXIT_CODES: &str = "\
Exit codes:
  0  the file was fetched and verified
  1  other error
  2  bad command line
  3  the peer does not share that hash
  4  network: the peer is unreachable, is not who PEERID says, or the connection broke
  5  the peer sent data that failed verification (nothing unverified was written)
  6  local: the output could not be written (permissions, disk full)";

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

/// Parses `PEERID@HOST:PORT`, resolving HOST if it is a name.
fn parse_peer_addr(text: &str) -> Result<PeerAddr, String> {
    let (id, host_port) = PeerAddr::split(text).map_err(|e| e.to_string())?;
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host_port:?} resolves to no address"))?;
    Ok(PeerAddr::new(id, addr))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("canopy: cannot start the async runtime: {error}");
            return ExitCode::from(exit::OTHER);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            let code = error
                .downcast_ref::<FetchError>()
                .map(FetchError::exit_code)
                .unwrap_or(exit::OTHER);
            eprintln!("canopy: {}", render_error(&error));
            ExitCode::from(code)
        }
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

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn,canopy=info,canopy_node=info,canopy_common=info,canopy_supernode=info",
        1 => "warn,canopy=debug,canopy_node=debug,canopy_common=debug,canopy_supernode=debug",
        _ => "info,canopy=trace,canopy_node=trace,canopy_common=trace,canopy_supernode=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo { size } => run_demo(size).await,
        Command::Id { data } => {
            let dir = data.resolve()?;
            let key = NodeKey::load_or_create(&dir)?;
            println!("{}", key.peer_id());
            Ok(())
        }
        Command::Run {
            share,
            listen,
            data,
        } => run_node(share, listen, data.resolve()?).await,
        Command::Get {
            hash,
            from,
            output,
            listen,
            quiet,
            data,
        } => {
            let output = output.unwrap_or_else(|| PathBuf::from(hash.to_hex()));
            run_get(hash, from, output, listen, quiet, data.resolve()?).await
        }
    }
}

async fn run_demo(size: u64) -> anyhow::Result<()> {
    println!(
        "canopy demo: two nodes on loopback, one {} file",
        human_bytes(size)
    );
    let report = demo::run(size).await?;
    println!("  sharer   {}", report.sharer);
    println!("  shared   {}", report.shared_path.display());
    println!(
        "  fetched  {} by hash over QUIC, every block verified",
        human_bytes(report.fetched.size)
    );
    println!("  hash     {}", report.fetched_hash);
    println!(
        "  verified {} (BLAKE3, same as b3sum)",
        if report.fetched_hash == report.expected {
            "yes"
        } else {
            "NO"
        }
    );
    println!(
        "  speed    {}/s in {:.2?}",
        human_bytes(report.fetched.bytes_per_second() as u64),
        report.fetched.elapsed
    );
    Ok(())
}

async fn run_node(
    share: Vec<PathBuf>,
    listen: SocketAddr,
    data_dir: PathBuf,
) -> anyhow::Result<()> {
    let node = Node::start(NodeConfig {
        data_dir: data_dir.clone(),
        listen,
        share: share.clone(),
        endpoint: EndpointConfig::default(),
    })
    .await
    .with_context(|| format!("cannot start the node (data folder {})", data_dir.display()))?;
    let me = node.peer_addr();
    let scan = node.scan_stats();
    println!("canopy node {}", me.id);
    println!("listening on {} (peers reach this node as {me})", me.addr);
    println!(
        "sharing {} file{}, {} ({} hashed now, {} from cache)",
        scan.files,
        if scan.files == 1 { "" } else { "s" },
        human_bytes(scan.bytes),
        scan.hashed,
        scan.cached
    );
    let files = node.shares().list();
    for file in files.iter().take(20) {
        println!(
            "  {}  {:>10}  {}",
            file.hash(),
            human_bytes(file.size),
            file.path.display()
        );
    }
    if files.len() > 20 {
        println!("  … and {} more", files.len() - 20);
    }
    if let Some(file) = files.first() {
        println!("fetch with: canopy get {} --from {me}", file.hash());
    }
    wait_for_shutdown_signal().await;
    println!("shutting down");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run_get(
    hash: ContentHash,
    from: PeerAddr,
    output: PathBuf,
    listen: Option<SocketAddr>,
    quiet: bool,
    data_dir: PathBuf,
) -> anyhow::Result<()> {
    let key = NodeKey::load_or_create(&data_dir)?;
    let listen = listen.unwrap_or_else(|| match from.addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    });
    let endpoint = Endpoint::bind(key, listen, &EndpointConfig::default())?;
    let options = FetchOptions::default();
    let progress = options.progress.clone();
    let ticker = (!quiet).then(|| {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.tick().await;
            loop {
                interval.tick().await;
                eprint!(
                    "\r{} verified",
                    human_bytes(progress.load(Ordering::Relaxed))
                );
            }
        })
    });
    let result = fetch(&endpoint, from, hash, &output, &options).await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    endpoint.shutdown().await;
    let report = result?;
    if !quiet {
        eprint!("\r");
        println!(
            "{}  {}  {} in {:.2?} ({}/s) from {}",
            report.hash,
            report.path.display(),
            human_bytes(report.size),
            report.elapsed,
            human_bytes(report.bytes_per_second() as u64),
            report.source
        );
    }
    Ok(())
}

/// `1.5 MiB`-style sizes for people.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
