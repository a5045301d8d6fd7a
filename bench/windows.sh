#!/usr/bin/env bash
# Windows in CI: cross-builds canopy.exe with mingw-w64 and runs it under Wine far enough to show it
# works. Checks, in order (each prints its wall time; the first to fail ends the run, exit 1, with
# what failed and the end of the logs):
#   1. `canopy.exe id` prints a peer id (52 base32 letters), the same one twice, and without
#      --data-dir keeps its key in the Windows data folder (%APPDATA%\canopy\node.key);
#   2. Linux -> Wine: a Linux `canopy run --share` node on loopback; the Wine-run
#      `canopy.exe get HASH --source PEERID@127.0.0.1:PORT -o FILE` fetches a random file, whose
#      bytes must match (b3sum and cmp);
#   3. Wine -> Linux: a Wine-run `canopy.exe run --share` (a Windows path, dual-stack [::] socket,
#      the desktop app on) serves a random file to a Linux `canopy get`, bytes checked; its desktop
#      app answers (page and /api/status); `canopy.exe status` reads it; Ctrl-C stops it cleanly;
#   4. `canopy.exe demo`: three supernodes and twelve leaves in one Wine-run process, a search
#      across the overlay and a multi-source download, verified.
# What does not work under Wine and why, and what the shim DLL does: docs/WINDOWS.md.
#
# Installs what it needs on a fresh Debian machine (only the Rust toolchain there): the rustup
# target x86_64-pc-windows-gnu, and with apt-get gcc-mingw-w64-x86-64, wine64 and b3sum, curl.
# Needs root or sudo for apt-get, nothing else (no namespaces).
#
# Usage: bench/windows.sh
# Environment:
#   CARGO_TARGET_DIR   honoured (canopy.exe is built in $CARGO_TARGET_DIR/x86_64-pc-windows-gnu)
#   CANOPY=PATH        the Linux canopy to pair with (default: cargo build's debug one, which is
#                      already built after .ci/test)
#   WINDOWS_RELEASE=1  build canopy.exe with --release (much slower: see docs/WINDOWS.md)
#   WINEPREFIX         the Wine prefix (default: ~/.cache/canopy/wine, made on first use, ~10 s)
#   KEEP=1             keep the work folder (logs, files, data folders) even when all passed
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

