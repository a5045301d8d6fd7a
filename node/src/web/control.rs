//! The node's local HTTP endpoint: Prometheus metrics at `/metrics`, read
//! by monitoring and by `canopy status`.
//!
//! It listens on loopback unless the operator names another address
//! (`--metrics HOST:PORT`), and writes the address it got into the data
//! folder (`control.addr`) so `canopy status` finds it. Requests are read
//! by the bounded server in [`super::http`]; only `GET` and `HEAD` are answered.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_common::proto::election::Profile;
use canopy_common::proto::nat::Reach;
use canopy_common::sync::Lock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::http::{self, Handler, Limits, Request, Response};
use crate::leaf::LeafStatus;
use crate::state::NodeState;

/// Loopback, any free port.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
/// Where the bound address is written, inside the data folder.
pub const ADDR_FILE: &str = "control.addr";
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// What the metrics describe: read-only handles on the running node.
#[derive(Clone)]
pub struct NodeView {
    pub context: Arc<NodeState>,
    pub leaf_status: watch::Receiver<LeafStatus>,
    /// What the start-up probe measured, if the role was elected.
    pub profile: Option<Profile>,
    pub started: Instant,
    /// Connection caps, for the refusal count.
    pub admission: Arc<crate::admission::Admission>,
}

/// Binds `addr`, records it in `data_dir` and serves until the task is dropped.
pub async fn start(
    addr: SocketAddr,
    data_dir: &Path,
    view: NodeView,
) -> std::io::Result<(SocketAddr, ServeTask)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let record = data_dir.join(ADDR_FILE);
    std::fs::write(&record, format!("{bound}\n"))?;
    let limits = Limits {
        max_body: 0,
        deadline: REQUEST_DEADLINE,
        max_connections: 32,
        ..Limits::default()
    };
    let task = tokio::spawn(http::serve(listener, Arc::new(MetricsHandler(view)), limits));
    Ok((bound, ServeTask { task, record }))
}

/// The running endpoint; stops (and removes its address record) when dropped.
pub struct ServeTask {
    task: tokio::task::JoinHandle<()>,
    record: PathBuf,
}

impl Drop for ServeTask {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.record);
    }
}

/// Answers `GET /metrics`, and nothing else.
struct MetricsHandler(NodeView);

impl Handler for MetricsHandler {
    async fn handle(&self, request: Request, mut stream: TcpStream) {
        let response = match (request.method.as_str(), request.path.as_str()) {
            ("GET" | "HEAD", "/metrics") => Response::new(
                200,
                "OK",
                "text/plain; version=0.0.4; charset=utf-8",
                metrics(&self.0),
            ),
            ("GET" | "HEAD", _) => Response::text(404, "Not Found", "not found\n"),
            _ => Response::text(405, "Method Not Allowed", "only GET\n").with_header("Allow", "GET, HEAD"),
        };
        let _ = response.send(&mut stream, request.method == "HEAD").await;
    }
}

