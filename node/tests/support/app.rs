//! The desktop app and its HTTP side as the process-level tests drive
//! them: `canopy run` processes, a raw HTTP client, and the browser
//! scripts' tools (node, npm, Debian's `chromium`; `.ci/test` installs
//! them, and a missing one fails the test with the command that does).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::CANOPY;

/// Fails with a fix when `program` cannot be run.
pub fn require(program: &str, install: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(found, "{program} is needed for this test: {install}");
}

pub fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// A `canopy run` process, killed when dropped, with the lines it printed.
pub struct Process {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    printed: Vec<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    pub fn start(args: &[&str], data: &Path) -> Process {
        let mut child = Command::new(CANOPY)
            .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("canopy run starts");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Process {
            child,
            lines,
            printed: Vec::new(),
        }
    }

    /// The rest of the first printed line that contains `marker`.
    /// The desktop app's HOST:PORT, from the address the node prints.
    pub fn app_address(&mut self) -> String {
        let url = self.wait_for("desktop app: open ");
        let url = url.trim_start_matches("http://");
        url.split('/').next().unwrap().to_string()
    }

    pub fn wait_for(&mut self, marker: &str) -> String {
        loop {
            if let Some(line) = self.printed.iter().find(|line| line.contains(marker)) {
                return line.split(marker).nth(1).unwrap().trim().to_string();
            }
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| {
                    panic!("canopy run never printed {marker:?}; printed {:#?}", self.printed)
                });
            self.printed.push(line);
        }
    }

    pub fn peer_address(&mut self) -> String {
        self.wait_for("peers reach this node as ")
            .trim_end_matches(')')
            .to_string()
    }
}

pub fn random_file(path: &Path, size: usize, seed: u8) -> String {
    let content: Vec<u8> = (0..size)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect();
    std::fs::write(path, &content).unwrap();
    blake3::hash(&content).to_hex().to_string()
}

/// Writes a WAV file of `seconds` of a 440 Hz tone (8 kHz, 8-bit mono);
/// returns its content hash.
pub fn wav_file(path: &Path, seconds: u32) -> String {
    wav_tone(path, seconds, 8000)
}

/// Writes a WAV file of `seconds` of a 440 Hz tone, 8-bit mono at `rate`
/// samples (bytes) per second; returns its content hash.
pub fn wav_tone(path: &Path, seconds: u32, rate: u32) -> String {
    let samples: Vec<u8> = (0..rate * seconds)
        .map(|i| (128.0 + 60.0 * (i as f64 * 440.0 * std::f64::consts::TAU / rate as f64).sin()) as u8)
        .collect();
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes()); // bytes per second
    wav.extend_from_slice(&1u16.to_le_bytes()); // block align
    wav.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    wav.extend_from_slice(&samples);
    std::fs::write(path, &wav).unwrap();
    blake3::hash(&wav).to_hex().to_string()
}

pub fn blake3_of(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .to_hex()
        .to_string()
}

/// Installs playwright-core from the lock file if it is not there yet.
pub fn npm_ci(dir: &Path) {
    if dir.join("node_modules/playwright-core").is_dir() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm runs");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

/// Checks that node, npm and Chromium are here (`.ci/test` installs
/// them) and installs the scripts' packages; their folder.
pub fn browser_tests() -> PathBuf {
    require("node", "apt-get install nodejs npm");
    require("npm", "apt-get install npm");
    require(&chromium(), "apt-get install chromium");
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    npm_ci(&web);
    web
}

/// Sends a raw request to `addr`; returns the status code and the text answered.
pub fn ask(addr: &str, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, text)
}

pub fn call(addr: &str, key: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = ask(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// The desktop app as tests drive it: `canopy run` as a leaf of
/// `bootstrap`, its web UI on a free port, downloads saved in `downloads`.
pub struct App {
    pub process: Process,
    pub addr: String,
    pub key: String,
}

pub fn start_app(bootstrap: &str, downloads: &Path, data: &Path) -> App {
    let mut process = Process::start(
        &[
            "--role",
            "leaf",
            "--bootstrap",
            bootstrap,
            "--ui-listen",
            "127.0.0.1:0",
            "--download-dir",
            downloads.to_str().unwrap(),
        ],
        data,
    );
    let addr = process.app_address();
    let key = std::fs::read_to_string(data.join("api-key")).unwrap();
    App { process, addr, key }
}

impl App {
    /// Adds a download by hash alone (sources come from a hash search).
    pub fn download(&self, hash: &str, name: &str) {
        let body = format!("{{\"hash\": \"{hash}\", \"name\": \"{name}\"}}");
        let (status, answer) = call(&self.addr, &self.key, "POST", "/api/downloads", &body);
        assert_eq!(status, 201, "{answer}");
    }

    /// Waits until the first download is done, for at most `limit`.
    pub fn wait_done(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let (_, list) = call(&self.addr, &self.key, "GET", "/api/downloads", "");
            if list[0]["state"] == "done" {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "never finished: {list}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A leaf of `bootstrap` sharing `folder`, without UI; `extra` flags too.
pub fn sharing_leaf(bootstrap: &str, folder: &Path, extra: &[&str], data: &Path) -> Process {
    let mut args = vec![
        "--role",
        "leaf",
        "--no-ui",
        "--bootstrap",
        bootstrap,
        "--share",
        folder.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut sharer = Process::start(&args, data);
    sharer.wait_for("role:");
    sharer
}
