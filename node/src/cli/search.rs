//! `canopy search`: ask a supernode, print what it finds as it arrives, exit.

use canopy_common::proto::{FileKind, Hit, Link, Query};
use clap::Args;
use serde_json::json;

use super::args::{DataDir, NetworkArgs};
use super::exit::NothingFound;
use crate::searcher::{self, Searcher};
use crate::units::{human_bytes, parse_bytes};
use crate::votes::Votes;
use canopy_common::proto::credence::{Score, Verdict};
use canopy_common::proto::wire::MAX_HASHES_PER_NOTES_ASK;

/// `canopy search`'s arguments.
#[derive(Args)]
pub struct SearchArgs {
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
    /// Wait for the search to end, then list the results ranked for you:
    /// files you called fake last, then files a publisher you trust
    /// vouched for, then by the votes of people whose votes agreed with
    /// yours (asking the supernodes and the sources you downloaded from),
    /// then by sources. Adds a RATING column (JSON: score, voters, own,
    /// trusted). Without it, results are listed as they arrive.
    #[arg(long)]
    ranked: bool,
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    data: DataDir,
}

pub const HELP: &str = "\
Exit codes:
  0  results were found
  1  nothing matched (or another error)
  2  bad command line, or no supernode known to ask (pass --bootstrap)
  4  no supernode could be asked";

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let network = args.network.resolve(args.data.resolve()?)?;
    let query = Query {
        text: args.words.join(" "),
        hash: None,
        kind: args.kind,
        min_size: args.min_size,
        max_size: args.max_size,
        max_hits: args.limit,
        ttl: args.ttl,
    };
    query.check().map_err(|reason| anyhow::anyhow!("{reason}"))?;
    let endpoint = searcher::endpoint(&network.data_dir, network.membership()?)?;
    let asker = Searcher::one_shot(endpoint.clone(), network.supernodes.clone());
    // Results are shown as they arrive from across the network.
    let (json, ranked) = (args.json, args.ranked);
    let mut first = true;
    let mut show = |hit: &Hit| {
        if ranked {
            return;
        }
        if first && !json {
            print_header(false);
        }
        first = false;
        print_hit(hit, None, json);
    };
    let result = asker.search(&query, &mut show).await;
    if let (true, Ok(answer)) = (ranked, &result) {
        let votes = Votes::open_read_only(&network.data_dir, endpoint.key().clone());
        print_ranked(&asker, &votes, answer.hits.clone(), json).await;
    }
    endpoint.shutdown().await;
    let answer = result?;
    if let Some(answered) = answer.answered {
        crate::hostcache::remember(&network.data_dir, answered);
    }
    if answer.hits.is_empty() {
        if !json {
            eprintln!("canopy: nothing found for {:?}", query.text);
        }
        return Err(NothingFound.into());
    }
    Ok(())
}

/// The link printed for a hit: hash, size, name and a few sources.
pub fn link_of(hit: &Hit) -> Link {
    Link {
        hash: hit.hash,
        size: Some(hit.size),
        name: Some(hit.name.clone()),
        sources: hit.sources.iter().take(5).copied().collect(),
    }
}

/// Width of the name column in tables (longer names are cut with "…").
const NAME_WIDTH: usize = 40;

/// `hits` ranked for this user (`--ranked`): what the supernodes know of
/// them and what the sources met think, then [`Votes::rank`].
async fn print_ranked(asker: &Searcher, votes: &Votes, mut hits: Vec<Hit>, json: bool) {
    let files: Vec<_> = hits.iter().map(|hit| hit.hash).collect();
    for chunk in files.chunks(MAX_HASHES_PER_NOTES_ASK / 2).take(4) {
        asker.gather_notes(votes, chunk).await;
    }
    asker
        .ask_met_voters(votes, &files[..files.len().min(MAX_HASHES_PER_NOTES_ASK)])
        .await;
    let scores = votes.rank(&mut hits);
    if !json && !hits.is_empty() {
        print_header(true);
    }
    for (hit, score) in hits.iter().zip(scores) {
        let (_, trusted) = votes.publishers(hit);
        print_hit(hit, Some((score, trusted)), json);
    }
}

/// What the RATING column says: the user's own vote, a trusted
/// publisher, the votes' score (−1 fake … +1 good) and how many voters
/// with a weight for the user are behind it, or "-".
fn rating(score: &Score, trusted: bool) -> String {
    match (score.own, trusted) {
        (Some(Verdict::Fake), _) => "you: fake".into(),
        (Some(Verdict::Authentic), _) => "you: good".into(),
        (None, true) => "trusted".into(),
        (None, false) if score.weight > 0.0 => format!("{:+.2} ({})", score.value, score.voters),
        (None, false) => "-".into(),
    }
}

/// The table header, printed before the first row.
fn print_header(ranked: bool) {
    let rating = if ranked {
        format!("  {:<11}", "RATING")
    } else {
        String::new()
    };
    println!(
        "{:<NAME_WIDTH$}  {:>10}  {:<8}  {:>7}{rating}  LINK",
        "NAME", "SIZE", "TYPE", "SOURCES"
    );
}

/// One result, as a table row or a JSON line; ranked, with its score and
/// whether a trusted publisher vouched for it.
fn print_hit(hit: &Hit, ranked: Option<(Score, bool)>, json: bool) {
    if json {
        let mut line = json!({
            "hash": hit.hash.to_hex(),
            "name": hit.name,
            "size": hit.size,
            "type": hit.kind.as_str(),
            "sources": hit.source_count,
            "peers": hit.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "link": link_of(hit).to_string(),
        });
        if let Some((score, trusted)) = ranked {
            line["score"] = json!(score.value);
            line["voters"] = json!(score.voters);
            line["own"] = json!(score.own.map(|own| match own {
                Verdict::Authentic => "up",
                Verdict::Fake => "down",
            }));
            line["trusted"] = json!(trusted);
        }
        println!("{line}");
        return;
    }
    let rating = match &ranked {
        Some((score, trusted)) => format!("  {:<11}", rating(score, *trusted)),
        None => String::new(),
    };
    let mut name: String = hit.name.chars().take(NAME_WIDTH).collect();
    if hit.name.chars().count() > NAME_WIDTH {
        name.pop();
        name.push('…');
    }
    println!(
        "{name:<NAME_WIDTH$}  {:>10}  {:<8}  {:>7}{rating}  {}",
        human_bytes(hit.size),
        hit.kind.as_str(),
        hit.source_count,
        link_of(hit)
    );
}