/// Prometheus text exposition of the node's state now.
pub fn metrics(view: &NodeView) -> String {
    let mut out = Metrics::default();
    let context = &view.context;
    let supernode = context.supernode();
    out.gauge(
        "canopy_role",
        "The role this node plays now (1) and the one it does not (0).",
        &[
            ("role=\"supernode\"", supernode.is_some() as u64 as f64),
            ("role=\"leaf\"", supernode.is_none() as u64 as f64),
        ],
    );
    out.gauge(
        "canopy_uptime_seconds",
        "Seconds since the node started.",
        &[("", view.started.elapsed().as_secs_f64())],
    );
    let reachability = context.reach.locked().clone();
    let reached = reachability.reach();
    let reaches = [
        Reach::Direct,
        Reach::Mapped,
        Reach::Punch,
        Reach::PushOnly,
        Reach::Unknown,
    ]
    .map(|how| (format!("how=\"{}\"", how.label()), (reached == how) as u64 as f64));
    let samples: Vec<(&str, f64)> = reaches
        .iter()
        .map(|(label, value)| (label.as_str(), *value))
        .collect();
    out.gauge(
        "canopy_reach",
        "How peers reach this node (1): directly, on a port its router forwards, by a hole punch its supernode arranges, only by push (or relay), or not known yet.",
        &samples,
    );
    if let Some(forwarded) = reachability.mapped {
        let label = format!(
            "via=\"{}\",addr=\"{}\"",
            forwarded.protocol.label(),
            forwarded.external
        );
        out.gauge(
            "canopy_port_mapped",
            "The port the router forwards to this node (1), and the protocol it answered: PCP, NAT-PMP or UPnP-IGD.",
            &[(label.as_str(), 1.0)],
        );
    }
    let kind = format!("kind=\"{}\"", reachability.kind().label());
    out.gauge(
        "canopy_nat",
        "The router in front of this node as peers' observations tell: none, cone, symmetric or unknown.",
        &[(kind.as_str(), 1.0)],
    );
    let outside: Vec<String> = reachability
        .outside()
        .iter()
        .map(|addr| format!("addr=\"{addr}\""))
        .collect();
    let outside: Vec<(&str, f64)> = outside.iter().map(|label| (label.as_str(), 1.0)).collect();
    out.gauge(
        "canopy_outside_address",
        "Addresses peers see this node's packets come from, newest first (1 each).",
        &outside,
    );
    out.gauge(
        "canopy_address_observers",
        "Peers that told this node where they see it.",
        &[("", reachability.observations.observers() as f64)],
    );
    let (files, bytes) = context.shares.totals();
    out.gauge(
        "canopy_shared_files",
        "Files this node shares.",
        &[("", files as f64)],
    );
    out.gauge(
        "canopy_shared_bytes",
        "Bytes this node shares.",
        &[("", bytes as f64)],
    );
    let stats = &context.stats;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed) as f64;
    out.counter(
        "canopy_uploaded_bytes_total",
        "Content bytes sent to other peers.",
        load(&stats.bytes_sent),
    );
    out.counter(
        "canopy_downloaded_bytes_total",
        "Bytes received by downloads: content, duplicates and block layers.",
        load(&stats.bytes_received),
    );
    out.counter("canopy_requests_total", "Requests served.", load(&stats.requests));
    out.counter(
        "canopy_bad_frames_total",
        "Malformed or oversized frames received.",
        load(&stats.bad_frames),
    );
    out.counter(
        "canopy_busy_total",
        "Requests told to retry later (all upload slots, or the peer's share, taken).",
        load(&stats.busy),
    );
    out.counter(
        "canopy_connections_refused_total",
        "Connections refused: too many from one address or one peer.",
        load(&view.admission.refused),
    );
    let joined = view.leaf_status.borrow().joined.len();
    out.gauge(
        "canopy_supernodes_joined",
        "Supernodes this node is joined to as a leaf.",
        &[("", joined as f64)],
    );
    let (leaves, max_leaves, neighbours, documents) = match &supernode {
        Some(supernode) => (
            supernode.leaf_count(),
            supernode.max_leaves(),
            supernode.overlay().map_or(0, |o| o.neighbours().len()),
            supernode.index().len(),
        ),
        None => (0, 0, 0, 0),
    };
    out.gauge(
        "canopy_leaves",
        "Leaves joined to this supernode.",
        &[("", leaves as f64)],
    );
    out.gauge(
        "canopy_max_leaves",
        "Leaves this supernode takes at most.",
        &[("", max_leaves as f64)],
    );
    out.gauge(
        "canopy_neighbours",
        "Neighbour supernodes linked.",
        &[("", neighbours as f64)],
    );
    out.gauge(
        "canopy_index_documents",
        "Files in this supernode's index.",
        &[("", documents as f64)],
    );
    let relay = supernode.as_ref().map(|s| s.relay().stats());
    let relayed =
        |pick: fn(&canopy_supernode::relay::RelayStats) -> u64| relay.map_or(0.0, |r| pick(r) as f64);
    out.gauge(
        "canopy_relay_pairs",
        "Pairs of peers this supernode relays for now.",
        &[("", relayed(|r| r.open.load(Ordering::Relaxed) as u64))],
    );
    out.counter(
        "canopy_relay_pairs_total",
        "Relay pairs opened.",
        relayed(|r| r.opened.load(Ordering::Relaxed)),
    );
    out.counter(
        "canopy_relay_refused_total",
        "Relay requests refused (relaying off, or all pairs taken).",
        relayed(|r| r.refused.load(Ordering::Relaxed)),
    );
    out.counter(
        "canopy_relay_bytes_total",
        "Bytes forwarded between relayed peers.",
        relayed(|r| r.bytes.load(Ordering::Relaxed)),
    );
    out.counter(
        "canopy_relay_dropped_total",
        "Datagrams the relay did not forward: strangers, over the rate cap, or early.",
        relayed(|r| r.dropped.load(Ordering::Relaxed)),
    );
    let possession = supernode.as_ref().map(|s| s.possession_stats());
    let checked = |pick: fn(&canopy_supernode::possession::PossessionStats) -> &AtomicU64| {
        possession.map_or(0.0, |stats| pick(stats).load(Ordering::Relaxed) as f64)
    };
    out.family(
        "canopy_possession_checks_total",
        "Proof-of-possession checks of leaves (a random chunk of a published file with its proof), by outcome.",
        "counter",
        &[
            ("outcome=\"passed\"", checked(|s| &s.passed)),
            ("outcome=\"failed\"", checked(|s| &s.failed)),
        ],
    );
    out.counter(
        "canopy_possession_entries_dropped_total",
        "Index entries taken out because their leaf failed a proof-of-possession check.",
        checked(|s| &s.entries_dropped),
    );
    out.counter(
        "canopy_possession_leaves_dropped_total",
        "Leaves dropped (and kept out for a while) for failing proof-of-possession checks in a row.",
        checked(|s| &s.leaves_dropped),
    );
    let overlay = supernode.as_ref().and_then(|s| s.overlay().cloned());
    type Counter = fn(&canopy_supernode::overlay::OverlayStats) -> &AtomicU64;
    let overlay_counters: [(&str, &str, Counter); 14] = [
        (
            "canopy_searches_total",
            "Searches our leaves asked this supernode to run.",
            |s| &s.searches,
        ),
        (
            "canopy_queries_received_total",
            "Queries received from neighbour supernodes.",
            |s| &s.queries_received,
        ),
        (
            "canopy_queries_forwarded_total",
            "Queries sent on to neighbour supernodes.",
            |s| &s.queries_forwarded,
        ),
        (
            "canopy_queries_not_forwarded_total",
            "Queries answered locally but not passed on: over the forwarding cap.",
            |s| &s.queries_capped,
        ),
        (
            "canopy_duplicate_queries_total",
            "Queries dropped because they were seen before.",
            |s| &s.duplicates_dropped,
        ),
        (
            "canopy_hits_total",
            "Hits this supernode's index produced for queries.",
            |s| &s.hits_found,
        ),
        (
            "canopy_bad_overlay_messages_total",
            "Messages from neighbour supernodes that broke the caps (each closed its link).",
            |s| &s.bad_messages,
        ),
        (
            "canopy_query_copies_broadcast_total",
            "Query copies sent to neighbours without a keyword table check.",
            |s| &s.copies_broadcast,
        ),
        (
            "canopy_query_copies_routed_total",
            "Query copies sent because a neighbour's keyword tables may match within their reach.",
            |s| &s.copies_routed,
        ),
        (
            "canopy_query_copies_pruned_total",
            "Query copies not sent: the neighbour's keyword tables rule out everything within reach.",
            |s| &s.copies_pruned,
        ),
        (
            "canopy_dynamic_probes_total",
            "Query copies sent by our leaves' dynamic searches.",
            |s| &s.probes_sent,
        ),
        (
            "canopy_table_update_bytes_sent_total",
            "Keyword table updates sent to neighbours, in bytes on the wire.",
            |s| &s.table_bytes_sent,
        ),
        (
            "canopy_table_update_bytes_received_total",
            "Keyword table updates received from neighbours, in bytes on the wire.",
            |s| &s.table_bytes_received,
        ),
        (
            "canopy_table_updates_refused_total",
            "Keyword table updates refused (that neighbour's tables were forgotten).",
            |s| &s.table_updates_refused,
        ),
    ];
    for (name, help, counter) in overlay_counters {
        let value = overlay.as_ref().map_or(0.0, |o| load(counter(&o.stats)));
        out.counter(name, help, value);
    }
    if let Some(rss) = resident_memory() {
        out.gauge(
            "canopy_memory_resident_bytes",
            "Resident memory of the process.",
            &[("", rss as f64)],
        );
    }
    if let Some(profile) = &view.profile {
        let rate = |rate: Option<u64>| rate.map_or(f64::NAN, |r| r as f64);
        out.gauge(
            "canopy_probe_bytes_per_second",
            "Bandwidth measured by the start-up probe (NaN: not measured).",
            &[
                ("direction=\"up\"", rate(profile.upload)),
                ("direction=\"down\"", rate(profile.download)),
            ],
        );
        let reachable = match profile.reachable {
            Some(true) => 1.0,
            Some(false) => 0.0,
            None => f64::NAN,
        };
        out.gauge(
            "canopy_probe_reachable",
            "Whether a peer could dial back to this node (NaN: not tested).",
            &[("", reachable)],
        );
    }
    out.text
}

