//! Behind home routers (issue 19), in the NAT test bed of network
//! namespaces (`bench/nat.sh`): real `canopy` processes, a public
//! supernode, a public peer, and a home machine behind a router that drops
//! whatever nobody inside asked for. Needs root, as CI runs.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use canopy_common::proto::ContentHash;
use support::{text, CANOPY};

const BED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/nat.sh");
/// Each test's own namespaces begin with "cnt" and a letter, apart from
/// each other (tests run at once) and from a bed someone runs by hand.
const SUPERNODE: &str = "10.77.0.2:4663";

/// The test bed, taken down when dropped.
struct Bed {
    prefix: &'static str,
    _turn: Turn,
}

/// Beds up at once. Each runs several `canopy` processes whose punches
/// and dial-backs have deadlines of a second or so; ten beds at once on a
/// two-core machine (CI's) starve them into failing for want of CPU.
const BEDS_AT_ONCE: usize = 4;
static BEDS_UP: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// A place among the [`BEDS_AT_ONCE`], given back when dropped.
struct Turn;

impl Turn {
    fn wait() -> Turn {
        let (up, freed) = &BEDS_UP;
        let mut up = freed
            .wait_while(up.lock().unwrap_or_else(|e| e.into_inner()), |up| {
                *up >= BEDS_AT_ONCE
            })
            .unwrap_or_else(|e| e.into_inner());
        *up += 1;
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let (up, freed) = &BEDS_UP;
        *up.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        freed.notify_one();
    }
}

impl Bed {
    fn up(prefix: &'static str, kinds: &[&str]) -> Bed {
        let turn = Turn::wait();
        assert!(
            Command::new("id")
                .arg("-u")
                .output()
                .map(|o| text(&o.stdout).trim() == "0")
                .unwrap_or(false),
            "the NAT test bed needs root (network namespaces); CI runs as root"
        );
        let output = Command::new("bash")
            .arg(BED)
            .arg("up")
            .args(kinds)
            .env("CANOPY_NETNS_PREFIX", prefix)
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "bench/nat.sh up failed: {}",
            text(&output.stderr)
        );
        Bed { prefix, _turn: turn }
    }

    /// `canopy ARGS` on machine `name`.
    fn canopy(&self, name: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &format!("{}{name}", self.prefix), CANOPY]);
        command
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(BED)
            .arg("down")
            .env("CANOPY_NETNS_PREFIX", self.prefix)
            .output();
    }
}

