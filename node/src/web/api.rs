//! The desktop app's HTTP side: the page and its JSON API (documented in
//! `docs/API.md`). Every request is checked first (`App::admit`): a
//! loopback client naming a loopback host, or anyone with the password
//! when remote access is configured; then every `/api` request must carry
//! the API key.

use super::play::playable;
use crate::votes::{VerdictArg, Votes};
use canopy_common::proto::credence::Verdict;
use canopy_common::proto::wire::MAX_HASHES_PER_NOTES_ASK;
use canopy_common::sync::{Lock, ReadWrite};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use canopy_common::proto::link::Link;
use canopy_common::proto::network::{Invite, NetworkError, NetworkName};
use canopy_common::proto::search::FileKind;
use canopy_common::proto::{ContentHash, Hit, PeerAddr, PeerId, Query};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use super::auth::{basic_auth_matches, is_loopback_host, same_secret};
use super::events::{Event, Events};
use super::http::{Handler, Request, Response};
use super::links::{link_for, parse_pasted};
use super::settings::{self, Change, EditableSettings};
use crate::download_manager::{Downloads, DownloadsError};
use crate::folders::{FolderError, Folders};
use crate::groups;
use crate::leaf::LeafStatus;
use crate::searcher::Searcher;
use crate::state::NodeState;

/// Searches running at once.
const MAX_SEARCHES: usize = 4;
/// Search results remembered, so a download can start from one by hash.
const RECENT_HITS: usize = 2000;
/// How often live events are sent.
const TICK: Duration = Duration::from_millis(500);
/// Shared files listed at most by `GET /api/shares/files`.
const MAX_LISTED_FILES: usize = 5000;

/// Everything the app reads and changes.
pub struct App {
    pub key: String,
    /// Remote access password (`None`: loopback only).
    pub password: Option<String>,
    pub context: Arc<NodeState>,
    pub leaf_status: watch::Receiver<LeafStatus>,
    pub peer: PeerAddr,
    pub started: Instant,
    pub role_reason: String,
    pub downloads: Downloads,
    pub folders: Arc<Folders>,
    pub searcher: Searcher,
    /// The user's votes on files, and the publishers it trusts.
    pub votes: Arc<Votes>,
    /// The private groups this node runs, by name: their searches and
    /// downloads ([`App::add_group`]).
    group_sides: RwLock<BTreeMap<String, GroupSide>>,
    pub events: Events,
    /// The settings in force (the download folder is read live).
    pub settings: EditableSettings,
    pub settings_file: PathBuf,
    /// The gateway's address, once it listens.
    pub gateway: OnceLock<SocketAddr>,
    recent: Mutex<VecDeque<Hit>>,
    searches: Arc<Semaphore>,
    next_search: AtomicU64,
    traffic: Mutex<Traffic>,
}

/// The last traffic sample, for rates.
struct Traffic {
    at: Instant,
    sent: u64,
    received: u64,
    up: f64,
    down: f64,
}

/// The parts of a running node the app is built from.
/// A private group this node runs, as the app uses it.
#[derive(Clone)]
pub struct GroupSide {
    pub searcher: Searcher,
    pub downloads: Downloads,
}

pub struct AppParts {
    pub key: String,
    pub password: Option<String>,
    pub context: Arc<NodeState>,
    pub leaf_status: watch::Receiver<LeafStatus>,
    pub peer: PeerAddr,
    pub role_reason: String,
    pub downloads: Downloads,
    pub folders: Arc<Folders>,
    pub searcher: Searcher,
    pub settings: EditableSettings,
    pub settings_file: PathBuf,
    pub votes: Arc<Votes>,
}

impl App {
    pub fn new(parts: AppParts) -> App {
        // The queue's limit is a setting like the others (flag, config
        // file, or a change saved in the app).
        parts.downloads.set_max_active(
            parts
                .settings
                .max_active_downloads
                .unwrap_or(crate::download_manager::DEFAULT_MAX_ACTIVE),
        );
        App {
            key: parts.key,
            password: parts.password,
            context: parts.context,
            leaf_status: parts.leaf_status,
            peer: parts.peer,
            started: Instant::now(),
            role_reason: parts.role_reason,
            downloads: parts.downloads,
            folders: parts.folders,
            searcher: parts.searcher,
            votes: parts.votes,
            group_sides: RwLock::default(),
            events: Events::default(),
            settings: parts.settings,
            settings_file: parts.settings_file,
            gateway: OnceLock::new(),
            recent: Mutex::default(),
            searches: Arc::new(Semaphore::new(MAX_SEARCHES)),
            next_search: AtomicU64::new(1),
            traffic: Mutex::new(Traffic {
                at: Instant::now(),
                sent: 0,
                received: 0,
                up: 0.0,
                down: 0.0,
            }),
        }
    }