#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    fn gauge(&mut self, name: &str, help: &str, samples: &[(&str, f64)]) {
        self.family(name, help, "gauge", samples);
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, "counter", &[("", value)]);
    }

    fn family(&mut self, name: &str, help: &str, kind: &str, samples: &[(&str, f64)]) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.text, "{name} {value}");
            } else {
                let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
            }
        }
    }
}

/// Resident set size of this process, where the platform tells it cheaply.
#[cfg(target_os = "linux")]
fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Elsewhere (Windows, macOS) the system's own count, through sysinfo.
#[cfg(not(target_os = "linux"))]
fn resident_memory() -> Option<u64> {
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};
    let pid = sysinfo::get_current_pid().ok()?;
    let mut system = System::new().ok()?;
    let memory = ProcessRefreshKind::nothing().with_memory();
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), false, memory);
    system.process(pid).map(|process| process.memory())
}

/// Fetches `/metrics` from the node whose data folder is `data_dir`.
pub async fn fetch_metrics(data_dir: &Path) -> anyhow::Result<String> {
    let request = "GET /metrics HTTP/1.1\r\nHost: canopy\r\nConnection: close\r\n\r\n";
    let (status, body) = ask_running_node(&data_dir.join(ADDR_FILE), request, 16 << 20).await?;
    anyhow::ensure!(status == 200, "the node answered {status}");
    Ok(body)
}

/// Sends `request` to the HTTP service of a running node whose address is
/// recorded in `record` (in its data folder; one on every interface is
/// asked on loopback), reading at most `limit` bytes of answer: its
/// status code and body. Errors say what to start if nothing runs.
pub async fn ask_running_node(record: &Path, request: &str, limit: u64) -> anyhow::Result<(u16, String)> {
    use anyhow::Context;
    let addr: SocketAddr = std::fs::read_to_string(record)
        .with_context(|| {
            format!(
                "no running node found: {} is missing (start `canopy run` with this --data-dir)",
                record.display()
            )
        })?
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold an address", record.display()))?;
    let addr = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port())),
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(limit).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(REQUEST_DEADLINE, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("the node at {addr} did not answer"))?
        .with_context(|| format!("cannot reach the node at {addr} (it may have stopped)"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("the node at {addr} sent no HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("the node at {addr} sent no HTTP status"))?;
    Ok((status, body.to_string()))
}

/// Parses Prometheus text into (series with labels, value) pairs.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}
