//! `canopy run`: a node that shares folders until stopped.

use std::time::Duration;

use anyhow::Context;
use canopy_common::net::NetError;
use canopy_common::proto::election::{ElectionConfig, Role};
use canopy_common::proto::nat::Reach;
use canopy_common::proto::{Link, PeerAddr};
use canopy_common::sync::Lock;
use canopy_supernode::SupernodeConfig;

use super::config::RunSettings;
use crate::node::{ElectionSettings, NodeError};
use crate::role::RoleChoice;
use crate::state::TransferLimits;
use crate::units::human_bytes;
use crate::web::settings::EditableSettings;
use crate::web::{Services, ServicesConfig, UiConfig};
use crate::{Node, NodeConfig};

/// Files one indexed entry costs, in memory and on disk together (measured
/// at 3 M documents: ~400 bytes of memory and ~194 bytes of index on disk).
const BYTES_PER_INDEXED_FILE: u64 = 512;
/// How long a starting node listens for other nodes on its LAN: they
/// answer within a round trip, plus a little for a busy machine.
const LAN_DISCOVERY_WAIT: Duration = Duration::from_millis(1500);

/// How often an elected node re-decides its role.
const OBSERVE_EVERY: Duration = Duration::from_secs(30);

/// The node configuration `settings` describe, before the election.
fn node_config(settings: &RunSettings) -> NodeConfig {
    let mut config = NodeConfig::new(settings.data_dir.clone(), settings.listen);
    config.share = settings.share.clone();
    config.upload = TransferLimits {
        max_upload_rate: settings.max_upload_rate,
        upload_slots: settings.upload_slots,
        max_download_rate: settings.max_download_rate,
    };
    config.bootstrap = settings.bootstrap.clone();
    config.accept_inbound = !settings.no_inbound;
    config.reachable = !settings.no_inbound;
    config.reobserve_every = settings.reobserve_every;
    config.leaf_sessions = settings.supernodes;
    config.rescan_interval = settings.rescan_interval;
    config.connection_limits.per_address = settings.max_connections_per_address;
    // The desktop app may change the shared folders.
    config.editable_folders = true;
    config.sign_shares = settings.sign_shares;
    config.network = settings.network_settings.clone();
    config
}

/// What is served beside the node, before the election.
fn services_config(settings: &RunSettings) -> ServicesConfig {
    ServicesConfig {
        control: Some(settings.metrics.unwrap_or(crate::web::control::DEFAULT_ADDR)),
        profile: None,
        downloads: Some(settings.download_dir.clone()),
        max_active_downloads: Some(settings.max_active_downloads),
        ui: None,
        gateway: settings.gateway,
    }
}

/// How the desktop app is served (`None` with --no-ui).
fn ui_config(settings: &RunSettings, role_reason: String) -> Option<UiConfig> {
    if settings.no_ui {
        return None;
    }
    let role = match settings.role {
        RoleChoice::Auto => "auto",
        RoleChoice::Leaf => "leaf",
        RoleChoice::Supernode => "supernode",
    };
    Some(UiConfig {
        listen: settings.ui_listen,
        fallback: !settings.ui_listen_chosen,
        password: settings.ui_password.clone(),
        role_reason,
        settings_file: settings.data_dir.join(crate::web::settings::SETTINGS_FILE),
        settings: EditableSettings {
            download_dir: Some(settings.download_dir.clone()),
            max_upload_rate: settings.max_upload_rate,
            max_download_rate: settings.max_download_rate,
            max_active_downloads: Some(settings.max_active_downloads),
            role: Some(role.into()),
            listen: Some(settings.listen),
            ui_listen: Some(settings.ui_listen),
            gateway: settings.gateway,
        },
    })
}

/// How this node runs as a supernode, if it is or becomes one.
fn supernode_config(settings: &RunSettings) -> SupernodeConfig {
    let mut supernode = SupernodeConfig::for_this_machine(Some(settings.data_dir.join("index")));
    if let Some(max_leaves) = settings.max_leaves {
        supernode.max_leaves = max_leaves;
    }
    supernode.max_indexed_files = (settings.index_budget / BYTES_PER_INDEXED_FILE) as usize;
    supernode.overlay.target_neighbours = settings.neighbours;
    supernode.overlay.max_neighbours = settings.max_neighbours.max(settings.neighbours);
    supernode.overlay.router.max_forwarded_per_second = Some(settings.max_queries_forwarded);
    supernode.searches_per_peer = settings.max_searches_per_peer;
    supernode.overlay.keyword_routing = settings.keyword_routing;
    supernode.overlay.dynamic.target_results = settings.search_target;
    supernode.overlay.table_levels = settings.table_levels;
    supernode.relay.enabled = !settings.no_relay;
    supernode.relay.max_pairs = settings.max_relay_pairs;
    supernode.relay.max_rate = settings.max_relay_rate;
    supernode.possession.enabled = !settings.no_possession_checks;
    supernode
}

