//! `canopy open LINK…`: hands `canopy:` links (or content hashes) to the
//! desktop app of the node running with this data folder, which starts
//! the downloads. What a link clicked in a browser runs, through the
//! `canopy:` URL handler (`deploy/canopy-link.desktop`).

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use crate::web::control::ask_running_node;
use crate::web::{auth, UI_ADDR_FILE};

#[derive(clap::Args)]
pub struct OpenArgs {
    /// `canopy:` links or content hashes (several at once, as pasted).
    #[arg(required = true, value_name = "LINK")]
    links: Vec<String>,
    #[command(flatten)]
    data: super::args::DataDir,
}

pub async fn run(args: OpenArgs) -> anyhow::Result<()> {
    let data_dir = args.data.resolve()?;
    let answer = post_links(&data_dir, &args.links.join("\n")).await?;
    let added = answer["added"].as_array().map(Vec::as_slice).unwrap_or_default();
    let failed = answer["failed"].as_array().map(Vec::as_slice).unwrap_or_default();
    for download in added {
        println!(
            "downloading {} ({})",
            download["name"].as_str().unwrap_or("?"),
            download["hash"].as_str().unwrap_or("?")
        );
    }
    for failure in failed {
        eprintln!(
            "canopy: not opened: {}: {}",
            failure["text"].as_str().unwrap_or("?"),
            failure["error"].as_str().unwrap_or("?")
        );
    }
    anyhow::ensure!(!added.is_empty(), "no link was opened");
    Ok(())
}

/// `POST /api/links` to the app of the node running with `data_dir`.
async fn post_links(data_dir: &Path, text: &str) -> anyhow::Result<Value> {
    post_to_app(data_dir, "/api/links", &json!({ "text": text }), "the links").await
}

/// `POST path` with `body` to the app of the node running with
/// `data_dir`; its JSON answer. `what` names the thing sent, for errors.
pub(super) async fn post_to_app(
    data_dir: &Path,
    path: &str,
    body: &Value,
    what: &str,
) -> anyhow::Result<Value> {
    let key_file = data_dir.join(auth::KEY_FILE);
    let key = std::fs::read_to_string(&key_file).with_context(|| {
        format!(
            "no running desktop app found: no key in {} (start `canopy run` with this --data-dir)",
            key_file.display()
        )
    })?;
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        key.trim(),
        body.len()
    );
    let (status, body) = ask_running_node(&data_dir.join(UI_ADDR_FILE), &request, 1 << 20).await?;
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match status {
        200 | 201 => Ok(answer),
        _ => anyhow::bail!(
            "the app refused {what} ({status}): {}",
            answer["error"].as_str().unwrap_or(body.trim())
        ),
    }
}
