//! Supernode capacity benchmark (not a test: run it on purpose).
//!
//! ```text
//! cargo run --release --example supernode_capacity -- [LEAVES=3000] [FILES_PER_LEAF=1000] [CHURN_SECONDS=20]
//! ```
//!
//! Every simulated leaf holds two file descriptors in this process: past
//! a few thousand leaves, raise the open-files limit first (`ulimit -n
//! 65536`); it says so.
//!
//! Part 1, the index alone, in this process: publish LEAVES × FILES
//! synthetic files into the supernode's tantivy index and into a plain
//! in-memory inverted index (the reference), then time the same queries on
//! both.
//!
//! Part 2, over QUIC: a `canopy run --role supernode` *process* (so its RSS
//! is its own), LEAVES leaves in this process (each its own endpoint and
//! key) publishing FILES files each over the real wire protocol; then for
//! CHURN_SECONDS, 10 leaves leave and rejoin per second while a client
//! searches continuously and a fresh file is published and searched for
//! every second. Reports publish rate, query p50/p99, time until a new file
//! is searchable, and the supernode's RSS.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use canopy_common::net::{read_frame, write_frame, Endpoint, EndpointConfig, NodeKey};
use canopy_common::proto::frame::MAX_CONTROL_FRAME;
use canopy_common::proto::{
    ContentHash, FileEntry, FileKind, Hello, LeafUpdate, PeerAddr, Query, Request, SessionNotice,
};
use canopy_node::searcher::Searcher;
use canopy_supernode::FileIndex;

const VOCABULARY: usize = 20_000;

/// A deterministic word list: "w0".."w19999" mixed with a few real words,
/// drawn with a Zipf-like skew so some words are common and most rare.
struct Words {
    state: u64,
}

impl Words {
    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn word(&mut self) -> String {
        // Zipf-ish: the square of a uniform favours small indices.
        let u = (self.next_u64() % 1_000_000) as f64 / 1_000_000.0;
        format!("w{}", (u * u * VOCABULARY as f64) as usize)
    }

    fn name(&mut self) -> String {
        let words = 3 + (self.next_u64() % 4) as usize;
        let mut name: Vec<String> = (0..words).map(|_| self.word()).collect();
        name.push(["mp3", "ogg", "mkv", "pdf", "jpg"][(self.next_u64() % 5) as usize].into());
        name.join(" ")
    }
}