target=x86_64-pc-windows-gnu
target_dir=${CARGO_TARGET_DIR:-$root/target}
case $target_dir in /*) ;; *) target_dir=$root/$target_dir ;; esac
# The workspace's dev profile optimises every dependency (opt-level 2, for realistic speeds in the
# tests): a debug canopy.exe so built costs about 600 s of CPU. This check needs no speed, so its
# own profile, windows-ci, builds dependencies unoptimised and without debug info: about 135 s of
# CPU, a fifth (docs/WINDOWS.md, "Building").
if [ "${WINDOWS_RELEASE:-0}" = 1 ]; then
  profile=release
  profile_flag=(--release)
else
  profile=windows-ci
  profile_flag=(--config 'profile.windows-ci.inherits="dev"' --config 'profile.windows-ci.debug=false'
    --config 'profile.windows-ci.package."*".opt-level=0' --profile windows-ci)
fi

work=$(mktemp -d /tmp/canopy-windows.XXXXXX)
pids=()
failed=1
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Only this prefix's wineserver (and any process of ours it still runs).
  if [ -n "${wine_used:-}" ]; then "$wineserver" -k 2>/dev/null || true; fi
  if [ "$failed" = 0 ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$work"; else echo "windows.sh: logs and files kept in $work"; fi
}
trap cleanup EXIT

started=$(date +%s.%N)
step_start=$started
step() {
  local now
  now=$(date +%s.%N)
  [ -z "${step_name:-}" ] || printf 'windows.sh: %-52s %6.1f s\n' "$step_name" "$(awk -v s="$step_start" -v e="$now" 'BEGIN { print e - s }')"
  step_name=$1
  step_start=$now
}
fail() {
  echo "windows.sh: FAILED at '${step_name:-}': $*" >&2
  local log
  for log in "$work"/*.log; do
    [ -s "$log" ] || continue
    echo "--- last lines of $(basename "$log"):" >&2
    tail -n 15 "$log" >&2
  done
  exit 1
}
# wait_for FILE PATTERN SECONDS: until FILE has a line matching PATTERN (grep -E).
wait_for() {
  local i
  for i in $(seq "$(($3 * 10))"); do
    grep -Eq -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# winpath PATH: the Windows name of a Linux path (Wine maps Z: to /).
winpath() { printf 'Z:%s' "${1//\//\\}"; }

step "install mingw-w64, Wine and the Rust target"
missing=()
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(gcc-mingw-w64-x86-64)
command -v wine64 >/dev/null || command -v wine >/dev/null || [ -x /usr/lib/wine/wine64 ] || missing+=(wine64)
command -v b3sum >/dev/null || missing+=(b3sum)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  echo "windows.sh: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
# Debian's wine64 package installs no wine64 command, only /usr/lib/wine/wine64 (the wine
# package adds the `wine` wrapper).
wine=$(command -v wine64 || command -v wine || echo /usr/lib/wine/wine64)
wineserver=$(command -v wineserver || echo /usr/lib/wine/wineserver)
[ -x "$wine" ] && [ -x "$wineserver" ] || fail "no wine64 and wineserver after installing wine64"

step "cross-build canopy.exe ($profile)"
cargo build --quiet --target "$target" -p canopy-node --bin canopy "${profile_flag[@]}" > "$work/build.log" 2>&1 \
  || fail "cargo build --target $target failed"
exe=$target_dir/$target/$profile/canopy.exe
[ -f "$exe" ] || fail "no $exe after the build"
if [ -z "${CANOPY:-}" ]; then
  step "build the Linux canopy (nothing to do after .ci/test)"
  cargo build --quiet -p canopy-node --bin canopy > "$work/build-linux.log" 2>&1 || fail "cargo build (Linux) failed"
fi
linux=${CANOPY:-$target_dir/debug/canopy}
[ -x "$linux" ] || fail "no Linux canopy at $linux"

step "build the shim bcryptprimitives.dll"
# canopy.exe and the shim go to a folder of their own: a DLL beside the exe is loaded first.
mkdir -p "$work/bin"
cp "$exe" "$work/bin/canopy.exe"
x86_64-w64-mingw32-gcc -shared -O2 -s -Wall -Wextra -Werror -o "$work/bin/bcryptprimitives.dll" \
  bench/windows/wine-shim.c -lws2_32 -ladvapi32 > "$work/shim.log" 2>&1 || fail "the shim DLL does not build"

step "prepare the Wine prefix"
export WINEPREFIX=${WINEPREFIX:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/canopy/wine}
export WINEDEBUG=${WINEDEBUG:--all}
# No Mono or Gecko installers (they would want a display); the shim beside the exe before any
# bcryptprimitives.dll of Wine's own (Wine 8.13 and later have one, without the socket part).
export WINEDLLOVERRIDES="mscoree,mshtml=;bcryptprimitives=n,b"
mkdir -p "$(dirname "$WINEPREFIX")"
wine_used=1
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  "$wine" wineboot --init > "$work/wineboot.log" 2>&1 || true
  "$wineserver" -w
fi
[ -d "$WINEPREFIX/drive_c" ] || fail "wineboot did not create $WINEPREFIX"
canopy_exe() { "$wine" "$work/bin/canopy.exe" "$@"; }

step "canopy.exe id"
data_win=$(winpath "$work/wine-node")
id=$(canopy_exe id --data-dir "$data_win" 2> "$work/id.log" | tr -d '\r') || fail "canopy.exe id failed"
[[ $id =~ ^[a-z2-7]{52}$ ]] || fail "canopy.exe id printed '$id', not a peer id (52 base32 letters)"
again=$(canopy_exe id --data-dir "$data_win" 2>> "$work/id.log" | tr -d '\r')
[ "$again" = "$id" ] || fail "a second canopy.exe id printed $again, not $id: the key was not kept"
[ -f "$work/wine-node/node.key" ] || fail "no node.key in the --data-dir folder"
# The default data folder: %APPDATA%\canopy, as the dirs crate says for Windows.
default_id=$(canopy_exe id 2>> "$work/id.log" | tr -d '\r')
[[ $default_id =~ ^[a-z2-7]{52}$ ]] || fail "canopy.exe id without --data-dir printed '$default_id'"
key=$(find "$WINEPREFIX/drive_c/users" -path '*/AppData/Roaming/canopy/node.key' | head -n 1)
[ -n "$key" ] || fail "canopy.exe id without --data-dir kept no key in %APPDATA%\\canopy"
echo "windows.sh: canopy.exe id: $id (default data folder: ${key#"$WINEPREFIX"/})"

step "Linux node -> Wine canopy.exe get"
base=$((20000 + RANDOM % 30000))
mkdir -p "$work/linux-share" "$work/out"
head -c $((8 * 1024 * 1024 + 4321)) /dev/urandom > "$work/linux-share/to-wine.bin"
hash=$(b3sum --no-names "$work/linux-share/to-wine.bin")
linux_id=$("$linux" id --data-dir "$work/linux-node")
"$linux" run --share "$work/linux-share" --listen "127.0.0.1:$base" --role leaf --no-ui \
  --data-dir "$work/linux-node" > "$work/linux-node.log" 2>&1 < /dev/null &