pub async fn run(mut settings: RunSettings) -> anyhow::Result<()> {
    if let Some(file) = &settings.config_file {
        tracing::info!(file = %file.display(), "settings read");
    }
    // Before anything in the folder is touched: one node per data folder.
    let _held = match crate::datalock::lock(&settings.data_dir) {
        Ok(held) => held,
        // Clicked again in a menu: the node runs already, so its page opens.
        Err(held @ crate::datalock::DataLockError::Held { .. }) if settings.open => {
            return open_running_app(&settings.data_dir)
                .map_err(|error| anyhow::anyhow!("{held}; {error:#}"));
        }
        Err(error) => return Err(error.into()),
    };
    // Groups joined with `canopy group join`, run beside the public node;
    // with --network, only that network runs, from its own data folder.
    let groups = match settings.network.clone() {
        Some(choice) => {
            choose_network(&mut settings, &choice)?;
            Vec::new()
        }
        None => crate::groups::list(&settings.data_dir),
    };
    // A mistake in the folders is reported before any probing.
    for folder in &settings.share {
        anyhow::ensure!(
            folder.is_dir(),
            "cannot share {}: it is not a folder",
            folder.display()
        );
    }
    // Nodes on this LAN, found with no address given: the election probes
    // them, and a supernode among them is joined. Only for a node on every
    // interface: one bound to an address (loopback, say) was placed there
    // on purpose, and the LAN could not reach it at the address it hears.
    let lan_discovery =
        !settings.no_lan_discovery && settings.network.is_none() && settings.listen.ip().is_unspecified();
    let on_the_lan = match lan_discovery {
        true => {
            let me = canopy_common::net::NodeKey::load_or_create(&settings.data_dir)
                .context("cannot load this node's key")?
                .peer_id();
            crate::lan::discover(me, LAN_DISCOVERY_WAIT).await
        }
        false => Vec::new(),
    };
    for found in on_the_lan.iter().filter(|found| found.supernode) {
        if !settings.bootstrap.iter().any(|known| known.id == found.peer.id) {
            settings.bootstrap.push(found.peer);
        }
    }
    let mut config = node_config(&settings);
    let mut services = services_config(&settings);
    let supernode = supernode_config(&settings);
    let never_supernode = settings.never_supernode || settings.no_inbound;
    // The port our router forwards to us, if the election got one: renewed
    // while we run, given back when we stop.
    let mut forwarded: Option<crate::portmap::Kept> = None;
    let role_reason;
    let role = match settings.role {
        RoleChoice::Auto => {
            let mut peers = settings.bootstrap.clone();
            for known in crate::hostcache::load(&settings.data_dir) {
                if !peers.iter().any(|p| p.id == known.id) {
                    peers.push(known);
                }
            }
            let (profile, measured, decision, bound) = crate::measure::elect(
                &settings.data_dir,
                settings.listen,
                &peers,
                settings.max_upload_rate,
                &settings.thresholds,
                never_supernode,
                settings.network_settings.as_ref().map(|n| n.load()).transpose()?,
            )
            .await?;
            config.listen = bound;
            config.reachability = super::probe::reachability(&profile, &measured);
            if let Some(Ok(mapping)) = &measured.mapping {
                forwarded = Some(crate::portmap::Kept::new(mapping.clone()));
            }
            if matches!(config.reachability.reach(), Reach::Punch | Reach::PushOnly) {
                // Behind a home router or firewall: say so in our sessions,
                // so downloaders ask our supernode for a push.
                config.reachable = false;
            }
            super::probe::print(&profile, &measured, &decision, "starts as");
            tracing::info!(role = ?decision.role, reason = %decision.reason, "election");
            role_reason = format!("{}: {}", role_name(decision.role), decision.reason);
            services.profile = Some(profile.clone());
            if !never_supernode {
                // Keep re-deciding: a leaf promotes if supernodes run short,
                // a supernode steps down if it is not needed.
                config.election = Some(ElectionSettings {
                    profile,
                    rules: ElectionConfig {
                        thresholds: settings.thresholds.clone(),
                        ..Default::default()
                    },
                    observe_every: OBSERVE_EVERY,
                    supernode: Some(supernode.clone()),
                });
            }
            decision.role
        }
        RoleChoice::Leaf => {
            role_reason = "leaf: set by the role setting".into();
            Role::Leaf
        }
        RoleChoice::Supernode => {
            role_reason = "supernode: set by the role setting".into();
            Role::Supernode
        }
    };
    services.ui = ui_config(&settings, role_reason);
    if role == Role::Supernode {
        config.supernode = Some(supernode);
    }
    let mut started = Node::start(config.clone()).await;
    let in_use = |started: &Result<Node, NodeError>| matches!(started, Err(NodeError::Net(NetError::Bind { source, .. })) if source.kind() == std::io::ErrorKind::AddrInUse);
    // The election probed on this port and closed its endpoint, which
    // quinn lets go of a moment later: on a fixed port, wait for it (up
    // to 2 s); asked for any port, take another (another program may
    // have taken the probed one meanwhile).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while in_use(&started) {
        if settings.listen.port() == 0 {
            tracing::info!(probed = %config.listen, "the probed port was taken meanwhile; using another");
            config.listen = settings.listen;
        } else if std::time::Instant::now() > deadline {
            break;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started = Node::start(config.clone()).await;
        if settings.listen.port() == 0 {
            break;
        }
    }
    let base = config;
    let node = started.context("cannot start the node")?;
    let mut services = Services::attach(&node, services).await?;
    match &settings.network {
        Some(choice) => println!("private network {}: members only", choice.name),
        None => println!("public network"),
    }
    let listening = node.peer_addr();
    // Listening on every interface: show the address this machine most
    // likely has for others, not 0.0.0.0.
    let me = if listening.addr.ip().is_unspecified() {
        PeerAddr::new(
            listening.id,
            std::net::SocketAddr::new(crate::groups::likely_host(), listening.addr.port()),
        )
    } else {
        listening
    };
    let scan = node.scan_stats();
    // A node nobody can dial (behind a home router) is not offered at its
    // own address, which others could not use (and may be private).
    let dialable = base.reachable && base.accept_inbound;
    println!("canopy node {}", me.id);
    if dialable {
        println!("listening on {} (peers reach this node as {me})", listening.addr);
    } else {
        let through = match node.context().reach.locked().reach() {
            Reach::PushOnly => "which has it connect out to them, meets them by a birthday punch, or relays",
            _ => "which arranges a hole punch: it connects out while they open their routers",
        };
        println!(
            "listening on {} (peers cannot connect to this node: they reach it through its \
             supernode, {through})",
            listening.addr
        );
    }
    println!(
        "sharing {} file{}, {} ({} hashed now, {} from cache)",
        scan.files,
        if scan.files == 1 { "" } else { "s" },
        human_bytes(scan.bytes),
        scan.hashed,
        scan.cached
    );
    if lan_discovery {
        match on_the_lan.len() {
            0 => println!("local network: no other Canopy node answered"),
            n => println!(
                "local network: {n} other Canopy node{} found ({} supernode{})",
                if n == 1 { "" } else { "s" },
                on_the_lan.iter().filter(|found| found.supernode).count(),
                if on_the_lan.iter().filter(|found| found.supernode).count() == 1 {
                    ""
                } else {
                    "s"
                }
            ),
        }
    }
    // Answer the next node that starts on this LAN.
    let answering = lan_discovery
        .then(|| crate::lan::answer(node.peer_addr().id, listening.addr.port(), node.context().clone()))
        .flatten();
    match node.supernode() {
        Some(_) if !node.knows_supernodes() => println!(
            "role: supernode, alone so far: no other node is known (leaves join it with --bootstrap {me}; \
             others on this LAN find it)"
        ),
        Some(_) => println!("role: supernode (leaves join it with --bootstrap {me})"),
        None if node.knows_supernodes() => println!("role: leaf (joining a supernode)"),
        None => println!("role: leaf (no supernode known: pass --bootstrap to publish and search)"),
    }
    let files = node.shares().list();
    for file in files.iter().take(20) {
        let link = Link {
            hash: file.hash(),
            size: Some(file.size),
            name: file
                .path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned()),
            sources: if dialable { vec![me] } else { Vec::new() },
        };
        println!(
            "  {:>10}  {}  {link}",
            human_bytes(file.size),
            file.path.display()
        );
    }
    if files.len() > 20 {
        println!("  … and {} more", files.len() - 20);
    }
    if let Some(file) = files.first() {
        if dialable {
            println!("fetch with: canopy get {} --source {me}", file.hash());
        } else {
            println!(
                "fetch with: canopy get {} (its supernode knows this node)",
                file.hash()
            );
        }
    }
    if let Some(control) = services.control_addr() {
        println!("status and metrics on http://{control}/metrics (canopy status reads them)");
    }
    if let Some(gateway) = services.gateway_addr() {
        println!("HTTP gateway: shared files at http://{gateway}/content/HASH");
    }
    if let Some(ui) = services.ui_addr() {
        let url = format!("http://{}/", loopback_view(ui));
        println!("desktop app: open {url} in your browser");
        if settings.open {
            if let Err(error) = crate::web::open::open(&url) {
                eprintln!("warning: could not open the browser ({error}); open {url} yourself");
            }
        }
    }
    let mut group_nodes = Vec::new();
    for group in &groups {
        match Node::start(group.node_config(&base)).await {
            Ok(group_node) => {
                let me = group_node.peer_addr();
                let role = if group_node.supernode().is_some() {
                    "supernode"
                } else {
                    "leaf"
                };
                println!(
                    "group {}: {role} on {} as {}, sharing {} file{} from {}",
                    group.name,
                    me.addr,
                    me.id,
                    group_node.scan_stats().files,
                    if group_node.scan_stats().files == 1 {
                        ""
                    } else {
                        "s"
                    },
                    group.shared_folders()
                );
                services.attach_group(group.name.as_str(), &group_node);
                group_nodes.push(group_node);
            }
            Err(error) => eprintln!("warning: cannot run group {}: {error}", group.name),
        }
    }
    super::shutdown_signal().await;
    if let Some(answering) = answering {
        answering.abort();
    }
    if node
        .supernode()
        .is_some_and(|supernode| supernode.leaf_count() > 0)
    {
        println!("shutting down: handing our leaves to other supernodes first");
    } else {
        println!("shutting down");
    }
    // Part files up to date first, so the next start resumes with nothing lost.
    services.shut_down().await;
    for group_node in group_nodes {
        group_node.leave().await;
    }
    node.leave().await;
    if let Some(forwarded) = forwarded {
        forwarded.release().await;
    }
    Ok(())
}

