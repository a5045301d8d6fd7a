//! `canopy`: share, search and fetch files on the Canopy network.
//!
//! This file only parses the command line and hands each command to its
//! module in `cli/`, which does the work through the library and prints;
//! `cli::exit` turns what went wrong into the exit code.

use std::process::ExitCode;

use anyhow::Context;
use canopy_common::net::NodeKey;
use canopy_node::cli::args::DataDir;
use canopy_node::cli::config::{FileSettings, LogFormat, RunArgs, RunSettings};
use canopy_node::cli::{self, exit};
use canopy_node::units::parse_bytes;
use clap::{Parser, Subcommand};

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
    #[command(subcommand, after_help = cli::group::HELP)]
    Group(cli::group::GroupCommand),
    /// Show what the node running with this data folder is doing: role,
    /// leaves, neighbours, index, queries, traffic, memory.
    Status(cli::status::StatusArgs),
    /// Measure this machine and its links as the election does, and say
    /// which role it would take and why.
    Probe(cli::probe::ProbeArgs),
    /// Search the network: ask a supernode, print a table (or JSON lines)
    /// of files with their sources and a canopy: link for `canopy get`.
    #[command(after_help = cli::search::HELP)]
    Search(cli::search::SearchArgs),
    /// Fetch a file by content hash or canopy: link from every source at
    /// once, verifying every block. Interrupted downloads resume.
    #[command(after_help = cli::get::HELP)]
    Get(cli::get::GetArgs),
    /// Hand canopy: links (or hashes) to the desktop app of the node
    /// running with this data folder, which downloads them. The canopy:
    /// URL handler runs this (deploy/canopy-link.desktop).
    Open(cli::open::OpenArgs),
    /// Say whether a file you downloaded was what its name said: `up` or
    /// `down` (a fake). Signed with this node's key; search results are
    /// ranked by the votes of people whose votes agreed with yours.
    Vote(cli::vote::VoteArgs),
    /// Trust publishers (peer ids): files they vouched for are marked and
    /// ranked first in your searches. --remove to stop; no id: the list.
    Trust(cli::trust::TrustArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return bad_command_line(error),
    };
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
        Err(error) => exit::report(&error),
    }
}

/// Reports a command line clap refused. `get --json` promises scripts a
/// JSON error line as its last word, even for a bad argument.
fn bad_command_line(error: clap::Error) -> ExitCode {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let json_get = words.iter().any(|word| word == "get") && words.iter().any(|word| word == "--json");
    if json_get && error.use_stderr() {
        let message = error.kind().as_str().unwrap_or("bad command line");
        let detail = error.to_string();
        let line = serde_json::json!({
            "event": "error",
            "exit_code": exit::USAGE,
            "message": detail.lines().next().unwrap_or(message).trim_start_matches("error: "),
        });
        println!("{line}");
    }
    error.exit()
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo { size } => cli::demo::run(size).await,
        Command::Id { data } => {
            let key = NodeKey::load_or_create(&data.resolve()?)?;
            println!("{}", key.peer_id());
            Ok(())
        }
        Command::Run(args) => cli::run::run(run_settings(*args)?).await,
        Command::Group(command) => cli::group::run(command),
        Command::Status(args) => cli::status::run(args).await,
        Command::Probe(args) => cli::probe::run(args).await,
        Command::Search(args) => cli::search::run(args).await,
        Command::Get(args) => cli::get::run(args).await,
        Command::Open(args) => cli::open::run(args).await,
        Command::Vote(args) => cli::vote::run(args).await,
        Command::Trust(args) => cli::trust::run(args).await,
    }
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