    /// Whether this client may talk to the app at all (see the module doc).
    fn admit(&self, request: &Request) -> Result<(), Response> {
        let host = request.header("host").unwrap_or("");
        if request.peer.ip().is_loopback() && is_loopback_host(host) {
            return Ok(());
        }
        match &self.password {
            Some(password) if basic_auth_matches(request.header("authorization"), password) => Ok(()),
            Some(_) => Err(Response::text(401, "Unauthorized", "the password is needed\n")
                .with_header("WWW-Authenticate", "Basic realm=\"canopy\", charset=\"UTF-8\"")),
            None => Err(Response::text(
                403,
                "Forbidden",
                "this page answers only to http://127.0.0.1 or http://localhost\n",
            )),
        }
    }

    /// Whether an `/api` request carries the key.
    fn has_key(&self, request: &Request) -> bool {
        let given = request.header("x-api-key").map(str::to_string).or_else(|| {
            // Event sources and media elements cannot send headers.
            (request.path == "/api/events" || request.path.starts_with("/api/play/"))
                .then(|| request.param("key"))
                .flatten()
        });
        given.is_some_and(|given| same_secret(&given, &self.key))
    }

    async fn route(self: &Arc<Self>, request: &Request) -> Result<Response, Response> {
        let method = request.method.as_str();
        let path = request.path.as_str();
        if !path.starts_with("/api/") {
            return super::assets::page(method, path, &self.key);
        }
        if !self.has_key(request) {
            return Err(Response::error(
                403,
                "Forbidden",
                "missing or wrong API key (X-API-Key header)",
            ));
        }
        let segments: Vec<&str> = path["/api/".len()..].split('/').collect();
        match (method, segments.as_slice()) {
            ("GET", ["status"]) => Ok(Response::json(&self.status())),
            ("POST", ["search"]) => self.search(request),
            ("GET", ["downloads"]) => Ok(Response::json(&self.downloads_json())),
            ("POST", ["downloads"]) => self.start_download(request),
            ("GET", ["downloads", hash]) => {
                let hash = parse_hash(hash)?;
                self.download_json(&hash)
                    .map(|d| Response::json(&d))
                    .ok_or_else(|| downloads_error(DownloadsError::Unknown(hash)))
            }
            ("GET", ["downloads", hash, "details"]) => {
                let hash = parse_hash(hash)?;
                self.manager_of(&hash)
                    .details(&hash)
                    .map(|d| Response::json(&with_link(d)))
                    .ok_or_else(|| downloads_error(DownloadsError::Unknown(hash)))
            }
            ("DELETE", ["downloads", hash]) => {
                let hash = parse_hash(hash)?;
                self.manager_of(&hash).cancel(&hash).map_err(downloads_error)?;
                Ok(Response::json(&json!({ "cancelled": hash.to_hex() })))
            }
            ("POST", ["downloads", hash, action]) => {
                let hash = parse_hash(hash)?;
                let downloads = self.manager_of(&hash);
                let mut opened = None;
                match *action {
                    "pause" => downloads.pause(&hash),
                    "resume" => downloads.resume(&hash),
                    "open" => downloads.open_folder(&hash).map(|folder| opened = Some(folder)),
                    "up" | "down" | "top" | "bottom" => {
                        let to = action.parse().expect("one of the four moves");
                        downloads.move_in_queue(&hash, to)
                    }
                    _ => return Err(Response::error(404, "Not Found", "no such action")),
                }
                .map_err(downloads_error)?;
                let mut answer = self.download_json(&hash).unwrap_or(Value::Null);
                if let Some(folder) = opened {
                    answer["opened"] = json!(folder);
                }
                Ok(Response::json(&answer))
            }
            ("POST", ["links"]) => self.add_links(request),
            ("POST", ["votes"]) => self.vote(request),
            ("GET", ["trust"]) => Ok(Response::json(&self.trusted())),
            ("POST", ["trust"]) => self.trust(request),
            ("GET", ["shares"]) => Ok(Response::json(&self.shares())),
            ("GET", ["shares", "files"]) => Ok(Response::json(&self.shared_files())),
            ("POST", ["shares"]) => {
                let body: FolderBody = parse_body(request)?;
                self.folders.add(&body.path).map_err(folder_error)?;
                Ok(Response::json_status(201, "Created", &self.shares()))
            }
            ("DELETE", ["shares"]) => {
                let body: FolderBody = parse_body(request)?;
                self.folders.remove(&body.path).map_err(folder_error)?;
                Ok(Response::json(&self.shares()))
            }
            ("GET", ["groups"]) => Ok(Response::json(&self.groups()?)),
            ("POST", ["groups"]) => self.new_group(request),
            ("POST", ["groups", "join"]) => self.join_group(request),
            ("GET", ["groups", name, "invite"]) => self.group_invite(name),
            ("GET", ["settings"]) => Ok(Response::json(&self.settings())),
            ("PUT", ["settings"]) => self.change_settings(request),
            (
                _,
                ["status" | "search" | "downloads" | "links" | "shares" | "settings" | "events" | "groups"
                | "votes" | "trust", ..],
            ) => Err(Response::error(
                405,
                "Method Not Allowed",
                "method not allowed here",
            )),
            _ => Err(Response::error(404, "Not Found", "no such endpoint")),
        }
    }

