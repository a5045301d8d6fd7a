//! Helpers for the end-to-end tests in `tests/tests/`: real nodes, real
//! QUIC on loopback, real files on disk.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use canopy_common::net::{read_frame, write_frame};
use canopy_common::net::{Endpoint, EndpointConfig, NodeKey};
use canopy_common::proto::{
    ContentHash, Hello, Hit, PeerAddr, Query, Request, SessionNotice, MAX_CONTROL_FRAME,
};
use canopy_node::download::{DownloadError, DownloadOptions, DownloadReport};
use canopy_node::leaf::LeafStatus;
use canopy_node::searcher::{SearchError, Searcher};
use canopy_node::state::TransferLimits;
use canopy_node::{Node, NodeConfig};

pub const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Deterministic bytes that differ at every position within a block, so a
/// misplaced block cannot pass for the right one.
pub fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8 ^ (i >> 16) as u8).collect()
}

/// A node sharing one folder, plus the temporary folders it lives in.
pub struct Sharer {
    pub node: Node,
    pub share_dir: PathBuf,
    _dirs: tempfile::TempDir,
}

/// Starts a node that shares `files` (name, bytes).
pub async fn start_sharer(files: &[(&str, Vec<u8>)]) -> Sharer {
    start_sharer_with(files, TransferLimits::default()).await
}

/// Starts a node that shares `files` with the given upload limits.
pub async fn start_sharer_with(files: &[(&str, Vec<u8>)], upload: TransferLimits) -> Sharer {
    let dirs = tempfile::tempdir().unwrap();
    let share_dir = dirs.path().join("share");
    std::fs::create_dir_all(&share_dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(share_dir.join(name), bytes).unwrap();
    }
    let mut config = NodeConfig::new(dirs.path().join("data"), LOOPBACK).sharing(share_dir.clone());
    config.upload = upload;
    let node = Node::start(config).await.expect("sharer starts");
    Sharer {
        node,
        share_dir,
        _dirs: dirs,
    }
}

/// A node that shares nothing, for downloading.
pub struct Downloader {
    pub node: Node,
    pub dir: tempfile::TempDir,
}

pub async fn start_downloader() -> Downloader {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig::new(dir.path().join("data"), LOOPBACK))
        .await
        .expect("downloader starts");
    Downloader { node, dir }
}