pids+=($!)
wait_for "$work/linux-node.log" '^sharing 1 file' 30 || fail "the Linux node did not start sharing"
timeout 120 "$wine" "$work/bin/canopy.exe" get "$hash" --source "$linux_id@127.0.0.1:$base" \
  -o "$(winpath "$work/out/from-linux.bin")" --data-dir "$(winpath "$work/wine-get")" \
  > "$work/wine-get.log" 2>&1 < /dev/null || fail "canopy.exe get exited $? (see wine-get.log)"
[ "$(b3sum --no-names "$work/out/from-linux.bin")" = "$hash" ] || fail "the file canopy.exe fetched has another hash"
cmp -s "$work/linux-share/to-wine.bin" "$work/out/from-linux.bin" || fail "the file canopy.exe fetched differs"
sed 's/^/windows.sh:   /' "$work/wine-get.log" | tail -n 1

step "Wine canopy.exe run -> Linux canopy get"
mkdir -p "$work/wine-share"
head -c $((5 * 1024 * 1024 + 1234)) /dev/urandom > "$work/wine-share/to-linux.bin"
hash=$(b3sum --no-names "$work/wine-share/to-linux.bin")
"$wine" "$work/bin/canopy.exe" run --share "$(winpath "$work/wine-share")" --listen "[::]:$((base + 1))" \
  --role leaf --ui-listen "127.0.0.1:$((base + 2))" --data-dir "$data_win" > "$work/wine-node.log" 2>&1 < /dev/null &
wine_node=$!
pids+=("$wine_node")
wait_for "$work/wine-node.log" '^sharing 1 file' 60 || fail "the Wine node did not start sharing"
timeout 120 "$linux" get "$hash" --source "$id@127.0.0.1:$((base + 1))" -o "$work/out/from-wine.bin" \
  --data-dir "$work/linux-get" > "$work/linux-get.log" 2>&1 < /dev/null || fail "canopy get from the Wine node exited $?"
[ "$(b3sum --no-names "$work/out/from-wine.bin")" = "$hash" ] || fail "the file fetched from the Wine node has another hash"
cmp -s "$work/wine-share/to-linux.bin" "$work/out/from-wine.bin" || fail "the file fetched from the Wine node differs"
sed 's/^/windows.sh:   /' "$work/linux-get.log" | tail -n 1
# The desktop app: its page, and its API with the key from the data folder.
page=$(curl -fsS "http://127.0.0.1:$((base + 2))/") || fail "the Wine node's desktop app did not serve its page"
grep -qi '<html' <<< "$page" || fail "the Wine node's desktop app served no HTML page"
status=$(curl -fsS -H "X-API-Key: $(cat "$work/wine-node/api-key")" "http://127.0.0.1:$((base + 2))/api/status") \
  || fail "the Wine node's /api/status failed"
grep -q "\"peer_id\":\"$id\"" <<< "$status" || fail "the Wine node's /api/status names another peer: $status"
canopy_exe status --data-dir "$data_win" > "$work/wine-status.log" 2>&1 || fail "canopy.exe status failed"
grep -Eq '^sharing +1 files' "$work/wine-status.log" || fail "canopy.exe status does not say it shares the file"
# Ctrl-C: Wine turns SIGINT into a console Ctrl-C event; the node says goodbye and exits 0.
kill -INT "$wine_node"
for _ in $(seq 100); do kill -0 "$wine_node" 2>/dev/null || break; sleep 0.1; done
kill -0 "$wine_node" 2>/dev/null && fail "the Wine node did not stop within 10 s of Ctrl-C"
wait "$wine_node" || fail "the Wine node exited $? after Ctrl-C"
grep -q 'shutting down' "$work/wine-node.log" || fail "the Wine node did not shut down cleanly"

step "canopy.exe demo (3 supernodes, 12 leaves, search, download)"
# The supernode side under Wine too: the overlay, the tantivy index (memory-mapped files), searches
# across the overlay and a multi-source download, all inside one canopy.exe on loopback.
timeout 120 "$wine" "$work/bin/canopy.exe" demo --size 2M > "$work/wine-demo.log" 2>&1 < /dev/null \
  || fail "canopy.exe demo exited $?"
grep -q '^  verified yes' "$work/wine-demo.log" || fail "canopy.exe demo did not verify its download"
grep -E '^\[ *[0-9.]+s\] (searched "field notes"|fetched)' "$work/wine-demo.log" | sed 's/^/windows.sh:   /'

step ""
failed=0
printf 'windows.sh: all checks passed in %.0f s\n' "$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')"