    /// `GET /api/status`.
    pub fn status(&self) -> Value {
        let supernode = self.context.supernode();
        let leaf = self.leaf_status.borrow().clone();
        let stats = &self.context.stats;
        let (sent, received) = (
            stats.bytes_sent.load(Ordering::Relaxed),
            stats.bytes_received.load(Ordering::Relaxed),
        );
        let (up, down) = {
            let mut traffic = self.traffic.locked();
            let elapsed = traffic.at.elapsed().as_secs_f64();
            if elapsed >= 0.9 {
                traffic.up = sent.saturating_sub(traffic.sent) as f64 / elapsed;
                traffic.down = received.saturating_sub(traffic.received) as f64 / elapsed;
                *traffic = Traffic {
                    at: Instant::now(),
                    sent,
                    received,
                    ..*traffic
                };
            }
            (traffic.up, traffic.down)
        };
        let (files, bytes) = self.context.shares.totals();
        let (role, leaves, max_leaves, neighbours, documents) = match &supernode {
            Some(s) => (
                "supernode",
                s.leaf_count(),
                s.max_leaves(),
                s.overlay().map(|o| o.neighbours()).unwrap_or_default(),
                s.index().len(),
            ),
            None => ("leaf", 0, 0, Vec::new(), 0),
        };
        let reason = if self.role_reason.starts_with(role) || self.role_reason.is_empty() {
            self.role_reason.clone()
        } else {
            format!(
                "{role} since a change at run time (at start: {})",
                self.role_reason
            )
        };
        // Nobody to publish to or search with: the app says so, not "live".
        let alone = match &supernode {
            Some(_) => leaves == 0 && neighbours.is_empty(),
            None => leaf.joined.is_empty(),
        };
        let alone_text = match (&supernode, alone) {
            (_, false) => String::new(),
            (Some(_), true) => format!(
                "Alone so far: no leaf and no other supernode has found this node. Other machines on this \
                 network find it by themselves; elsewhere, start them with --bootstrap {}.",
                self.peer
            ),
            (None, true) => "Not connected: no supernode joined, so nothing is published or searched. Start \
                 another node on this network, or this one with --bootstrap PEERID@HOST:PORT."
                .to_string(),
        };
        let reachability = self.context.reach.locked().clone();
        json!({
            "alone": alone,
            "alone_text": alone_text,
            "peer_id": self.peer.id.to_string(),
            "reach": {
                "how": reachability.reach().label(),
                "nat": reachability.kind().label(),
                "outside": reachability.outside().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "mapped": reachability.mapped.map(|forwarded| forwarded.external.to_string()),
                "mapped_by": reachability.mapped.map(|forwarded| forwarded.protocol.label()),
                "text": reachability.describe(),
            },
            "address": self.peer.to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "role": role,
            "role_reason": reason,
            "uptime_seconds": self.started.elapsed().as_secs(),
            "supernodes": leaf.joined.values().map(|(addr, published)| json!({
                "id": addr.id.to_string(), "address": addr.to_string(), "published": published,
            })).collect::<Vec<_>>(),
            "last_error": leaf.last_error,
            "leaves": leaves,
            "max_leaves": max_leaves,
            "neighbours": neighbours.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "index_documents": documents,
            "shared": { "files": files, "bytes": bytes },
            "traffic": { "uploaded": sent, "downloaded": received, "upload_rate": up, "download_rate": down },
            "gateway": self.gateway.get().map(|addr| format!("http://{addr}/content/")),
        })
    }

    /// `GET /api/shares`.
    pub fn shares(&self) -> Value {
        let files = self.context.shares.list();
        let folders: Vec<Value> = self
            .folders
            .list()
            .into_iter()
            .map(|folder| {
                let inside = files.iter().filter(|f| f.path.starts_with(&folder));
                let (count, bytes) = inside.fold((0u64, 0u64), |(n, b), f| (n + 1, b + f.size));
                json!({ "path": folder, "files": count, "bytes": bytes, "exists": folder.is_dir() })
            })
            .collect();
        let progress = &self.context.shares.progress;
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        json!({
            "folders": folders,
            "files": files.len(),
            "bytes": files.iter().map(|f| f.size).sum::<u64>(),
            "scanning": progress.scanning.load(Ordering::Relaxed),
            "hashing": {
                "files_to_hash": load(&progress.files_to_hash),
                "files_hashed": load(&progress.files_hashed),
                "bytes_to_hash": load(&progress.bytes_to_hash),
                "bytes_hashed": load(&progress.bytes_hashed),
            },
        })
    }