impl Downloader {
    /// Fetches `hash` from `sources` into `name` inside the downloader's folder.
    pub async fn fetch(
        &self,
        hash: ContentHash,
        sources: Vec<PeerAddr>,
        name: &str,
        options: DownloadOptions,
    ) -> Result<DownloadReport, DownloadError> {
        let output = self.dir.path().join(name);
        self.node.download(hash, &output, sources, options).wait().await
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A bare endpoint with a fresh identity, for speaking the protocol by hand.
pub fn client() -> Endpoint {
    Endpoint::bind(NodeKey::generate().unwrap(), LOOPBACK, &EndpointConfig::default()).unwrap()
}

/// Lists the files in `dir` (names only), sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A folder of files that many nodes can share at once.
pub struct Library {
    pub dir: tempfile::TempDir,
}

impl Library {
    /// A library holding one file `name` with `bytes`.
    pub fn with_file(name: &str, bytes: &[u8]) -> Library {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), bytes).unwrap();
        Library { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A node sharing a [`Library`], with its own data folder.
pub struct Peer {
    pub node: Node,
    _data: tempfile::TempDir,
}

/// A minimal MP3 with an ID3v1 tag naming the artist (title "Track 1").
pub fn tagged_mp3(artist: &str) -> Vec<u8> {
    let mut bytes = vec![0xffu8; 2000];
    let mut tag = vec![0u8; 128];
    tag[..3].copy_from_slice(b"TAG");
    tag[3..10].copy_from_slice(b"Track 1");
    tag[33..33 + artist.len()].copy_from_slice(artist.as_bytes());
    bytes.extend(tag);
    bytes
}

/// Starts `count` nodes that all share `library`, each with `upload` limits.
pub async fn start_peers(library: &Library, count: usize, upload: TransferLimits) -> Vec<Peer> {
    let mut peers = Vec::with_capacity(count);
    for _ in 0..count {
        let data = tempfile::tempdir().unwrap();
        let mut config =
            NodeConfig::new(data.path().to_path_buf(), LOOPBACK).sharing(library.path().to_path_buf());
        config.upload = upload.clone();
        let node = Node::start(config).await.expect("peer starts");
        peers.push(Peer { node, _data: data });
    }
    peers
}

/// Upload limits with a rate cap in bytes per second.
pub fn capped(bytes_per_second: u64) -> TransferLimits {
    TransferLimits {
        max_upload_rate: Some(bytes_per_second),
        ..TransferLimits::default()
    }
}

/// Bytes a node has uploaded so far.
pub fn uploaded(node: &Node) -> u64 {
    node.stats().bytes_sent.load(std::sync::atomic::Ordering::Relaxed)
}

/// A folder `share` inside `dir` holding `files` (name, bytes).
fn share_folder(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let share = dir.join("share");
    std::fs::create_dir_all(&share).unwrap();
    for (name, bytes) in files {
        std::fs::write(share.join(name), bytes).unwrap();
    }
    share
}

/// Starts a leaf joined to `supernode` (keeping `sessions` supernodes) that
/// shares `files`, and waits until every joined supernode was told of them.
pub async fn start_leaf(supernode: PeerAddr, sessions: usize, files: &[(&str, &[u8])]) -> Peer {
    let data = tempfile::tempdir().unwrap();
    let share = share_folder(data.path(), files);
    let mut config = NodeConfig::new(data.path().join("data"), LOOPBACK).sharing(share);
    config.bootstrap = vec![supernode];
    config.leaf_sessions = sessions;
    let node = Node::start(config).await.expect("leaf starts");
    let mut status = node.leaf_status();
    let expected = files.len();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        status.wait_for(|s: &LeafStatus| s.published(expected)),
    )
    .await
    .expect("leaf joined and published in time")
    .unwrap();
    Peer { node, _data: data }
}

/// Asks the first of `supernodes` that answers, from `endpoint`; returns
/// its hits and who answered.
pub async fn ask(
    endpoint: &Endpoint,
    supernodes: &[PeerAddr],
    query: &Query,
) -> Result<(Vec<Hit>, Option<PeerAddr>), SearchError> {
    let answer = Searcher::one_shot(endpoint.clone(), supernodes.to_vec())
        .search(query, &mut |_| {})
        .await?;
    Ok((answer.hits, answer.answered))
}

/// Searches through `supernode` until `accept` holds (index commits are
/// batched, floods take a moment); fails the test after about 10 s.
pub async fn search_until(supernode: PeerAddr, query: &Query, accept: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
    let asker = Searcher::one_shot(client(), vec![supernode]);
    for _ in 0..100 {
        let hits = asker.search(query, &mut |_| {}).await.unwrap().hits;
        if accept(&hits) {
            return hits;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("search for {:?} never gave the expected hits", query.text);
}

/// A private network's settings for tests: key in `key_file`, re-read
/// every 100 ms so changes show quickly.
pub fn network(name: &str, key_file: &Path) -> canopy_node::network::NetworkSettings {
    let mut settings =
        canopy_node::network::NetworkSettings::with_key(name.parse().unwrap(), key_file.to_path_buf());
    settings.reload_every = std::time::Duration::from_millis(100);
    settings
}

/// Writes a fresh random network key into `dir/name.key` and returns the path.
pub fn new_key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.key"));
    let key = canopy_common::proto::network::NetworkKey(canopy_common::net::random_bytes());
    std::fs::write(&path, key.to_hex()).unwrap();
    path
}

/// A node in a network (`None`: the public one) sharing some files.
pub struct Member {
    pub node: Node,
    _data: tempfile::TempDir,
}

/// Starts a node of `network` sharing `files`: a supernode when `join` is
/// `None`, else a leaf joined to `join` and waited for until published.
pub async fn start_member(
    network: Option<canopy_node::network::NetworkSettings>,
    join: Option<PeerAddr>,
    files: &[(&str, &[u8])],
) -> Member {
    let data = tempfile::tempdir().unwrap();
    let share = share_folder(data.path(), files);
    let mut config = NodeConfig::new(data.path().join("data"), LOOPBACK).sharing(share);
    config.network = network;
    match join {
        None => {
            config.supernode = Some(canopy_supernode::SupernodeConfig::for_this_machine(Some(
                data.path().join("index"),
            )))
        }
        Some(supernode) => config.bootstrap = vec![supernode],
    }
    let node = Node::start(config).await.expect("member starts");
    if join.is_some() {
        wait_published(&node, files.len()).await;
    }
    Member { node, _data: data }
}

/// Waits until `node`'s leaf session has published `files` files.
pub async fn wait_published(node: &Node, files: usize) {
    let mut status = node.leaf_status();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        status.wait_for(|s: &LeafStatus| s.published(files)),
    )
    .await
    .expect("leaf joined and published in time")
    .unwrap();
}

/// Searches through `supernode` from `endpoint` until `accept` holds;
/// fails the test after about 10 s.
pub async fn search_from_until(
    endpoint: &Endpoint,
    supernode: PeerAddr,
    query: &Query,
    accept: impl Fn(&[Hit]) -> bool,
) -> Vec<Hit> {
    let asker = Searcher::one_shot(endpoint.clone(), vec![supernode]);
    for _ in 0..100 {
        if let Ok(answer) = asker.search(query, &mut |_| {}).await {
            let hits = answer.hits;
            if accept(&hits) {
                return hits;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("search for {:?} never gave the expected hits", query.text);
}

impl Member {
    /// A member from a node started by hand and the folder it lives in.
    pub fn from_parts(node: Node, data: tempfile::TempDir) -> Member {
        Member { node, _data: data }
    }
}

/// Waits until `condition` holds, checking every 50 ms; fails the test
/// naming `what` after 20 s.
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Forwards UDP between one client and `target`, holding every datagram
/// `delay` each way: a supernode on a long path, on loopback.
pub async fn slow_path_to(target: std::net::SocketAddr, delay: std::time::Duration) -> std::net::SocketAddr {
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    relay(target, delay, open).await
}

/// A path to `target` that can be cut: while the returned switch is
/// `false`, every datagram either way is dropped (a source whose link went
/// dead without a word).
pub async fn cuttable_path_to(
    target: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    (relay(target, std::time::Duration::ZERO, open.clone()).await, open)
}

async fn relay(
    target: std::net::SocketAddr,
    delay: std::time::Duration,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    let socket = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut client = None;
        let mut buffer = vec![0u8; 65_536];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            let to = if from == target {
                match client {
                    Some(client) => client,
                    None => continue,
                }
            } else {
                client = Some(from);
                target
            };
            if !open.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            let (socket, datagram) = (socket.clone(), buffer[..len].to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&datagram, to).await;
            });
        }
    });
    address
}

/// Asks `supernode` by hand, from `endpoint`, to take us as a leaf: the
/// session's connection, its streams and the supernode's first notice.
pub async fn join_by_hand(
    endpoint: &Endpoint,
    supernode: PeerAddr,
) -> (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    SessionNotice,
) {
    let connection = endpoint.connect(&supernode).await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let hello = Hello {
        listen: vec![],
        accepts_inbound: false,
        agent: "test".into(),
    };
    write_frame(&mut send, &Request::Join(hello)).await.unwrap();
    let notice = read_frame::<SessionNotice>(&mut recv, MAX_CONTROL_FRAME)
        .await
        .unwrap();
    (connection, send, recv, notice)
}

/// Starts a supernode on loopback whose proof-of-possession checks run as
/// `possession` says.
pub async fn supernode_checking(
    possession: canopy_supernode::possession::PossessionConfig,
) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK);
    let mut settings = canopy_supernode::SupernodeConfig::for_this_machine(None);
    settings.possession = possession;
    config.supernode = Some(settings);
    (Node::start(config).await.unwrap(), dir)
}