/// A `canopy run` in the bed, killed when dropped, with its banner.
struct Running {
    child: Child,
    banner: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(bed: &Bed, machine: &str, args: &[&str], data: &Path) -> Running {
    let stderr_path = data.with_extension("stderr");
    let mut child = bed
        .canopy(machine)
        .arg("run")
        .args(args)
        .args(["--no-ui", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("canopy run starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    while !banner.iter().any(|line: &String| line.starts_with("role:")) {
        let Some(line) = lines.next() else {
            let status = child.wait().unwrap();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("canopy run on {machine} ended ({status}) before its banner: {banner:?}\n{stderr}");
        };
        banner.push(line.unwrap());
    }
    std::thread::spawn(move || lines.for_each(drop));
    Running { child, banner }
}

fn wait_output(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Tries `attempt` until it succeeds, for at most 30 s; fails the test with
/// the last attempt's error.
fn retry(what: &str, mut attempt: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match attempt() {
            Ok(()) => return,
            Err(error) if started.elapsed() > Duration::from_secs(30) => panic!("{what}: {error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// A supernode on the wan at [`SUPERNODE`], and the address to bootstrap from.
fn public_supernode(bed: &Bed, data: &Path) -> (Running, String) {
    let supernode = run(bed, "sn", &["--role", "supernode", "--listen", SUPERNODE], data);
    let addr = supernode
        .banner
        .iter()
        .find_map(|line| line.split("peers reach this node as ").nth(1))
        .expect("the supernode says where it is reached")
        .trim_end_matches(')')
        .to_string();
    (supernode, addr)
}

/// `--bootstrap ADDR` for each of the space-separated `supernodes`.
fn bootstrap(supernodes: &str) -> Vec<&str> {
    supernodes
        .split(' ')
        .flat_map(|supernode| ["--bootstrap", supernode])
        .collect()
}

/// Waits until a search for `words` from `machine` finds `hash`.
fn await_listed(bed: &Bed, machine: &str, words: &str, hash: ContentHash, supernode: &str, data: &Path) {
    retry("the file never reached the supernode", || {
        let mut search = bed.canopy(machine);
        search
            .args(["search", words, "--json"])
            .args(bootstrap(supernode))
            .arg("--data-dir")
            .arg(data);
        let output = wait_output(search, Duration::from_secs(20));
        match text(&output.stdout).contains(&hash.to_hex()) {
            true => Ok(()),
            false => Err(text(&output.stderr)),
        }
    });
}

/// `canopy run --share FOLDER --bootstrap SUPERNODE…` on home `machine`,
/// listening on every interface, as a desktop user would run it.
fn sharing_home(bed: &Bed, machine: &str, share: &str, supernode: &str, data: &Path) -> Running {
    let mut args = vec!["--share", share, "--listen", "0.0.0.0:4663"];
    args.extend(bootstrap(supernode));
    run(bed, machine, &args, data)
}

/// `canopy get HASH --bootstrap SUPERNODE --json -o OUTPUT` on `machine`,
/// for at most a minute.
fn fetch(bed: &Bed, machine: &str, hash: ContentHash, supernode: &str, output: &Path, data: &Path) -> Output {
    let mut get = bed.canopy(machine);
    get.args(["get", &hash.to_hex(), "--json"])
        .args(bootstrap(supernode))
        .arg("-o")
        .arg(output)
        .arg("--data-dir")
        .arg(data);
    wait_output(get, Duration::from_secs(60))
}

/// The last line `get --json` printed: its done (or error) event.
fn done_event(fetched: &Output) -> String {
    text(&fetched.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// A folder under `root` sharing `content` as `name`; its path as an argument.
fn share(root: &Path, name: &str, content: &[u8]) -> String {
    let folder = root.join(format!("{name}.share"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(name), content).unwrap();
    folder.to_string_lossy().into_owned()
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// The set-up most scenarios share: two homes of `kinds` and a public
/// supernode; home 1 shares `len` patterned bytes as `name`, and home 2
/// has found them listed (searching `words`).
struct HomeShares {
    // Dropped in this order: the nodes, then the bed they run in.
    _sharer: Running,
    _supernode: Running,
    supernode_addr: String,
    content: Vec<u8>,
    hash: ContentHash,
    root: tempfile::TempDir,
    bed: Bed,
}

impl HomeShares {
    fn up(prefix: &'static str, kinds: &[&str], name: &str, words: &str, len: usize) -> HomeShares {
        let bed = Bed::up(prefix, kinds);
        let root = tempfile::tempdir().unwrap();
        let dir = |name: &str| -> PathBuf { root.path().join(name) };
        let (supernode, supernode_addr) = public_supernode(&bed, &dir("sn"));
        let content = patterned(len);
        let hash = ContentHash::of(&content);
        let share_arg = share(root.path(), name, &content);
        let sharer = sharing_home(&bed, "h1", &share_arg, &supernode_addr, &dir("h1"));
        await_listed(&bed, "h2", words, hash, &supernode_addr, &dir("h2-search"));
        HomeShares {
            _sharer: sharer,
            _supernode: supernode,
            supernode_addr,
            content,
            hash,
            root,
            bed,
        }
    }

    /// A path in the scenario's folder.
    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

/// A home machine behind a router that drops unsolicited traffic: the
/// election finds it unreachable, it says so to its supernode instead of
/// offering a private address, and a public peer fetches its file through
/// a push (it connects out). It also fetches from the public peer.
#[test]
fn a_public_peer_fetches_from_a_home_machine_behind_a_router() {
    let bed = Bed::up("cnta-", &["cone"]);
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| -> PathBuf { root.path().join(name) };
    let (_supernode, supernode_addr) = public_supernode(&bed, &dir("sn"));

    let content = patterned(3_000_000);
    let hash = ContentHash::of(&content);
    let share_arg = share(root.path(), "behind the router.bin", &content);
    let home = sharing_home(&bed, "h1", &share_arg, &supernode_addr, &dir("home"));
    let banner = home.banner.join("\n");
    assert!(
        banner.contains("reachable no"),
        "the election saw the router:\n{banner}"
    );
    assert!(banner.contains("peers cannot connect to this node"), "{banner}");
    assert!(
        !banner.contains("192.168.1.2:4663"),
        "a private address was offered:\n{banner}"
    );
    assert!(banner.contains("role: leaf"), "{banner}");

    // Wait until the supernode lists the file, as a relayed source.
    await_listed(
        &bed,
        "pub",
        "behind router",
        hash,
        &supernode_addr,
        &dir("pub-search"),
    );

    let output_path = dir("fetched.bin");
    let fetched = fetch(&bed, "pub", hash, &supernode_addr, &output_path, &dir("pub"));
    assert!(
        fetched.status.success(),
        "the public peer could not fetch from the home machine ({}): {}",
        fetched.status,
        text(&fetched.stderr)
    );
    assert!(std::fs::read(&output_path).unwrap() == content, "bytes differ");

    // The other way: the home machine fetches a public peer's file.
    let public_content = patterned(1_000_000);
    let public_hash = ContentHash::of(&public_content);
    let public_share_arg = share(root.path(), "public.bin", &public_content);
    let _public = run(
        &bed,
        "pub",
        &[
            "--role",
            "leaf",
            "--share",
            &public_share_arg,
            "--bootstrap",
            &supernode_addr,
            "--listen",
            "10.77.0.3:4663",
        ],
        &dir("pub-node"),
    );
    let home_output = dir("home-fetched.bin");
    // The public node's files reach the supernode within a moment.
    retry("the home machine could not fetch from the public peer", || {
        let fetched = fetch(
            &bed,
            "h1",
            public_hash,
            &supernode_addr,
            &home_output,
            &dir("home-get"),
        );
        match fetched.status.success() {
            true => Ok(()),
            false => Err(text(&fetched.stderr)),
        }
    });
    assert!(std::fs::read(&home_output).unwrap() == public_content);
}

/// Two home machines, each behind a router that keeps a machine's outside
/// port towards every peer (a "cone" router) and drops what nobody inside
/// asked for: neither can take the other's call, yet one fetches the
/// other's file directly. The source's supernode tells the downloader where
/// the source's packets come from; the downloader sends a few packets
/// there, which opens its own router; the source, told to push, dials in.
#[test]
fn home_machines_behind_cone_routers_fetch_from_each_other_by_hole_punching() {
    let shared = HomeShares::up(
        "cntb-",
        &["cone", "cone"],
        "across the street.bin",
        "across street",
        2_000_000,
    );
    let (bed, supernode_addr, content, hash) =
        (&shared.bed, &shared.supernode_addr, &shared.content, shared.hash);
    let dir = |name: &str| shared.dir(name);

    let output_path = dir("fetched.bin");
    let fetched = fetch(bed, "h2", hash, supernode_addr, &output_path, &dir("h2"));
    let log = text(&fetched.stderr);
    assert!(
        fetched.status.success(),
        "one home machine could not fetch from the other ({}): {log}",
        fetched.status
    );
    assert!(std::fs::read(&output_path).unwrap() == *content, "bytes differ");
    // It came through the punched hole, from the sharer's router, never
    // from a private address.
    let done = done_event(&fetched);
    assert!(done.contains("\"path\":\"punched\""), "{done}\n{log}");
    assert!(done.contains("@10.77.0.11:4663"), "{done}");
}

/// What the election learns of the routers: two peers' views of a home
/// machine tell a router that keeps one outside port towards every peer
/// ("cone") from one with a new port per peer ("symmetric"), and the
/// banner and `canopy status` say how the machine is reached. A public
/// peer still fetches from the symmetric home, which connects out to it.
#[test]
fn the_election_tells_cone_from_symmetric_routers() {
    let bed = Bed::up("cntc-", &["cone", "sym"]);
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| -> PathBuf { root.path().join(name) };
    let (_supernode, supernode_addr) = public_supernode(&bed, &dir("sn"));
    let observer = run(
        &bed,
        "pub",
        &[
            "--role",
            "leaf",
            "--bootstrap",
            &supernode_addr,
            "--listen",
            "10.77.0.3:4663",
        ],
        &dir("pub"),
    );
    let observer_addr = observer
        .banner
        .iter()
        .find_map(|line| line.split("peers reach this node as ").nth(1))
        .expect("the public peer says where it is reached")
        .trim_end_matches(')')
        .to_string();
    let content = patterned(1_500_000);
    let hash = ContentHash::of(&content);
    let share_arg = share(root.path(), "from the tower block.bin", &content);
    let home = |machine: &str, share: Option<&str>| {
        let mut args = vec![
            "--bootstrap",
            &supernode_addr,
            "--bootstrap",
            &observer_addr,
            "--listen",
            "0.0.0.0:4663",
        ];
        if let Some(folder) = share {
            args.extend(["--share", folder]);
        }
        run(&bed, machine, &args, &dir(machine))
    };
    let cone = home("h1", None);
    let symmetric = home("h2", Some(&share_arg));
    let said = |home: &Running| home.banner.join("\n");
    assert!(
        said(&cone).contains("cone NAT") && said(&cone).contains("seen as 10.77.0.11:4663 by 2 peers"),
        "{}",
        said(&cone)
    );
    assert!(
        said(&cone).contains("reached   by hole punching"),
        "{}",
        said(&cone)
    );
    assert!(said(&symmetric).contains("symmetric NAT"), "{}", said(&symmetric));
    for home in [&cone, &symmetric] {
        assert!(
            !said(home).contains("192.168.1.2"),
            "a private address: {}",
            said(home)
        );
    }
    let mut status = bed.canopy("h2");
    status.arg("status").arg("--data-dir").arg(dir("h2"));
    let status = wait_output(status, Duration::from_secs(20));
    assert!(
        text(&status.stdout).contains("router: symmetric NAT"),
        "{}{}",
        text(&status.stdout),
        text(&status.stderr)
    );

    await_listed(
        &bed,
        "pub",
        "tower block",
        hash,
        &supernode_addr,
        &dir("pub-search"),
    );
    let output_path = dir("fetched.bin");
    let fetched = fetch(&bed, "pub", hash, &supernode_addr, &output_path, &dir("pub-get"));
    assert!(
        fetched.status.success(),
        "the public peer could not fetch from the symmetric home ({}): {}",
        fetched.status,
        text(&fetched.stderr)
    );
    assert!(std::fs::read(&output_path).unwrap() == content, "bytes differ");
}

/// A home behind a router that keeps one port for every peer and one
/// behind a router that gives every peer a new port: a plain punch misses,
/// a birthday punch (the symmetric side opens 256 ports, the cone side
/// sprays probes at random ports) finds a way, in both directions. Two
/// supernodes, as in any real network: what both see of a home tells its
/// router's kind.
#[test]
fn cone_and_symmetric_homes_fetch_from_each_other_by_birthday_punching() {
    let bed = Bed::up("cntf-", &["cone", "sym"]);
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| -> PathBuf { root.path().join(name) };
    let (_first, first_addr) = public_supernode(&bed, &dir("sn"));
    let second = run(
        &bed,
        "pub",
        &["--role", "supernode", "--listen", "10.77.0.3:4663"],
        &dir("sn2"),
    );
    let second_addr = second
        .banner
        .iter()
        .find_map(|line| line.split("peers reach this node as ").nth(1))
        .expect("the second supernode says where it is reached")
        .trim_end_matches(')')
        .to_string();
    let supernodes = format!("{first_addr} {second_addr}");
    let homes = [("h1", "cone", 700_001), ("h2", "symmetric", 700_002)];
    let mut sharers = Vec::new();
    let mut files = Vec::new();
    for (machine, kind, len) in homes {
        let content = patterned(len);
        let name = format!("behind a {kind} router");
        let share_arg = share(&dir(machine), &format!("{name}.bin"), &content);
        let home = sharing_home(&bed, machine, &share_arg, &supernodes, &dir(machine));
        let banner = home.banner.join("\n");
        let verdict = match kind {
            "cone" => "(cone NAT)",
            _ => "(symmetric NAT)",
        };
        assert!(banner.contains(verdict), "{banner}");
        sharers.push(home);
        files.push((name, content));
    }
    for (downloader, source) in [(1, 0), (0, 1)] {
        let (machine, kind, _) = homes[downloader];
        let (name, content) = &files[source];
        let hash = ContentHash::of(content);
        await_listed(
            &bed,
            machine,
            name,
            hash,
            &supernodes,
            &dir(&format!("{machine}-search")),
        );
        let output_path = dir(&format!("fetched-by-{machine}.bin"));
        let fetched = fetch(
            &bed,
            machine,
            hash,
            &supernodes,
            &output_path,
            &dir(&format!("{machine}-get")),
        );
        assert!(fetched.status.success(), "{}", text(&fetched.stderr));
        assert!(std::fs::read(&output_path).unwrap() == *content, "bytes differ");
        let done = done_event(&fetched);
        assert!(
            done.contains("\"path\":\"punched\""),
            "the {kind} home fetched from the other without a direct path: {done}"
        );
    }
}

/// A home whose router gets a new outside address while its node runs (a
/// line reconnect): the leaf's session with its supernode migrates, and
/// the supernode moves the address it aims punches at, so a home behind
/// another cone router still punches through to it, at the new address.
#[test]
fn a_home_whose_router_changes_address_is_still_punched_to() {
    let shared = HomeShares::up(
        "cntg-",
        &["cone", "cone"],
        "moved house.bin",
        "moved house",
        600_000,
    );
    let (bed, supernode_addr, content, hash) =
        (&shared.bed, &shared.supernode_addr, &shared.content, shared.hash);
    let dir = |name: &str| shared.dir(name);

    readdress_router(bed, "r1", "10.77.0.11", "10.77.0.21");
    // Keep-alives go every second; the supernode looks every two.
    std::thread::sleep(Duration::from_secs(5));

    let output_path = dir("fetched.bin");
    let fetched = fetch(bed, "h2", hash, supernode_addr, &output_path, &dir("h2"));
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    assert!(std::fs::read(&output_path).unwrap() == *content, "bytes differ");
    let done = done_event(&fetched);
    assert!(
        done.contains("\"path\":\"punched\"") && done.contains("@10.77.0.21:4663"),
        "not punched to the new address: {done}"
    );
}

/// Router `router`'s outside address changes from `was` to `now`; Linux
/// forgets the NAT mappings of the old one, so the next packet from a
/// home leaves from the new address.
fn readdress_router(bed: &Bed, router: &str, was: &str, now: &str) {
    for args in [
        ["addr", "del", &format!("{was}/24"), "dev", "wan0"],
        ["addr", "add", &format!("{now}/24"), "dev", "wan0"],
    ] {
        let status = Command::new("ip")
            .args(["-n", &format!("{}{router}", bed.prefix)])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "ip {args:?}");
    }
}

/// A home behind a cone router starts firewalled (its supernode lists it
/// as reached through the supernode). Then its owner forwards the port
/// and the line gets a new address: the leaf's next look at where its
/// supernode sees it finds the address changed, the dial-back runs again
/// and now gets through, the leaf tells its supernode (`Request::Reach`),
/// and a public peer dials it directly at the new address. Before the
/// re-check existed it stayed listed as firewalled: the peer had it push.
#[test]
fn a_home_that_becomes_reachable_is_offered_directly() {
    let bed = Bed::up("cnth-", &["cone"]);
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| -> PathBuf { root.path().join(name) };
    let (_supernode, supernode_addr) = public_supernode(&bed, &dir("sn"));
    let content = patterned(700_000);
    let hash = ContentHash::of(&content);
    let share_arg = share(root.path(), "port opened.bin", &content);
    let mut args = vec![
        "--share",
        &share_arg,
        "--listen",
        "0.0.0.0:4663",
        "--reobserve-every",
        "1",
    ];
    args.extend(bootstrap(&supernode_addr));
    let home = run(&bed, "h1", &args, &dir("h1"));
    let banner = home.banner.join("\n");
    assert!(banner.contains("peers cannot connect to this node"), "{banner}");
    await_listed(
        &bed,
        "pub",
        "port opened",
        hash,
        &supernode_addr,
        &dir("pub-search"),
    );

    // The port forward a user sets up in the router's web page, on the
    // line's new address. (Not on every address: packets the supernode
    // still sends to the old one, which the bed's ARP caches deliver and
    // the internet would not, would be forwarded too and take over the
    // leaf's own mapping.)
    let nft = |rule: &str| {
        let status = Command::new("ip")
            .args(["netns", "exec", "cnth-r1", "nft"])
            .arg(rule)
            .status()
            .unwrap();
        assert!(status.success(), "nft {rule}");
    };
    nft("add chain ip nat prerouting { type nat hook prerouting priority dstnat; policy accept; }");
    nft("add rule ip nat prerouting ip daddr 10.77.0.21 udp dport 4663 dnat to 192.168.1.2:4663");
    nft("add rule inet filter forward iifname wan0 oifname lan0 ct status dnat accept");
    readdress_router(&bed, "r1", "10.77.0.11", "10.77.0.21");

    let mut last = String::new();
    retry("the home was never offered directly", || {
        let output_path = dir("fetched.bin");
        let _ = std::fs::remove_file(&output_path);
        let fetched = fetch(&bed, "pub", hash, &supernode_addr, &output_path, &dir("pub"));
        last = done_event(&fetched);
        if !fetched.status.success() || std::fs::read(&output_path).unwrap() != content {
            let log = |name: &str| std::fs::read_to_string(dir(name)).unwrap_or_default();
            let (home_log, supernode_log) = (log("h1.stderr"), log("sn.stderr"));
            return Err(format!(
                "fetch failed ({}): {}\nthe home's log:\n{home_log}\nthe supernode's log:\n{supernode_log}",
                fetched.status,
                text(&fetched.stderr)
            ));
        }
        match last.contains("\"path\":\"direct\"") && last.contains("@10.77.0.21:4663") {
            true => Ok(()),
            false => Err(last.clone()),
        }
    });
}

/// Two homes behind routers that give every peer a new port: a punched
/// hole is aimed at the wrong port, so the source's supernode relays. The
/// bytes arrive verified (the QUIC connection is the two homes' own, end
/// to end), and the supernode counts what it forwarded.
#[test]
fn home_machines_behind_symmetric_routers_fetch_through_a_relay() {
    let shared = HomeShares::up("cntd-", &["sym", "sym"], "far apart.bin", "far apart", 1_200_000);
    let (bed, supernode_addr, content, hash) =
        (&shared.bed, &shared.supernode_addr, &shared.content, shared.hash);
    let dir = |name: &str| shared.dir(name);

    let output_path = dir("fetched.bin");
    let fetched = fetch(bed, "h2", hash, supernode_addr, &output_path, &dir("h2"));
    assert!(
        fetched.status.success(),
        "the homes could not connect even through the relay ({}): {}",
        fetched.status,
        text(&fetched.stderr)
    );
    assert!(std::fs::read(&output_path).unwrap() == *content, "bytes differ");
    let done = done_event(&fetched);
    assert!(done.contains("\"path\":\"relayed\""), "{done}");

    let mut status = bed.canopy("sn");
    status.args(["status", "--json", "--data-dir"]).arg(dir("sn"));
    let status = wait_output(status, Duration::from_secs(20));
    let metrics: serde_json::Value = serde_json::from_str(&text(&status.stdout)).expect("status --json");
    let relayed = metrics["canopy_relay_bytes_total"].as_f64().unwrap_or(0.0);
    assert!(
        relayed >= content.len() as f64,
        "the relay forwarded {relayed} bytes"
    );
}

/// Two cone homes whose routers first drop every packet between them (a
/// punch cannot get through), so the download starts through the
/// supernode's relay. Then the block lifts: the downloader's next try for
/// a direct path punches through, the download moves to it mid-way, and
/// the file arrives whole and verified, the rest of it not through the relay.
#[test]
fn a_relayed_download_moves_to_a_direct_path_when_a_punch_gets_through() {
    let shared = HomeShares::up(
        "cnti-",
        &["cone", "cone"],
        "the long way round.bin",
        "long way round",
        16_000_000,
    );
    let (bed, supernode_addr, content, hash) =
        (&shared.bed, &shared.supernode_addr, &shared.content, shared.hash);
    let dir = |name: &str| shared.dir(name);

    let in_router = |router: &str, command: &[&str]| {
        let status = Command::new("ip")
            .args(["netns", "exec", &format!("cnti-{router}")])
            .args(command)
            .status()
            .unwrap();
        assert!(status.success(), "{command:?} on {router}");
    };
    // The source's uplink at 8 Mbit/s: the download lasts long enough to
    // move (about 16 s in all; the first try for a direct path comes 5 s
    // after the relay connected, so about 6 MB go through the relay).
    in_router(
        "r1",
        &[
            "tc", "qdisc", "add", "dev", "wan0", "root", "tbf", "rate", "8mbit", "burst", "32kb", "latency",
            "50ms",
        ],
    );
    for (router, other) in [("r1", "10.77.0.12"), ("r2", "10.77.0.11")] {
        let block = format!(
            "add table inet block {{ chain forward {{ type filter hook forward priority -10; ip daddr {other} drop; }}; }}"
        );
        in_router(router, &["nft", &block]);
    }
    let lift = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        for router in ["cnti-r1", "cnti-r2"] {
            let status = Command::new("ip")
                .args(["netns", "exec", router, "nft", "delete table inet block"])
                .status()
                .unwrap();
            assert!(status.success(), "lifting the block on {router}");
        }
    });
    let output_path = dir("fetched.bin");
    let fetched = fetch(bed, "h2", hash, supernode_addr, &output_path, &dir("h2"));
    lift.join().unwrap();
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    assert!(std::fs::read(&output_path).unwrap() == *content, "bytes differ");
    let done = done_event(&fetched);
    assert!(
        done.contains("\"path\":\"punched\""),
        "never moved off the relay: {done}"
    );

    let mut status = bed.canopy("sn");
    status.args(["status", "--json", "--data-dir"]).arg(dir("sn"));
    let status = wait_output(status, Duration::from_secs(20));
    let metrics: serde_json::Value = serde_json::from_str(&text(&status.stdout)).expect("status --json");
    let relayed = metrics["canopy_relay_bytes_total"].as_f64().unwrap_or(0.0);
    assert!(
        relayed > 0.0 && relayed < content.len() as f64 * 0.75,
        "the relay forwarded {relayed} of {} bytes",
        content.len()
    );
}

/// Two dual-stack homes behind cone NATs for IPv4, each with a global
/// IPv6 address: one router lets IPv6 in unasked, the other drops it (as
/// most do). Each leaf offers its IPv6 address to its supernode, which
/// dials it back and lists only the one that answered; a public peer then
/// fetches from the first directly over IPv6 (no NAT, no push), and from
/// the second as before, by push over IPv4.
#[test]
fn a_home_reachable_over_ipv6_is_dialed_there_first() {
    let bed = Bed::up("cntj-", &["cone6", "cone6fw"]);
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| -> PathBuf { root.path().join(name) };
    let (_supernode, supernode_addr) = public_supernode(&bed, &dir("sn"));
    let mut homes = Vec::new();
    for (k, name) in [(1, "open six.bin"), (2, "closed six.bin")] {
        let content = patterned(400_000 + k);
        let share_arg = share(root.path(), name, &content);
        let mut args = vec!["--share", &share_arg, "--listen", "[::]:4663"];
        args.extend(bootstrap(&supernode_addr));
        let home = run(&bed, &format!("h{k}"), &args, &dir(&format!("h{k}")));
        homes.push((home, ContentHash::of(&content), content));
    }
    for (k, words) in [(0, "open six"), (1, "closed six")] {
        await_listed(
            &bed,
            "pub",
            words,
            homes[k].1,
            &supernode_addr,
            &dir("pub-search"),
        );
    }

    let mut paths = Vec::new();
    for (k, (_, hash, content)) in homes.iter().enumerate() {
        let output_path = dir(&format!("fetched-{k}.bin"));
        let mut done = String::new();
        // The leaf offers its IPv6 address right after joining; the test
        // takes a few seconds (a dial-back's wait for the closed one).
        retry("the IPv6 address was never tested", || {
            let _ = std::fs::remove_file(&output_path);
            let fetched = fetch(&bed, "pub", *hash, &supernode_addr, &output_path, &dir("pub"));
            if !fetched.status.success() || std::fs::read(&output_path).unwrap() != *content {
                return Err(format!("fetch failed: {}", text(&fetched.stderr)));
            }
            done = done_event(&fetched);
            match k == 1 || done.contains("@[2a0b:77:1::2]:4663") {
                true => Ok(()),
                false => Err(done.clone()),
            }
        });
        paths.push(done);
    }
    assert!(
        paths[0].contains("\"path\":\"direct\"") && paths[0].contains("@[2a0b:77:1::2]:4663"),
        "not dialed over IPv6: {}",
        paths[0]
    );
    assert!(
        paths[1].contains("\"path\":\"pushed\"") && !paths[1].contains("2a0b:77:2::"),
        "a closed IPv6 address was offered: {}",
        paths[1]
    );
}

/// Two machines on one network, started with no bootstrap address: the
/// first finds nobody on the LAN and becomes a supernode, alone; the
/// second finds it by local discovery (multicast), becomes its leaf, and
/// searches find the first's file.
#[test]
fn two_machines_on_one_lan_find_each_other_with_no_address_given() {
    let bed = Bed::up("cntk-", &["cone"]);
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| -> PathBuf { root.path().join(name) };
    // The bed's wan machines have no default route; a home LAN's would
    // carry multicast.
    for machine in ["sn", "pub"] {
        let status = Command::new("ip")
            .args([
                "-n",
                &format!("cntk-{machine}"),
                "route",
                "add",
                "224.0.0.0/4",
                "dev",
                "wan0",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let content = patterned(100_000);
    let hash = ContentHash::of(&content);
    let share_arg = share(root.path(), "living room.bin", &content);
    let first = run(
        &bed,
        "sn",
        &["--share", &share_arg, "--listen", "0.0.0.0:4663"],
        &dir("first"),
    );
    let banner = first.banner.join("\n");
    assert!(
        banner.contains("local network: no other Canopy node answered"),
        "{banner}"
    );
    assert!(banner.contains("role: supernode, alone so far"), "{banner}");

    let second = run(&bed, "pub", &["--listen", "0.0.0.0:4663"], &dir("second"));
    let banner = second.banner.join("\n");
    assert!(
        banner.contains("local network: 1 other Canopy node found (1 supernode)"),
        "{banner}"
    );
    assert!(banner.contains("role: leaf (joining a supernode)"), "{banner}");
    // The second's data folder now knows the first: a search from it finds
    // the first's file with no --bootstrap.
    retry("the second machine never found the first's file", || {
        let mut search = bed.canopy("pub");
        search
            .args(["search", "living room", "--json", "--data-dir"])
            .arg(dir("second"));
        let output = wait_output(search, Duration::from_secs(20));
        match text(&output.stdout).contains(&hash.to_hex()) {
            true => Ok(()),
            false => Err(text(&output.stderr)),
        }
    });
}

/// Homes behind routers that forward ports on request (miniupnpd): one
/// speaking PCP and NAT-PMP besides UPnP-IGD (PCP is chosen), one speaking
/// UPnP-IGD only, as many home routers do. Each node asks for its port at
/// start, the dial-back then gets through, and peers dial it directly, on
/// the router's address. When it stops, it gives the port back.
#[test]
fn homes_behind_port_mapping_routers_are_dialed_directly() {
    let bed = Bed::up("cnte-", &["upnp", "igd"]);
    let root = tempfile::tempdir().unwrap();
    let (_supernode, supernode_addr) = public_supernode(&bed, &root.path().join("sn"));
    for (k, protocol) in [(1, "PCP"), (2, "UPnP-IGD")] {
        a_mapped_home_is_dialed_directly(&bed, k, protocol, &supernode_addr, root.path());
    }
}

fn a_mapped_home_is_dialed_directly(bed: &Bed, k: usize, protocol: &str, supernode_addr: &str, root: &Path) {
    let dir = |name: &str| -> PathBuf { root.join(format!("{name}-{k}")) };
    let content = patterned(800_000 + k);
    let hash = ContentHash::of(&content);
    let words = format!("forwarded port {protocol}");
    let share_arg = share(&dir("share"), &format!("{words}.bin"), &content);
    let started = Instant::now();
    let machine = format!("h{k}");
    let home = sharing_home(bed, &machine, &share_arg, supernode_addr, &dir("home"));
    let banner = home.banner.join("\n");
    let outside = format!("10.77.0.1{k}:4663");
    assert!(
        banner.contains(&format!(
            "port map  {outside} forwarded to port 4663 by the router ({protocol}, 120 min lease)"
        )),
        "{banner}"
    );
    assert!(banner.contains("reachable yes"), "{banner}");
    assert!(
        banner.contains(&format!(
            "reached   directly, on the port its router forwards ({protocol};"
        )),
        "{banner}"
    );
    // The election (bandwidth probes included) is what takes the time.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let router = format!("cnte-r{k}");
    let mapped = || {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &router,
                "nft",
                "list",
                "chain",
                "inet",
                "nat",
                "prerouting_miniupnpd",
            ])
            .output()
            .unwrap();
        text(&output.stdout).contains("dport 4663")
    };
    assert!(mapped(), "the router forwards the port");

    await_listed(bed, "pub", &words, hash, supernode_addr, &dir("pub-search"));
    let output_path = dir("fetched.bin");
    let fetched = fetch(bed, "pub", hash, supernode_addr, &output_path, &dir("pub-get"));
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    assert!(std::fs::read(&output_path).unwrap() == content, "bytes differ");
    let done = done_event(&fetched);
    assert!(
        done.contains("\"path\":\"direct\"") && done.contains(&format!("@{outside}")),
        "{done}"
    );

    // A clean stop gives the port back.
    let status = Command::new("kill")
        .args(["-TERM", &home.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopping = Instant::now();
    while mapped() && stopping.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!mapped(), "the mapping outlived the node");
}