    /// `GET /api/settings`.
    fn settings(&self) -> Value {
        let mut shown = self.settings.clone();
        shown.download_dir = Some(self.downloads.folder());
        (shown.max_upload_rate, shown.max_download_rate) = self.context.rates();
        shown.max_active_downloads = Some(self.downloads.max_active());
        json!({
            "in_force": shown,
            "saved": settings::load(&self.settings_file),
        })
    }

    fn change_settings(&self, request: &Request) -> Result<Response, Response> {
        let change: Change = parse_body(request)?;
        let restart = change
            .validate()
            .map_err(|e| Response::error(400, "Bad Request", e))?;
        if let Some(Some(dir)) = &change.download_dir {
            self.downloads.set_folder(dir.clone()).map_err(downloads_error)?;
            for side in self.group_sides.read_locked().values() {
                let _ = side.downloads.set_folder(dir.clone());
            }
        }
        if change.max_upload_rate.is_some() || change.max_download_rate.is_some() {
            let (up, down) = self.context.rates();
            self.context.set_rates(
                change.max_upload_rate.unwrap_or(up),
                change.max_download_rate.unwrap_or(down),
            );
        }
        if let Some(limit) = change.max_active_downloads {
            let limit = limit.unwrap_or(crate::download_manager::DEFAULT_MAX_ACTIVE);
            self.downloads.set_max_active(limit);
            for side in self.group_sides.read_locked().values() {
                side.downloads.set_max_active(limit);
            }
        }
        let mut saved = settings::load(&self.settings_file);
        change.apply(&mut saved);
        settings::save(&self.settings_file, &saved)
            .map_err(|e| Response::error(500, "Internal Server Error", e))?;
        let mut answer = self.settings();
        answer["restart_needed"] = json!(restart);
        Ok(Response::json(&answer))
    }

