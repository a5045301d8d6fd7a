//! `canopy trust PEERID…`: marks publishers the user trusts. Files a
//! trusted publisher vouched for (a node that signs what it shares, the
//! `sign-shares` setting) are marked in search results and ranked first.
//! `--remove` stops trusting; with no id, it lists who is trusted.

use anyhow::Context;
use canopy_common::net::NodeKey;
use canopy_common::proto::PeerId;
use serde_json::json;

use crate::votes::Votes;
use crate::web::UI_ADDR_FILE;

#[derive(clap::Args)]
pub struct TrustArgs {
    /// Publishers' peer ids (as search results show them under
    /// "vouched by"); none: list the trusted ones.
    #[arg(value_name = "PEERID")]
    publishers: Vec<PeerId>,
    /// Stop trusting them.
    #[arg(long)]
    remove: bool,
    #[command(flatten)]
    data: super::args::DataDir,
}

pub async fn run(args: TrustArgs) -> anyhow::Result<()> {
    let data_dir = args.data.resolve()?;
    let word = if args.remove {
        "no longer trusted"
    } else {
        "trusted"
    };
    // A running node keeps the list in memory: changes go through it.
    if data_dir.join(UI_ADDR_FILE).exists() {
        for publisher in &args.publishers {
            let body = json!({ "publisher": publisher.to_string(), "trusted": !args.remove });
            super::open::post_to_app(&data_dir, "/api/trust", &body, "the change").await?;
            println!("{publisher}: {word}");
        }
        if args.publishers.is_empty() {
            list(&Votes::open(&data_dir, NodeKey::load_or_create(&data_dir)?).trusted());
        }
        return Ok(());
    }
    let _lock = crate::datalock::lock(&data_dir).context(
        "a node runs with this data folder but without its app (--no-ui): edit trusted-publishers.txt \
         in the data folder and restart it, or stop it first",
    )?;
    let votes = Votes::open(&data_dir, NodeKey::load_or_create(&data_dir)?);
    for publisher in &args.publishers {
        votes.trust(*publisher, !args.remove)?;
        println!("{publisher}: {word}");
    }
    if args.publishers.is_empty() {
        list(&votes.trusted());
    }
    Ok(())
}

fn list(trusted: &[PeerId]) {
    if trusted.is_empty() {
        println!("no publisher is trusted (canopy trust PEERID adds one)");
    }
    for publisher in trusted {
        println!("{publisher}");
    }
}
