//! `canopy vote HASH up|down`: says whether a downloaded file was what its
//! name said. The vote is signed with this node's key and counts in the
//! ranking of search results, for this user and for people whose past votes
//! agreed with this user's (docs/TRUST.md).

use anyhow::Context;
use canopy_common::net::NodeKey;
use canopy_common::proto::credence::Verdict;
use canopy_common::proto::link::{Link, LinkError};
use canopy_common::proto::ContentHash;
use serde_json::json;

use crate::votes::{VerdictArg, Votes};
use crate::web::UI_ADDR_FILE;

#[derive(clap::Args)]
pub struct VoteArgs {
    /// The file's content hash (64 hex digits) or its canopy: link.
    #[arg(value_name = "HASH")]
    file: String,
    /// `up`: it is what its name says; `down`: a fake (noise, another
    /// file, a trap).
    #[arg(value_name = "up|down")]
    verdict: VerdictArg,
    #[command(flatten)]
    data: super::args::DataDir,
}

pub async fn run(args: VoteArgs) -> anyhow::Result<()> {
    let data_dir = args.data.resolve()?;
    let hash = parse_file(&args.file)?;
    let verdict = args.verdict.0;
    let word = match verdict {
        Verdict::Authentic => "up (authentic)",
        Verdict::Fake => "down (a fake)",
    };
    // A running node keeps the votes in memory and saves them: the vote
    // goes through it, or its next save would lose it.
    if data_dir.join(UI_ADDR_FILE).exists() {
        let body =
            json!({ "hash": hash.to_hex(), "verdict": if verdict == Verdict::Fake { "down" } else { "up" } });
        super::open::post_to_app(&data_dir, "/api/votes", &body, "the vote").await?;
        println!("voted {word} on {hash}; the running node hands it to its supernodes");
        return Ok(());
    }
    let _lock = crate::datalock::lock(&data_dir).context(
        "a node runs with this data folder but without its app (--no-ui): vote through it later, or stop it",
    )?;
    let key = NodeKey::load_or_create(&data_dir)?;
    Votes::open(&data_dir, key).cast(hash, verdict);
    println!("voted {word} on {hash}; handed to the network when the node runs next");
    Ok(())
}

/// A content hash, bare or inside a `canopy:` link.
fn parse_file(text: &str) -> anyhow::Result<ContentHash> {
    let text = text.trim();
    match text.parse::<Link>() {
        Ok(link) => Ok(link.hash),
        Err(LinkError::Scheme) => text.parse().map_err(|_| {
            anyhow::anyhow!("{text:?} is neither a content hash (64 hex digits) nor a canopy: link")
        }),
        Err(error) => Err(anyhow::anyhow!("bad canopy: link {text:?}: {error}")),
    }
}