    /// The data folder the groups live in (`DATA_DIR/networks/NAME`), or
    /// why there is none: a node run with `--network` is in that one
    /// network only, and its data folder is the network's.
    fn groups_home(&self) -> Result<PathBuf, Response> {
        if self.context.membership.get().is_some() {
            return Err(Response::error(
                409,
                "Conflict",
                "this node runs in one private network only (--network); manage groups from the node \
                 that runs the public network",
            ));
        }
        self.settings_file
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| Response::error(500, "Internal Server Error", "no data folder"))
    }

    /// `GET /api/groups`: the groups this node is in, each with its port,
    /// role, shared folders and whether it runs now (a group made or
    /// joined since `canopy run` started runs from its next start).
    fn groups(&self) -> Result<Value, Response> {
        let home = self.groups_home()?;
        let listed: Vec<Value> = groups::list(&home)
            .iter()
            .map(|group| self.group_json(group))
            .collect();
        Ok(json!({ "groups": listed }))
    }

    fn group_json(&self, group: &groups::Group) -> Value {
        // Running now: `canopy run` started it and attached it here.
        let running = (self.group_sides.read_locked()).contains_key(group.name.as_str());
        json!({
            "name": group.name.as_str(),
            "port": group.settings.listen.port(),
            "role": format!("{:?}", group.settings.role).to_lowercase(),
            "shared": group.settings.share,
            "members": group.settings.bootstrap.len(),
            "running": running,
            "restart_needed": !running,
        })
    }

    /// `POST /api/groups` `{"name": NAME}`: a new group with a fresh key and
    /// this node as its first supernode; answers with its invite.
    fn new_group(&self, request: &Request) -> Result<Response, Response> {
        let body: GroupBody = parse_body(request)?;
        let name: NetworkName =
            body.name.trim().parse().map_err(|error: NetworkError| {
                Response::error(400, "Bad Request", format!("name: {error}"))
            })?;
        let home = self.groups_home()?;
        let group = groups::create(&home, &name, &groups::GroupOptions::default())
            .map_err(|error| Response::error(409, "Conflict", format!("{error:#}")))?;
        let mut answer = self.group_json(&group);
        answer["invite"] = self.invite_json(&group)?;
        Ok(Response::json_status(201, "Created", &answer))
    }

    /// `POST /api/groups/join` `{"invite": "canopy-group:…"}`: joins (or,
    /// with a newer invite, re-keys) a group. A group that runs already
    /// takes the new key within seconds; a new one runs from the next start.
    fn join_group(&self, request: &Request) -> Result<Response, Response> {
        let body: InviteBody = parse_body(request)?;
        let invite: Invite =
            body.invite.trim().parse().map_err(|error: NetworkError| {
                Response::error(400, "Bad Request", format!("invite: {error}"))
            })?;
        let home = self.groups_home()?;
        let group = groups::join(&home, &invite, &groups::GroupOptions::default())
            .map_err(|error| Response::error(500, "Internal Server Error", format!("{error:#}")))?;
        Ok(Response::json(&self.group_json(&group)))
    }

    /// `GET /api/groups/NAME/invite`: the invite to send to a new member.
    fn group_invite(&self, name: &str) -> Result<Response, Response> {
        let name: NetworkName = name
            .parse()
            .map_err(|error: NetworkError| Response::error(400, "Bad Request", error))?;
        let home = self.groups_home()?;
        let group = groups::open(&home, &name)
            .map_err(|error| Response::error(404, "Not Found", format!("{error:#}")))?;
        Ok(Response::json(&self.invite_json(&group)?))
    }

    /// An invite naming this machine at the address others most likely
    /// reach it at, and a note when that is only loopback.
    fn invite_json(&self, group: &groups::Group) -> Result<Value, Response> {
        let host = groups::likely_host();
        let invite = group
            .invite(host)
            .map_err(|error| Response::error(500, "Internal Server Error", format!("{error:#}")))?;
        let note = host.is_loopback().then(|| {
            format!(
                "{host} reaches this machine only from itself: others need `canopy group invite {} --host YOUR_IP`",
                group.name
            )
        });
        Ok(json!({ "text": invite.to_string(), "host": host.to_string(), "note": note }))
    }

    /// `POST /api/search`: answers at once with an id; hits follow as events.
    fn search(self: &Arc<Self>, request: &Request) -> Result<Response, Response> {
        let body: SearchBody = parse_body(request)?;
        let mut query = Query::words(body.text.trim());
        if let Some(kind) = body.kind.as_deref().filter(|k| !k.is_empty()) {
            query.kind = Some(
                FileKind::from_str(kind)
                    .map_err(|_| Response::error(400, "Bad Request", "unknown file type"))?,
            );
        }
        query
            .check()
            .map_err(|reason| Response::error(400, "Bad Request", reason))?;
        let permit = self.searches.clone().try_acquire_owned().map_err(|_| {
            Response::error(
                429,
                "Too Many Requests",
                "too many searches at once; wait a moment",
            )
        })?;
        // Within a private group, or the public network.
        let group = body.group.filter(|name| !name.is_empty());
        let searcher = match &group {
            Some(name) => self.group_side(name)?.searcher,
            None => self.searcher.clone(),
        };
        let id = self.next_search.fetch_add(1, Ordering::Relaxed);
        let app = self.clone();
        tokio::spawn(async move {
            let mut found = 0usize;
            let result = searcher
                .search(&query, &mut |hit| {
                    found += 1;
                    app.remember(hit);
                    let mut shown = hit_json(hit);
                    shown["group"] = json!(group);
                    app.events
                        .publish("search-hit", &json!({ "search": id, "hit": shown }));
                })
                .await;
            let error = result.as_ref().err().map(|e| e.to_string());
            // Votes and publishers are the public network's.
            if let (Ok(answer), None) = (result, &group) {
                app.publish_ranking(id, answer.hits).await;
            }
            app.events.publish(
                "search-done",
                &json!({ "search": id, "hits": found, "error": error }),
            );
            drop(permit);
        });
        Ok(Response::json_status(202, "Accepted", &json!({ "search": id })))
    }

    /// After a search: learns what its supernodes know of the files found
    /// (votes, tags), ranks them for this user ([`Votes::rank`]) and tells
    /// the page (`search-ranked`: the order, each file's score, who
    /// vouched for it, whether the user trusts one of them, its tags).
    async fn publish_ranking(&self, id: u64, mut hits: Vec<Hit>) {
        let files: Vec<ContentHash> = hits.iter().map(|hit| hit.hash).collect();
        let mut tags = std::collections::HashMap::new();
        // The best-placed first, as many as four asks carry.
        for chunk in files.chunks(MAX_HASHES_PER_NOTES_ASK / 2).take(4) {
            let notes = self.searcher.gather_notes(&self.votes, chunk).await;
            tags.extend(notes.tags.into_iter().map(|file| (file.hash, file.tags)));
        }
        let best_placed = &files[..files.len().min(MAX_HASHES_PER_NOTES_ASK)];
        self.searcher.ask_met_voters(&self.votes, best_placed).await;
        let scores = self.votes.rank(&mut hits);
        let ranked: Vec<Value> = hits
            .iter()
            .zip(scores)
            .map(|(hit, score)| {
                let (publishers, trusted) = self.votes.publishers(hit);
                json!({
                    "hash": hit.hash.to_hex(),
                    "score": score.value,
                    "voters": score.voters,
                    "own": score.own.map(verdict_word),
                    "publishers": publishers.iter().map(PeerId::to_string).collect::<Vec<_>>(),
                    "trusted": trusted,
                    "tags": tags.get(&hit.hash).map(|pairs| {
                        pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>()
                    }),
                })
            })
            .collect();
        self.events
            .publish("search-ranked", &json!({ "search": id, "ranked": ranked }));
    }

    /// `POST /api/votes {"hash", "verdict": "up" | "down"}`: the user says
    /// whether a file was what its name said.
    fn vote(&self, request: &Request) -> Result<Response, Response> {
        let body: VoteBody = parse_body(request)?;
        let hash = parse_hash(&body.hash)?;
        let verdict = body
            .verdict
            .parse::<VerdictArg>()
            .map_err(|error| Response::error(400, "Bad Request", error))?
            .0;
        self.votes.cast(hash, verdict);
        // Pages show the vote on the download's row.
        self.events.publish("downloads", &self.downloads_json());
        Ok(Response::json(
            &json!({ "hash": hash.to_hex(), "vote": verdict_word(verdict) }),
        ))
    }

    fn trusted(&self) -> Value {
        let ids: Vec<String> = self.votes.trusted().iter().map(PeerId::to_string).collect();
        json!({ "trusted": ids })
    }

    /// `POST /api/trust {"publisher": PEERID, "trusted": bool}`.
    fn trust(&self, request: &Request) -> Result<Response, Response> {
        let body: TrustBody = parse_body(request)?;
        let publisher: PeerId = body
            .publisher
            .parse()
            .map_err(|_| Response::error(400, "Bad Request", "publisher: not a peer id"))?;
        self.votes
            .trust(publisher, body.trusted)
            .map_err(|error| Response::error(500, "Internal Server Error", error))?;
        Ok(Response::json(&self.trusted()))
    }

    fn remember(&self, hit: &Hit) {
        let mut recent = self.recent.locked();
        recent.retain(|known| known.hash != hit.hash);
        if recent.len() >= RECENT_HITS {
            recent.pop_front();
        }
        recent.push_back(hit.clone());
    }

    fn start_download(&self, request: &Request) -> Result<Response, Response> {
        let body: DownloadBody = parse_body(request)?;
        let hash = parse_hash(&body.hash)?;
        let hit = {
            let recent = self.recent.locked();
            recent.iter().find(|hit| hit.hash == hash).cloned()
        };
        let downloads = match body.group.as_deref().filter(|name| !name.is_empty()) {
            Some(name) => self.group_side(name)?.downloads,
            None => self.downloads.clone(),
        };
        downloads
            .add(hash, body.name.as_deref(), hit.as_ref())
            .map_err(downloads_error)?;
        Ok(Response::json_status(
            201,
            "Created",
            &self.download_json(&hash).unwrap_or(Value::Null),
        ))
    }

    /// `POST /api/links`: starts a download for each link or hash pasted.
    /// Items are handled one by one: the answer lists those started and
    /// those refused, with why (already listed, already here, not a link).
    fn add_links(&self, request: &Request) -> Result<Response, Response> {
        let body: LinksBody = parse_body(request)?;
        let (links, refused) =
            parse_pasted(&body.text).map_err(|error| Response::error(400, "Bad Request", error))?;
        let mut failed: Vec<Value> = refused
            .into_iter()
            .map(|item| json!({ "text": item.text, "error": item.error }))
            .collect();
        let mut added = Vec::new();
        for link in links {
            let name = link.file_name();
            let hit = {
                let recent = self.recent.locked();
                recent.iter().find(|hit| hit.hash == link.hash).cloned()
            }
            .or_else(|| hit_of_link(&link));
            match self.downloads.add(link.hash, name.as_deref(), hit.as_ref()) {
                Ok(()) => added.extend(self.download_json(&link.hash)),
                Err(error) => failed.push(json!({ "text": link.to_string(), "error": error.to_string() })),
            }
        }
        Ok(Response::json(&json!({ "added": added, "failed": failed })))
    }

    /// Every download as the API shows it: with its link.
    pub fn downloads_json(&self) -> Value {
        let public = self.downloads.list().into_iter();
        let mut list: Vec<Value> = public.map(|d| self.with_notes(d, None)).collect();
        for (name, side) in self.group_sides.read_locked().iter() {
            let group = side.downloads.list().into_iter();
            list.extend(group.map(|d| self.with_notes(d, Some(name))));
        }
        Value::Array(list)
    }

    fn download_json(&self, hash: &ContentHash) -> Option<Value> {
        if let Some(download) = self.downloads.get(hash) {
            return Some(self.with_notes(download, None));
        }
        let sides = self.group_sides.read_locked();
        let (name, side) = sides
            .iter()
            .find(|(_, side)| side.downloads.get(hash).is_some())?;
        Some(self.with_notes(side.downloads.get(hash)?, Some(name)))
    }

    /// The download manager that holds `hash`: a group's if one of them
    /// does, else the public network's (which answers "unknown").
    fn manager_of(&self, hash: &ContentHash) -> Downloads {
        if self.downloads.get(hash).is_none() {
            let sides = self.group_sides.read_locked();
            if let Some(side) = sides.values().find(|side| side.downloads.get(hash).is_some()) {
                return side.downloads.clone();
            }
        }
        self.downloads.clone()
    }

    /// Whether a group's downloads run, or changed since `seen` (which is
    /// brought up to date).
    fn group_downloads_moved(&self, seen: &mut u64) -> bool {
        let sides = self.group_sides.read_locked();
        let version: u64 = sides
            .values()
            .map(|side| *side.downloads.subscribe().borrow())
            .sum();
        let running = sides.values().any(|side| side.downloads.any_running());
        let moved = version != *seen;
        *seen = version;
        moved || running
    }

    /// Lets the app search and download within private group `name`
    /// ([`super::Services::attach_group`]).
    pub fn add_group(&self, name: &str, side: GroupSide) {
        self.group_sides.write_locked().insert(name.to_string(), side);
    }

    /// The running group called `name`.
    fn group_side(&self, name: &str) -> Result<GroupSide, Response> {
        let sides = self.group_sides.read_locked();
        sides.get(name).cloned().ok_or_else(|| {
            let reason =
                format!("group {name:?} does not run in this node (restart canopy run after joining it)");
            Response::error(404, "Not Found", reason)
        })
    }

    /// A download as the page shows it: with its link, the group it is
    /// fetched in (`None`: the public network), the user's vote on it, and
    /// whether it can be played while it downloads (from the public
    /// network: the player reads the public node's files).
    fn with_notes(&self, download: Value, group: Option<&str>) -> Value {
        let mut download = with_link(download);
        let hash = download["hash"]
            .as_str()
            .and_then(|hex| hex.parse::<ContentHash>().ok());
        if let (Some(hash), None) = (hash, group) {
            download["vote"] = json!(self.votes.own(&hash).map(verdict_word));
        }
        download["group"] = json!(group);
        download["playable"] = json!(group.is_none() && download["name"].as_str().is_some_and(playable));
        download
    }

    /// `GET /api/shares/files`: the files this node shares, by path, each
    /// with its link; at most [`MAX_LISTED_FILES`] (`truncated` says so).
    fn shared_files(&self) -> Value {
        let mut files = self.context.shares.list();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let total = files.len();
        let listed: Vec<Value> = files
            .iter()
            .take(MAX_LISTED_FILES)
            .map(|file| {
                let hash = file.hash();
                let name = file
                    .path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                json!({
                    "hash": hash.to_hex(),
                    "name": name,
                    "path": file.path,
                    "size": file.size,
                    "link": link_for(hash, Some(&name), Some(file.size)),
                })
            })
            .collect();
        json!({ "files": listed, "total": total, "truncated": total > MAX_LISTED_FILES })
    }

    /// The events a page gets first, so it starts with the whole picture.
    fn snapshot(&self) -> Vec<Event> {
        vec![
            Event {
                name: "status",
                data: self.status().to_string(),
            },
            Event {
                name: "downloads",
                data: self.downloads_json().to_string(),
            },
            Event {
                name: "shares",
                data: self.shares().to_string(),
            },
        ]
    }
}

