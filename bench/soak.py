#!/usr/bin/env python3
"""Soak test: a Canopy network on loopback under churn, with downloads running.

    python3 bench/soak.py [--supernodes 10] [--leaves 100] [--minutes 10] [--binary target/release/canopy]

CI's smoke (bench/smoke.sh), half a minute on the debug build:

    python3 bench/soak.py --supernodes 2 --leaves 4 --minutes 0.5 --file-size 262144 --binary target/debug/canopy

Starts SUPERNODES supernodes (each bootstrapping from the ones before) and
LEAVES leaves sharing a few random files each, all real `canopy run`
processes. Then, for MINUTES, it keeps downloads running (`canopy get HASH`
through a random supernode) while it kills leaves with SIGKILL, stops
supernodes with SIGTERM, and restarts both. At the end it reports:

- downloads started, verified (byte-for-byte equal to the original), failed
  (a clean error exit: sources gone mid-churn is expected), and corrupted
  (must be zero);
- panics in any node's log (must be zero);
- peak resident memory per supernode and per leaf, sampled every few seconds.

Exit code 0 only if nothing was corrupted, nothing panicked and at least
one download per minute finished. Figures go to docs/RELIABILITY.md.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Node:
    def __init__(self, binary, work, name, args):
        self.binary, self.name, self.args = binary, name, args
        self.data = work / name
        self.log = work / f"{name}.log"
        self.process = None
        self.address = None
        self.peak_rss = 0

    def start(self):
        self.data.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [self.binary, "run", "--listen", "127.0.0.1:0", "--no-ui", "--data-dir", str(self.data), *self.args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        for line in self.process.stdout:
            if "peers reach this node as " in line:
                self.address = line.split("peers reach this node as ")[1].strip().rstrip(")")
            if line.startswith("role:"):
                break
        # Keep draining stdout so the node never blocks on a full pipe.
        os.set_blocking(self.process.stdout.fileno(), False)

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def stop(self, sig):
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def sample(self):
        if self.alive():
            try:
                self.process.stdout.read()
            except (OSError, TypeError):
                pass
            self.peak_rss = max(self.peak_rss, rss_bytes(self.process.pid))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernodes", type=int, default=10)
    parser.add_argument("--leaves", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--files-per-leaf", type=int, default=2)
    parser.add_argument("--file-size", type=int, default=2 << 20, help="bytes per shared file")
    parser.add_argument("--parallel-downloads", type=int, default=3)
    parser.add_argument("--binary", default=os.environ.get("CANOPY", "target/release/canopy"),
                        help="the canopy binary (default: $CANOPY, else target/release/canopy)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    options = parser.parse_args()
    random.seed(options.seed)
    binary = str(Path(options.binary).resolve())
    work = Path(tempfile.mkdtemp(prefix="canopy-soak-"))
    print(f"work folder {work}", flush=True)

    supernodes = []
    for index in range(options.supernodes):
        bootstrap = []
        for earlier in supernodes[-2:]:
            bootstrap += ["--bootstrap", earlier.address]
        node = Node(binary, work, f"sn{index}", ["--role", "supernode", *bootstrap])
        node.start()
        supernodes.append(node)
    print(f"{len(supernodes)} supernodes up", flush=True)

    originals = {}  # hash -> path of the original bytes
    leaves = []
    for index in range(options.leaves):
        share = work / f"leaf{index}-share"
        share.mkdir(parents=True)
        for number in range(options.files_per_leaf):
            path = share / f"soak-{index}-{number}.bin"
            path.write_bytes(random.randbytes(options.file_size))
        pick = random.sample(supernodes, 2)
        args = ["--role", "leaf", "--share", str(share), "--rescan-interval", "0"]
        for supernode in pick:
            args += ["--bootstrap", supernode.address]
        node = Node(binary, work, f"leaf{index}", args)
        node.start()
        leaves.append(node)
    print(f"{len(leaves)} leaves up", flush=True)
    time.sleep(3)
    for leaf in leaves:
        for path in sorted((work / f"{leaf.name}-share").iterdir()):
            originals[path.name] = path

    counts = {"started": 0, "verified": 0, "failed": 0, "corrupted": 0}
    downloads = []  # (process, output path, original path, started)
    deadline = time.time() + options.minutes * 60
    next_churn = time.time() + 5
    next_sample = time.time()
    stopped = []  # (node, restart at)
    download_dir = work / "downloads"
    download_dir.mkdir()
    serial = 0
    while time.time() < deadline:
        now = time.time()
        # Downloads: keep a few running, each of a random file found by a search.
        while len(downloads) < options.parallel_downloads:
            name = random.choice(list(originals))
            via = random.choice([s for s in supernodes if s.alive()] or supernodes)
            serial += 1
            output = download_dir / f"{serial}-{name}"
            search = subprocess.run(
                [binary, "search", name.removesuffix(".bin").replace("-", " "), "--json", "--limit", "20",
                 "--bootstrap", via.address, "--data-dir", str(work / "searcher")],
                capture_output=True, text=True, timeout=30,
            )
            hits = [json.loads(l) for l in search.stdout.splitlines() if l.strip().startswith("{")]
            hit = next((h for h in hits if h.get("name") == name), None)
            if hit is None:
                time.sleep(0.5)
                break
            process = subprocess.Popen(
                [binary, "get", hit["hash"], "--bootstrap", via.address, "-o", str(output), "--quiet",
                 "--data-dir", str(work / f"getter{serial % 8}")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            downloads.append((process, output, originals[name], now))
            counts["started"] += 1
        for entry in list(downloads):
            process, output, original, started = entry
            if process.poll() is None:
                if now - started > 120:
                    process.kill()
                continue
            downloads.remove(entry)
            if process.returncode == 0:
                if output.read_bytes() == original.read_bytes():
                    counts["verified"] += 1
                else:
                    counts["corrupted"] += 1
                    print(f"CORRUPTED: {output}", flush=True)
                output.unlink(missing_ok=True)
            else:
                counts["failed"] += 1
        # Churn: every few seconds kill a leaf or stop a supernode; restart later.
        if now >= next_churn:
            next_churn = now + random.uniform(2, 6)
            if random.random() < 0.8:
                victim = random.choice([l for l in leaves if l.alive()] or leaves)
                victim.stop(signal.SIGKILL)
            else:
                victim = random.choice([s for s in supernodes if s.alive()] or supernodes)
                victim.stop(signal.SIGTERM)
            stopped.append((victim, now + random.uniform(3, 15)))
        for entry in list(stopped):
            node, restart_at = entry
            if now >= restart_at:
                stopped.remove(entry)
                node.start()
        if now >= next_sample:
            next_sample = now + 5
            for node in supernodes + leaves:
                node.sample()
            print(
                f"{time.strftime('%H:%M:%S')} downloads {counts} running {len(downloads)}; "
                f"down: {sum(not n.alive() for n in supernodes)} supernodes, {sum(not n.alive() for n in leaves)} leaves",
                flush=True,
            )
        time.sleep(0.2)

    for process, *_ in downloads:
        process.kill()
    for node in supernodes + leaves:
        node.sample()
        node.stop(signal.SIGTERM)
    panics = []
    for node in supernodes + leaves:
        text = node.log.read_text(errors="replace")
        if "panicked" in text:
            panics.append(node.name)
    mib = 1 << 20
    peak_sn = max(n.peak_rss for n in supernodes) / mib
    peak_leaf = max(n.peak_rss for n in leaves) / mib
    print()
    print(f"supernodes {options.supernodes}, leaves {options.leaves}, {options.minutes} min, seed {options.seed}")
    print(f"downloads: {counts}")
    print(f"panics: {len(panics)} {panics}")
    print(f"peak RSS: supernode {peak_sn:.0f} MiB, leaf {peak_leaf:.0f} MiB")
    ok = counts["corrupted"] == 0 and not panics and counts["verified"] >= max(1, int(options.minutes))
    print("PASS" if ok else "FAIL")
    if not options.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