fn files_for(leaf: usize, count: usize) -> Vec<FileEntry> {
    let mut words = Words {
        state: 0x9e37_79b9_7f4a_7c15 ^ (leaf as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
    };
    (0..count)
        .map(|i| {
            let name = words.name();
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(leaf as u64).to_le_bytes());
            hash[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            FileEntry {
                hash: ContentHash(hash),
                size: 1000 + words.next_u64() % 10_000_000,
                kind: FileKind::from_name(&name.replace(' ', ".")),
                name,
                meta: Vec::new(),
            }
        })
        .collect()
}

fn queries() -> Vec<String> {
    let mut words = Words { state: 42 };
    (0..500)
        .map(|i| {
            if i % 3 == 0 {
                format!("{} {}", words.word(), words.word())
            } else {
                words.word()
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The reference: a plain inverted index, word → document ids.
#[derive(Default)]
struct PlainIndex {
    postings: HashMap<String, Vec<u32>>,
    docs: Vec<ContentHash>,
}

impl PlainIndex {
    fn add(&mut self, file: &FileEntry) {
        let id = self.docs.len() as u32;
        self.docs.push(file.hash);
        for word in file
            .name
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let list = self.postings.entry(word.to_lowercase()).or_default();
            if list.last() != Some(&id) {
                list.push(id);
            }
        }
    }

    fn search(&self, text: &str, limit: usize) -> usize {
        let mut lists: Vec<&Vec<u32>> = Vec::new();
        for word in text.split_whitespace() {
            match self.postings.get(&word.to_lowercase()) {
                Some(list) => lists.push(list),
                None => return 0,
            }
        }
        lists.sort_by_key(|l| l.len());
        let Some((first, rest)) = lists.split_first() else {
            return 0;
        };
        first
            .iter()
            .filter(|id| rest.iter().all(|l| l.binary_search(id).is_ok()))
            .take(limit)
            .count()
    }
}

fn query(text: &str) -> Query {
    Query {
        max_hits: 100,
        ..Query::words(text)
    }
}

fn part_one(leaves: usize, files_per_leaf: usize) {
    println!("## Part 1: index alone, {leaves} leaves x {files_per_leaf} files");
    let dir = tempfile::tempdir().unwrap();
    let index = FileIndex::create(dir.path(), 64 << 20).unwrap();
    let mut plain = PlainIndex::default();
    let me = std::process::id();
    let rss_before = rss_mib(me);
    let started = Instant::now();
    for leaf in 0..leaves {
        let files = files_for(leaf, files_per_leaf);
        index.add_leaf(
            leaf as u32 + 1,
            PeerAddr::new(
                canopy_common::proto::PeerId([1; 32]),
                "127.0.0.1:1".parse().unwrap(),
            ),
        );
        index.add_files(leaf as u32 + 1, &files);
        if leaf % 100 == 99 {
            index.commit_if_dirty().unwrap();
        }
    }
    index.commit_if_dirty().unwrap();
    let tantivy_time = started.elapsed();
    let rss_after = rss_mib(me);
    let started = Instant::now();
    for leaf in 0..leaves {
        for file in files_for(leaf, files_per_leaf) {
            plain.add(&file);
        }
    }
    let plain_time = started.elapsed();
    let total = (leaves * files_per_leaf) as f64;
    println!(
        "publish: tantivy {:.0} files/s, plain {:.0} files/s; memory (RSS growth) {:.0} bytes/file for tantivy+catalog",
        total / tantivy_time.as_secs_f64(),
        total / plain_time.as_secs_f64(),
        (rss_after - rss_before) * 1024.0 * 1024.0 / total
    );
    let queries = queries();
    let mut times = Vec::new();
    let mut plain_times = Vec::new();
    for text in queries.iter().cycle().take(2000) {
        let started = Instant::now();
        let _ = index.search(&query(text)).unwrap();
        times.push(started.elapsed());
        let started = Instant::now();
        let _ = plain.search(text, 100);
        plain_times.push(started.elapsed());
    }
    times.sort();
    plain_times.sort();
    println!(
        "query (top 100, grouped): tantivy p50 {:?} p99 {:?}; plain p50 {:?} p99 {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&plain_times, 0.5),
        percentile(&plain_times, 0.99)
    );
    // Churn in the index alone: 10 leaves leave and rejoin per commit interval.
    let started = Instant::now();
    let rounds = 40;
    for round in 0..rounds {
        for k in 0..10 {
            let leaf = (round * 10 + k) % leaves;
            let id = leaf as u32 + 1;
            index.remove_leaf(id);
            index.add_leaf(
                id,
                PeerAddr::new(
                    canopy_common::proto::PeerId([1; 32]),
                    "127.0.0.1:1".parse().unwrap(),
                ),
            );
            index.add_files(id, &files_for(leaf, files_per_leaf));
        }
        index.commit_if_dirty().unwrap();
    }
    println!(
        "churn: {:.1} leaf leave+rejoin/s sustained by the index alone ({} rounds of 10 with a commit each)",
        (rounds * 10) as f64 / started.elapsed().as_secs_f64(),
        rounds
    );
}

struct LeafClient {
    _endpoint: Endpoint,
    _connection: quinn::Connection,
    send: quinn::SendStream,
    _recv: quinn::RecvStream,
}

async fn join(supernode: PeerAddr, files: &[FileEntry]) -> anyhow::Result<LeafClient> {
    let config = EndpointConfig {
        udp_buffer_bytes: 256 << 10,
        ..EndpointConfig::default()
    };
    let endpoint = Endpoint::bind(NodeKey::generate()?, "127.0.0.1:0".parse()?, &config)?;
    let connection = endpoint.connect(&supernode).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let hello = Hello {
        listen: vec![endpoint.local_addr()],
        accepts_inbound: true,
        agent: "capacity-bench".into(),
    };
    write_frame(&mut send, &Request::Join(hello)).await?;
    match read_frame::<SessionNotice>(&mut recv, MAX_CONTROL_FRAME).await? {
        SessionNotice::Welcome { .. } => {}
        other => anyhow::bail!("not welcomed: {other:?}"),
    }
    for chunk in files.chunks(100) {
        write_frame(
            &mut send,
            &LeafUpdate::Add {
                files: chunk.to_vec(),
            },
        )
        .await?;
    }
    Ok(LeafClient {
        _endpoint: endpoint,
        _connection: connection,
        send,
        _recv: recv,
    })
}

/// Joins as a real leaf does: a join that fails (a handshake that timed
/// out while the supernode was busy) is tried again after a pause, twice;
/// every retry is counted and reported.
async fn join_as_a_leaf_would(
    supernode: PeerAddr,
    files: &[FileEntry],
    retried: &std::sync::atomic::AtomicUsize,
) -> anyhow::Result<LeafClient> {
    let mut pause = Duration::from_secs(1);
    for _ in 0..2 {
        match join(supernode, files).await {
            Ok(client) => return Ok(client),
            Err(error) => {
                retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                eprintln!("a join failed ({error:#}); trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    join(supernode, files).await
}

async fn part_two(leaves: usize, files_per_leaf: usize, churn_seconds: u64) -> anyhow::Result<()> {
    println!("## Part 2: over QUIC, a supernode process, {leaves} leaves x {files_per_leaf} files");
    let dir = tempfile::tempdir()?;
    let binary = std::env::current_exe()?
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("canopy");
    // Sized as a volunteer would size a machine for this load (the
    // defaults suit a home machine, not a benchmark): room for every leaf
    // and its connection from one address, an index budget with headroom
    // over the ~512 bytes a file takes, and a search budget for our single
    // asker, who searches back to back (a person: 5 a second).
    let files = leaves * files_per_leaf;
    let index_budget = ((files as u64) * 1024).max(1 << 30);
    let log_path = dir.path().join("supernode.log");
    let mut supernode = Command::new(&binary)
        .args([
            "run",
            "--role",
            "supernode",
            "--listen",
            "127.0.0.1:0",
            "--no-ui",
            "--max-leaves",
            &(leaves + 100).to_string(),
            // Every simulated leaf comes from 127.0.0.1.
            "--max-connections-per-address",
            &(leaves + 100).to_string(),
            "--index-budget",
            &index_budget.to_string(),
            "--max-searches-per-peer",
            "100000",
            // The simulated leaves publish files they do not hold.
            "--no-possession-checks",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    println!(
        "supernode: --max-leaves {} --max-connections-per-address {} --index-budget {} MiB --max-searches-per-peer 100000 --no-possession-checks",
        leaves + 100,
        leaves + 100,
        index_budget >> 20
    );
    let result = measure_supernode(&mut supernode, leaves, files_per_leaf, churn_seconds).await;
    let _ = supernode.kill();
    let _ = supernode.wait();
    // A refusal is only in the supernode's log: say it, not just that
    // something failed.
    result.map_err(|error| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        error.context(format!("the supernode's last log lines:\n{}", tail.join("\n")))
    })
}

async fn measure_supernode(
    supernode: &mut std::process::Child,
    leaves: usize,
    files_per_leaf: usize,
    churn_seconds: u64,
) -> anyhow::Result<()> {
    let pid = supernode.id();
    let mut lines = BufReader::new(supernode.stdout.take().unwrap()).lines();
    let address: PeerAddr = loop {
        let Some(line) = lines.next() else {
            anyhow::bail!("the supernode exited before saying where it listens");
        };
        let line = line?;
        if let Some(rest) = line.split("peers reach this node as ").nth(1) {
            break rest.trim_end_matches(')').parse()?;
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    println!("supernode RSS at start: {:.0} MiB", rss_mib(pid));

    let started = Instant::now();
    let mut clients = Vec::with_capacity(leaves);
    let mut joining = tokio::task::JoinSet::new();
    let retried = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for leaf in 0..leaves {
        let files = files_for(leaf, files_per_leaf);
        let retried = retried.clone();
        joining.spawn(async move { (leaf, join_as_a_leaf_would(address, &files, &retried).await) });
        if joining.len() >= 64 {
            let (leaf, client) = joining.join_next().await.unwrap()?;
            clients.push((
                leaf,
                client.with_context(|| format!("leaf {leaf} could not join"))?,
            ));
        }
    }
    while let Some(joined) = joining.join_next().await {
        let (leaf, client) = joined?;
        clients.push((
            leaf,
            client.with_context(|| format!("leaf {leaf} could not join"))?,
        ));
    }
    let asker = Endpoint::bind(
        NodeKey::generate()?,
        "127.0.0.1:0".parse()?,
        &EndpointConfig::default(),
    )?;
    // Published means searchable: wait until the last leaf's files answer.
    let probe = files_for(leaves - 1, files_per_leaf)[0].name.clone();
    let patience = Duration::from_secs(60) + Duration::from_micros(200 * (leaves * files_per_leaf) as u64);
    loop {
        let (hits, _) = ask(&asker, &[address], &query(&probe)).await?;
        if !hits.is_empty() {
            break;
        }
        // A publish the supernode refused never becomes searchable.
        anyhow::ensure!(
            started.elapsed() < patience,
            "the last leaf's files were not searchable {patience:?} after the joins began"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let publish_time = started.elapsed();
    println!(
        "joined and published {} files in {:.1?}: {:.0} files/s; supernode RSS {:.0} MiB ({:.0} bytes/file); {} joins tried again",
        leaves * files_per_leaf,
        publish_time,
        (leaves * files_per_leaf) as f64 / publish_time.as_secs_f64(),
        rss_mib(pid),
        rss_mib(pid) * 1024.0 * 1024.0 / (leaves * files_per_leaf) as f64,
        retried.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Churn: 10 leaves leave and rejoin per second; queries run meanwhile.
    let clients = Arc::new(tokio::sync::Mutex::new(clients));
    let churn = {
        let clients = clients.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut next = 0usize;
            let deadline = Instant::now() + Duration::from_secs(churn_seconds);
            let mut cycles = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                let mut clients = clients.lock().await;
                let slot = next % clients.len();
                next += 1;
                let (leaf, old) = clients.swap_remove(slot);
                old._connection.close(0u32.into(), b"churn");
                drop(old);
                match join(address, &files_for(leaf, files_per_leaf)).await {
                    Ok(client) => clients.push((leaf, client)),
                    Err(error) => eprintln!("rejoin failed: {error:#}"),
                }
                cycles += 1;
            }
            cycles
        })
    };
    let queries = queries();
    let mut times = Vec::new();
    let mut freshness = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(churn_seconds);
    let mut fresh_index = 0u64;
    let mut last_fresh = Instant::now();
    let mut i = 0;
    while Instant::now() < deadline {
        let text = &queries[i % queries.len()];
        i += 1;
        let started = Instant::now();
        ask(&asker, &[address], &query(text)).await?;
        times.push(started.elapsed());
        if last_fresh.elapsed() >= Duration::from_secs(1) {
            last_fresh = Instant::now();
            fresh_index += 1;
            let name = format!("freshly published zq{fresh_index}x.ogg");
            let entry = FileEntry {
                hash: ContentHash::of(name.as_bytes()),
                size: 1,
                kind: FileKind::Audio,
                name: name.clone(),
                meta: Vec::new(),
            };
            let published = Instant::now();
            {
                let mut clients = clients.lock().await;
                let (_, client) = clients.last_mut().unwrap();
                write_frame(&mut client.send, &LeafUpdate::Add { files: vec![entry] }).await?;
            }
            loop {
                let (hits, _) = ask(&asker, &[address], &query(&format!("zq{fresh_index}x"))).await?;
                if !hits.is_empty() {
                    break;
                }
                anyhow::ensure!(
                    published.elapsed() < Duration::from_secs(30),
                    "a newly published file was not searchable after 30 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            freshness.push(published.elapsed());
        }
    }
    let cycles = churn.await?;
    times.sort();
    freshness.sort();
    println!(
        "under churn ({:.1} leaf leave+rejoin/s): {} queries over QUIC, p50 {:?}, p99 {:?}; new file searchable after p50 {:?}, max {:?}; supernode RSS {:.0} MiB",
        cycles as f64 / churn_seconds as f64,
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&freshness, 0.5),
        freshness.last().copied().unwrap_or_default(),
        rss_mib(pid)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let leaves = args.first().copied().unwrap_or(3000);
    let files_per_leaf = args.get(1).copied().unwrap_or(1000);
    let churn_seconds = args.get(2).copied().unwrap_or(20) as u64;
    // Every simulated leaf is an endpoint in this process: its UDP socket
    // and the second handle on it that hole punching sends from.
    let needed = 2 * leaves as u64 + 1024;
    if let Some(limit) = open_files_limit() {
        anyhow::ensure!(
            limit >= needed,
            "{leaves} leaves need about {needed} open files in this process, and the limit is {limit}: \
             run `ulimit -n {}` first",
            needed.next_power_of_two()
        );
    }
    part_one(leaves, files_per_leaf);
    part_two(leaves, files_per_leaf, churn_seconds).await
}

/// Asks `supernodes` from `endpoint`; the hits and who answered.
async fn ask(
    endpoint: &canopy_common::net::Endpoint,
    supernodes: &[PeerAddr],
    query: &Query,
) -> anyhow::Result<(Vec<canopy_common::proto::Hit>, Option<PeerAddr>)> {
    let answer = Searcher::one_shot(endpoint.clone(), supernodes.to_vec())
        .search(query, &mut |_| {})
        .await?;
    Ok((answer.hits, answer.answered))
}

/// This process's soft limit on open files (Linux), if known.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
