//! The interoperability test: `interop/python/canopy_client.py`, a client
//! written from docs/PROTOCOL.md alone on stock aioquic (no RFC 7250 raw
//! keys, so it presents the X.509 form of §3.2), searches a real `canopy
//! run` supernode and fetches from a real `canopy run` leaf, every block
//! verified by its own BLAKE3 code.
//!
//! Needs `python3` with `aioquic` and `cryptography` (`.ci/test` installs
//! them); without them the test fails and says so, it never skips. Uses the
//! `canopy` binary of this build (see [`canopy_binary`]) or `$CANOPY_BIN`;
//! `$CANOPY_PYTHON` picks another interpreter.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn client_script() -> PathBuf {
    repo_root().join("interop/python/canopy_client.py")
}

fn python() -> String {
    std::env::var("CANOPY_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Fails (never skips) when the interpreter or its packages are missing.
fn require_python() {
    let python = python();
    let probe = Command::new(&python)
        .args([
            "-c",
            "import aioquic, cryptography; print(aioquic.__version__, cryptography.__version__)",
        ])
        .output();
    match probe {
        Err(e) => panic!(
            "the interoperability test needs `{python}` (Python 3 with aioquic and cryptography) \
             and could not run it: {e}. Install Python 3, then \
             `python3 -m pip install aioquic cryptography` (.ci/test does)"
        ),
        Ok(out) if !out.status.success() => panic!(
            "the interoperability test needs the Python packages aioquic and cryptography; \
             `{python}` could not import them:\n{}\nInstall them with \
             `python3 -m pip install aioquic cryptography` (.ci/test does)",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(out) => eprintln!(
            "python: aioquic, cryptography {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    }
}

/// The `canopy` binary: `$CANOPY_BIN`, or the one beside this test in the
/// target folder. `cargo test --workspace` (what CI runs) builds it in the
/// same run; `cargo test -p canopy-tests` does not, so build it first with
/// `cargo build -p canopy-node --bin canopy`. (Not built from here: a
/// `cargo build -p canopy-node` resolves features apart from the workspace
/// and would rewrite the binary under tests running at the same time.)
fn canopy_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CANOPY_BIN") {
        return bin.into();
    }
    // This test runs as TARGET/PROFILE/deps/interop_python-HASH.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join(format!("canopy{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no canopy binary at {}: run `cargo test --workspace`, which builds it, or \
         `cargo build -p canopy-node --bin canopy` first (same CARGO_TARGET_DIR), \
         or point CANOPY_BIN at one",
        bin.display()
    );
    let age = std::fs::metadata(&bin)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|built| built.elapsed().ok());
    eprintln!("canopy: {} (built {age:.0?} ago)", bin.display());
    bin
}

/// A `canopy run` process, killed when dropped.
struct RunningNode {
    child: Child,
    address: String,
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `canopy run --listen 127.0.0.1:0 --no-ui ARGS --data-dir DATA`, once it
/// has printed its address and role.
fn run_node(canopy: &Path, args: &[&str], data: &Path) -> RunningNode {
    let stderr_path = data.with_extension("stderr");
    let mut child = Command::new(canopy)
        .args(["run", "--listen", "127.0.0.1:0", "--no-ui"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("canopy run starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let mut address = None;
    while !printed.iter().any(|line: &String| line.starts_with("role:")) {
        let Some(line) = lines.next() else {
            let status = child.wait().unwrap();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("canopy run ended ({status}) before its banner: {printed:?}\n{stderr}");
        };
        let line = line.unwrap();
        if let Some(rest) = line.split("peers reach this node as ").nth(1) {
            address = Some(rest.trim_end_matches(')').to_string());
        }
        printed.push(line);
    }
    std::thread::spawn(move || lines.for_each(drop));
    RunningNode {
        child,
        address: address.expect("canopy run printed its address"),
    }
}

/// Runs the Python client with ARGS, killing it after [`CLIENT_TIMEOUT`].
fn client(args: &[&str]) -> Output {
    let mut child = Command::new(python())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(client_script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("canopy_client.py {args:?} still running after {CLIENT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    eprintln!(
        "canopy_client.py {args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn patterned(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(salt) % 253) as u8)
        .collect()
}

#[test]
fn a_python_client_on_aioquic_searches_and_fetches_from_real_nodes() {
    require_python();
    let canopy = canopy_binary();

    // The client checks itself against docs/vectors first.
    let selftest = client(&["selftest"]);
    assert!(selftest.status.success(), "the client's vector self-test failed");

    let root = tempfile::tempdir().unwrap();
    let share = root.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    // Five blocks, the last one short (§7.2); and a one-block file of two
    // chunks, checked against the content hash itself (§7.4).
    let tape = patterned(300_000, 7);
    let note = patterned(1_500, 11);
    std::fs::write(share.join("Interop Sample Tape.bin"), &tape).unwrap();
    std::fs::write(share.join("interop liner note.txt"), &note).unwrap();
    let tape_hash = blake3::hash(&tape).to_hex().to_string();
    let note_hash = blake3::hash(&note).to_hex().to_string();

    let supernode = run_node(&canopy, &["--role", "supernode"], &root.path().join("sn"));
    let leaf = run_node(
        &canopy,
        &[
            "--role",
            "leaf",
            "--share",
            share.to_str().unwrap(),
            "--bootstrap",
            &supernode.address,
        ],
        &root.path().join("leaf"),
    );
    let leaf_id = leaf.address.split('@').next().unwrap().to_string();

    // Search: until the leaf's files are indexed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let hit = loop {
        let output = client(&["search", "interop", "tape", &supernode.address, "--json"]);
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "the search failed (status {})",
            output.status
        );
        let hits: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        if let Some(hit) = hits.iter().find(|line| line.contains(&tape_hash)) {
            break hit.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the search never found the file: {hits:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(hit.contains("\"name\": \"Interop Sample Tape.bin\""), "{hit}");
    assert!(hit.contains("\"size\": 300000"), "{hit}");
    // The leaf accepts connections, so it is a direct source, at the
    // address the supernode sees (the one it listens on: one socket, §2).
    let source = format!("\"sources\": [\"{}\"]", leaf.address);
    assert!(hit.contains(&source), "expected {source} in {hit}");

    // Fetch from the source the hit named, the last block first, every
    // block verified by the client.
    let out = root.path().join("tape.bin");
    let fetched = client(&["fetch", &tape_hash, &leaf.address, "-o", out.to_str().unwrap()]);
    assert!(fetched.status.success(), "the fetch failed");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        tape,
        "fetched bytes differ from the file"
    );
    assert!(String::from_utf8_lossy(&fetched.stdout).contains("in 5 blocks, every block verified"));

    let out = root.path().join("note.txt");
    let fetched = client(&["fetch", &note_hash, &leaf.address, "-o", out.to_str().unwrap()]);
    assert!(fetched.status.success(), "the one-block fetch failed");
    assert_eq!(std::fs::read(&out).unwrap(), note);

    // What the reference must refuse or deny, seen from the client.
    let elsewhere = leaf.address.replacen(
        &leaf_id,
        "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena",
        1,
    );
    let wrong_pin = client(&["fetch", &tape_hash, &elsewhere, "-o", out.to_str().unwrap()]);
    assert_eq!(wrong_pin.status.code(), Some(2), "a wrong pin must fail");
    assert!(String::from_utf8_lossy(&wrong_pin.stderr).contains("but reached"));
    let unknown = client(&[
        "fetch",
        &"00".repeat(32),
        &leaf.address,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("NotFound"));
    let nothing = client(&["search", "nosuchwordanywhere", &supernode.address]);
    assert_eq!(nothing.status.code(), Some(1), "a search with no results exits 1");
    let not_supernode = client(&["search", "interop", &leaf.address]);
    assert_eq!(not_supernode.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_supernode.stderr).contains("not a supernode"));
}