/// Points `settings` at one private network: its own data folder, and the
/// key, allow-list, members and shares stored by `canopy group` unless the
/// settings name others.
fn choose_network(settings: &mut RunSettings, choice: &super::config::NetworkChoice) -> anyhow::Result<()> {
    let joined = crate::groups::open(&settings.data_dir, &choice.name).ok();
    let dir = settings
        .data_dir
        .join(crate::groups::NETWORKS_DIR)
        .join(choice.name.as_str());
    let stored = |file: &str| Some(dir.join(file)).filter(|path| path.exists());
    let network = crate::network::NetworkSettings {
        name: choice.name.clone(),
        key_file: choice
            .key_file
            .clone()
            .or_else(|| stored(crate::groups::KEY_FILE)),
        allow: choice.allow.clone(),
        allow_file: choice
            .allow_file
            .clone()
            .or_else(|| stored(crate::groups::ALLOW_FILE)),
        reload_every: crate::network::RELOAD_EVERY,
    };
    // Fail now, with the reason, rather than after probing.
    network.load().context("cannot join the private network")?;
    if let Some(group) = joined {
        for member in group.settings.members() {
            if !settings.bootstrap.iter().any(|b| b.id == member.id) {
                settings.bootstrap.push(member);
            }
        }
        if settings.share.is_empty() {
            settings.share = group.settings.share.clone();
        }
    }
    settings.data_dir = dir;
    settings.network_settings = Some(network);
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leaf => "leaf",
        Role::Supernode => "supernode",
    }
}

/// The address a browser on this machine uses: loopback for an unspecified host.
/// Opens the page of the desktop app that runs with `data_dir` (from the
/// address it recorded there).
fn open_running_app(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let record = data_dir.join(crate::web::UI_ADDR_FILE);
    let addr: std::net::SocketAddr = std::fs::read_to_string(&record)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .with_context(|| format!("it serves no desktop app ({} is missing)", record.display()))?;
    let url = format!("http://{}/", loopback_view(addr));
    println!("canopy already runs with this data folder; its desktop app: {url}");
    crate::web::open::open(&url)
        .map_err(|error| anyhow::anyhow!("could not open the browser ({error}); open {url} yourself"))
}

fn loopback_view(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => (std::net::Ipv4Addr::LOCALHOST, addr.port()).into(),
        ip if ip.is_unspecified() => (std::net::Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}