impl Handler for Arc<App> {
    async fn handle(&self, request: Request, mut stream: TcpStream) {
        if let Err(refused) = self.admit(&request) {
            let _ = refused.send(&mut stream, request.method == "HEAD").await;
            return;
        }
        if request.method == "GET" && request.path == "/api/events" && self.has_key(&request) {
            self.events.stream(stream, self.snapshot()).await;
            return;
        }
        let playing = (request.path.strip_prefix("/api/play/"))
            .filter(|_| matches!(request.method.as_str(), "GET" | "HEAD") && self.has_key(&request))
            .and_then(|hex| hex.parse::<ContentHash>().ok());
        if let Some(hash) = playing {
            let (context, downloads) = (self.context.clone(), self.downloads.clone());
            super::play::serve(context, downloads, request, hash, stream).await;
            return;
        }
        let response = match self.route(&request).await {
            Ok(response) | Err(response) => response,
        };
        let _ = response.send(&mut stream, request.method == "HEAD").await;
    }
}

/// Sends live events while pages listen: downloads every tick while any
/// runs (and at every change), status and shares every other tick.
pub async fn publish_loop(app: Arc<App>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = app.downloads.subscribe();
    let mut folders = app.folders.subscribe();
    let mut folders_changed = false;
    let mut groups_seen = 0;
    let mut count: u64 = 0;
    loop {
        let mut changed = false;
        tokio::select! {
            _ = tick.tick() => {}
            result = changes.changed() => {
                if result.is_err() {
                    return;
                }
                changed = true;
            }
            result = folders.changed() => {
                if result.is_err() {
                    return;
                }
                folders_changed = true;
            }
        }
        if !app.events.has_clients() {
            continue;
        }
        count += 1;
        // Groups' downloads are looked at every tick (a change shows within
        // half a second); the public ones' changes wake the loop at once.
        let groups_moved = app.group_downloads_moved(&mut groups_seen);
        if changed || groups_moved || app.downloads.any_running() {
            app.events.publish("downloads", &app.downloads_json());
        }
        if count.is_multiple_of(2) || folders_changed {
            app.events.publish("status", &app.status());
            app.events.publish("shares", &app.shares());
            folders_changed = false;
        }
    }
}

/// A search result as the API shows it.
pub fn hit_json(hit: &Hit) -> Value {
    json!({
        "hash": hit.hash.to_hex(),
        "name": hit.name,
        "size": hit.size,
        "type": hit.kind.as_str(),
        "sources": hit.source_count.max((hit.sources.len() + hit.relayed.len()) as u32),
        "link": link_for(hit.hash, Some(&hit.name), Some(hit.size)),
        "playable": playable(&hit.name),
    })
}

/// A verdict as the API says it.
fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Authentic => "up",
        Verdict::Fake => "down",
    }
}

/// A download as the API shows it, with the link to copy for it.
fn with_link(mut download: Value) -> Value {
    let hash = download["hash"].as_str().and_then(|hex| hex.parse().ok());
    if let Some(hash) = hash {
        let link = link_for(hash, download["name"].as_str(), download["size"].as_u64());
        download["link"] = json!(link);
    }
    download
}

/// Sources a link names, as a search hit the download can start from.
/// `None` when it names none: a hash search finds them then.
fn hit_of_link(link: &Link) -> Option<Hit> {
    if link.sources.is_empty() {
        return None;
    }
    let name = link.file_name().unwrap_or_default();
    Some(Hit {
        hash: link.hash,
        size: link.size.unwrap_or(0),
        kind: FileKind::from_name(&name),
        name,
        sources: link.sources.clone(),
        source_count: link.sources.len() as u32,
        relayed: Vec::new(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    text: String,
    #[serde(default)]
    kind: Option<String>,
    /// A private group to search in (`None`: the public network).
    #[serde(default)]
    group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadBody {
    hash: String,
    #[serde(default)]
    name: Option<String>,
    /// The private group the search found it in (`None`: the public network).
    #[serde(default)]
    group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinksBody {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    hash: String,
    verdict: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustBody {
    publisher: String,
    trusted: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    invite: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FolderBody {
    path: PathBuf,
}

fn parse_body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, Response> {
    serde_json::from_slice(&request.body).map_err(|error| {
        let reason = match field_at_fault::<T>(&request.body) {
            Some((key, error)) => format!("{key}: {error}"),
            None => format!("bad JSON body: {error}"),
        };
        Response::error(400, "Bad Request", reason)
    })
}

/// For a JSON object that does not parse as `T`, the first key that does
/// not parse on its own, and why: a form can then say which field is wrong
/// rather than at which column.
fn field_at_fault<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<(String, serde_json::Error)> {
    let serde_json::Value::Object(fields) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    fields.into_iter().find_map(|(key, value)| {
        let alone = serde_json::Value::Object([(key.clone(), value)].into_iter().collect());
        // Alone, a key may only lack its siblings: that is not its fault.
        serde_json::from_value::<T>(alone)
            .err()
            .filter(|error| !error.to_string().starts_with("missing field"))
            .map(|error| (key, error))
    })
}

fn parse_hash(text: &str) -> Result<ContentHash, Response> {
    text.parse()
        .map_err(|_| Response::error(400, "Bad Request", "a content hash is 64 hex digits"))
}

fn downloads_error(error: DownloadsError) -> Response {
    let (status, reason) = match &error {
        DownloadsError::Unknown(_) => (404, "Not Found"),
        DownloadsError::Exists(_) | DownloadsError::AlreadyHave(_) | DownloadsError::WrongState { .. } => {
            (409, "Conflict")
        }
        DownloadsError::Full => (507, "Insufficient Storage"),
        DownloadsError::BadFolder(_) => (400, "Bad Request"),
        DownloadsError::Open { .. } => (500, "Internal Server Error"),
    };
    Response::error(status, reason, error)
}

fn folder_error(error: FolderError) -> Response {
    let (status, reason) = match &error {
        FolderError::NotShared(_) => (404, "Not Found"),
        FolderError::AlreadyShared(_) => (409, "Conflict"),
        FolderError::Save { .. } => (500, "Internal Server Error"),
        _ => (400, "Bad Request"),
    };
    Response::error(status, reason, error)
}
