#!/usr/bin/env bash
# The Debian package of the desktop node, and its check.
#
#   bench/deb.sh [build]   builds $CARGO_TARGET_DIR/debian/canopy_VERSION_ARCH.deb (target/debian/
#                          by default) from a --release build: the package to hand out
#   bench/deb.sh check     builds the package (from the debug build by default, see DEB_PROFILE,
#                          into target/debian/debug/), then installs it in a throwaway root and
#                          checks it; exits 1 on any failure
#
# The package (files under deploy/deb/, listing: `dpkg-deb -c`): /usr/bin/canopy (stripped); the
# menu entry canopy.desktop, which runs /usr/libexec/canopy/canopy-app (opens the running node's
# app, or starts the node: that script says how); canopy-link.desktop, the canopy: URL handler
# (deploy/canopy-link.desktop); the systemd user unit canopy.service; the icon; copyright (with the
# Rust crates built in and their licenses), README.Debian and a changelog naming the commit.
# Version: canopy-node's, from Cargo.
# Depends: dpkg-shlibdeps's answer for the binary (libc6 and libgcc-s1), or "libc6, libgcc-s1"
# where dpkg-dev is missing. No maintainer scripts: the desktop database (MimeType=, for canopy:
# links) and the icon cache are refreshed by desktop-file-utils' and gtk's dpkg triggers.
#
# The check installs the package with `dpkg -i` in a throwaway copy of this machine: in new mount,
# network and PID namespaces (unshare), an overlayfs whose lower layer is / and whose upper layer
# is a tmpfs, chrooted into. Every write (the dpkg database, /usr/bin/canopy, the desktop cache)
# lands in the tmpfs, which disappears with the namespace, as do its mounts and processes (the
# PID namespace ends them all when the check ends, however it ends); the host's /usr and dpkg
# database are never touched. The network namespace has only loopback, so the nodes started there
# meet nothing outside (no LAN discovery, no port mapping) and take the default ports freely.
# In that root it checks, in order (each prints its wall time; the first failure ends the run):
#   1. the package's fields (Version is canopy-node's, Depends names libc6) and `dpkg -i` works;
#   2. `dpkg -L canopy` lists every file at its place, `dpkg -V` finds them intact;
#   3. `canopy --version` runs from /usr/bin (found on PATH) and prints the version;
#   4. desktop-file-validate passes both desktop files, and the desktop database (the trigger)
#      maps x-scheme-handler/canopy to canopy-link.desktop;
#   5. `systemd-analyze --user verify` passes the user unit (ExecStart is the installed binary);
#   6. the installed `canopy run --role leaf` (its data in a fresh HOME's ~/.local/share/canopy,
#      the XDG default) serves the app page (curl; the page's <title> from index.html), and
#      SIGTERM stops it with exit 0 within 5 s;
#   7. the menu entry's Exec line, as the desktop would run it (xdg-open replaced by a recorder):
#      with no node running it starts `canopy run --open`, which opens the app's URL; that page
#      is served; run again while the node runs, it opens the same URL and exits 0 (where `canopy
#      run --open` alone would be refused); the URL handler's Exec line, with a canopy: link,
#      hands the link to that node's app (exit 0, "downloading"); SIGTERM: exit 0 within 5 s;
#      then, with the user unit enabled (systemctl replaced by a stand-in that runs the unit's
#      ExecStart), the menu entry starts the unit rather than a node of its own, and opens its
#      page; SIGTERM: exit 0 within 5 s;
#   8. `dpkg -r canopy` removes /usr/bin/canopy and the desktop files, and the canopy: handler
#      is gone from the desktop database.
#
# Needs root (unshare, mount, chroot, apt-get). Installs with apt-get what it lacks:
# desktop-file-utils, curl, iproute2, systemd (for systemd-analyze), dpkg-dev (dpkg-shlibdeps).
#
# Environment:
#   CARGO_TARGET_DIR  honoured: the build and target/debian/ are there
#   DEB_PROFILE       the cargo profile the binary is built with: `release` (build's default),
#                     `dev` (check's default: the workspace's debug build, dependencies at
#                     opt-level 2, as `cargo build --workspace --bins` makes it; in .ci/run,
#                     bench/smoke.sh has built it already, so the check compiles nothing), or
#                     any profile name
#   DEB_MAINTAINER    the Maintainer field and changelog signer [default: Canopy developers
#                     <canopy@localhost>, a placeholder: lintian calls it bogus]
#   CANOPY=PATH       package this canopy binary instead of building one
#   KEEP=1            keep the check's work folder (logs) even when all passed
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=${1:-build}

# ---- Inside the sandbox (see below): runs as PID 1 of the new PID namespace. ----------------
# shellcheck disable=SC2153 # DEB_VERSION and DEB_TITLE come from the host part, below
if [ "$mode" = __sandbox ]; then
  work=$2
  mount -t tmpfs -o mode=0755 deb-check "$work/layers"
  mkdir "$work/layers/upper" "$work/layers/work" "$work/layers/root"
  sysroot=$work/layers/root
  mount -t overlay deb-check -o "lowerdir=/,upperdir=$work/layers/upper,workdir=$work/layers/work" "$sysroot"
  mount -t proc proc "$sysroot/proc"
  mount --rbind /dev "$sysroot/dev"
  mount -t tmpfs -o mode=1777 tmpfs "$sysroot/tmp"
  mount -t tmpfs -o mode=0755 tmpfs "$sysroot/run"
  ip link set lo up
  mkdir "$sysroot/tmp/check"
  cp "$work/canopy.deb" "$root/bench/deb.sh" "$sysroot/tmp/check/"
  # The logs stay readable from outside: the work folder is bound into the root.
  mkdir "$sysroot/tmp/check/logs"
  mount --bind "$work/logs" "$sysroot/tmp/check/logs"
  exec chroot "$sysroot" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEB_VERSION="$DEB_VERSION" DEB_TITLE="$DEB_TITLE" \
    /bin/bash /tmp/check/deb.sh __in_root
fi

started=$(date +%s.%N)
step_start=$started
step() {
  local now
  now=$(date +%s.%N)
  [ -z "${step_name:-}" ] || printf 'deb.sh: %-60s %6.1f s\n' "$step_name" "$(awk -v s="$step_start" -v e="$now" 'BEGIN { print e - s }')"
  step_name=$1
  step_start=$now
}
fail() {
  echo "deb.sh: FAILED at '${step_name:-}': $*" >&2
  local log
  for log in "${logs:-/nonexistent}"/*.log; do
    [ -s "$log" ] || continue
    echo "--- last lines of $(basename "$log"):" >&2
    tail -n 15 "$log" >&2
  done
  exit 1
}

# ---- Inside the throwaway root: the checks on the installed package. ------------------------
if [ "$mode" = __in_root ]; then
  cd /tmp/check
  logs=/tmp/check/logs
  version=$DEB_VERSION
  pids=()
  # shellcheck disable=SC2317 # called by the trap
  stop_all() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  }
  trap stop_all EXIT # (the PID namespace ends them anyway)
  # Waits up to $2 tenths of a second for the file $1 to be non-empty.
  wait_for_file() {
    local i
    for ((i = 0; i < $2; i++)); do
      [ -s "$1" ] && return 0
      sleep 0.1
    done
    return 1
  }
  # Sends SIGTERM to $1 and checks it exits 0 within 5 s.
  stop_cleanly() {
    local pid=$1 i code
    kill -TERM "$pid"
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid"
      fail "canopy run did not exit within 5 s of SIGTERM"
    fi
    code=0
    wait "$pid" || code=$?
    [ "$code" = 0 ] || fail "canopy run exited $code on SIGTERM (expected 0)"
    pids=("${pids[@]/$pid/}")
    echo "  SIGTERM: exit 0 after $(awk -v i="$i" 'BEGIN { print i / 10 }') s"
  }
  # The page at $1 must be the app's HTML.
  check_page() {
    curl -fsS --max-time 10 "$1" > "$logs/page.html" || fail "cannot fetch $1"
    grep -qF "$DEB_TITLE" "$logs/page.html" || fail "$1 is not the app's page (no $DEB_TITLE in it)"
    echo "  $1 serves the app ($DEB_TITLE)"
  }
  # The Exec line of desktop file $1, field codes (%u) left in.
  desktop_exec() {
    sed -n 's/^Exec=//p' "$1" | head -n 1
  }

  step "dpkg -i"
  dpkg-deb -f canopy.deb Version | grep -qxF "$version" || fail "Version is $(dpkg-deb -f canopy.deb Version), not $version"
  dpkg-deb -f canopy.deb Depends | grep -q 'libc6' || fail "Depends does not name libc6: $(dpkg-deb -f canopy.deb Depends)"
  dpkg -i canopy.deb > "$logs/dpkg-install.log" 2>&1 || fail "dpkg -i failed"
  dpkg-query -W -f '${Status} ${Version}\n' canopy | grep -qxF "install ok installed $version" \
    || fail "dpkg says: $(dpkg-query -W -f '${Status} ${Version}' canopy)"

  step "dpkg -L: every file in its place"
  dpkg -L canopy > "$logs/dpkg-L.txt"
  for file in /usr/bin/canopy /usr/libexec/canopy/canopy-app /usr/share/applications/canopy.desktop \
    /usr/share/applications/canopy-link.desktop /usr/lib/systemd/user/canopy.service \
    /usr/share/icons/hicolor/scalable/apps/canopy.svg /usr/share/doc/canopy/copyright \
    /usr/share/doc/canopy/README.Debian /usr/share/doc/canopy/changelog.gz; do
    grep -qxF "$file" "$logs/dpkg-L.txt" || fail "dpkg -L canopy does not list $file"
    [ -f "$file" ] || fail "$file is not installed"
  done
  [ "$(stat -c %a /usr/bin/canopy)" = 755 ] || fail "/usr/bin/canopy has mode $(stat -c %a /usr/bin/canopy)"
  [ "$(stat -c %U:%G /usr/bin/canopy)" = root:root ] || fail "/usr/bin/canopy is owned by $(stat -c %U:%G /usr/bin/canopy)"
  [ -x /usr/libexec/canopy/canopy-app ] || fail "canopy-app is not executable"
  dpkg -V canopy > "$logs/dpkg-V.txt" 2>&1 || fail "dpkg -V: $(cat "$logs/dpkg-V.txt")"
  [ ! -s "$logs/dpkg-V.txt" ] || fail "dpkg -V: $(cat "$logs/dpkg-V.txt")"
  echo "  $(wc -l < "$logs/dpkg-L.txt") paths listed, checksums match"

  step "canopy --version from /usr/bin"
  [ "$(command -v canopy)" = /usr/bin/canopy ] || fail "canopy on PATH is $(command -v canopy)"
  [ "$(canopy --version)" = "canopy $version" ] || fail "canopy --version says: $(canopy --version)"
  echo "  $(canopy --version)"

  step "desktop files validate; canopy: handler registered"
  for file in /usr/share/applications/canopy.desktop /usr/share/applications/canopy-link.desktop; do
    desktop-file-validate "$file" > "$logs/desktop-file-validate.log" 2>&1 \
      || fail "desktop-file-validate $file: $(cat "$logs/desktop-file-validate.log")"
    if [ -s "$logs/desktop-file-validate.log" ]; then sed 's/^/  /' "$logs/desktop-file-validate.log"; fi
  done
  grep -qx 'x-scheme-handler/canopy=canopy-link.desktop;' /usr/share/applications/mimeinfo.cache \
    || fail "the desktop database does not map x-scheme-handler/canopy to canopy-link.desktop"
  echo "  mimeinfo.cache: x-scheme-handler/canopy=canopy-link.desktop;"

  step "systemd-analyze --user verify canopy.service"
  mkdir -m 0700 /run/user-check
  XDG_RUNTIME_DIR=/run/user-check systemd-analyze --user verify /usr/lib/systemd/user/canopy.service \
    > "$logs/systemd-analyze.log" 2>&1 || fail "systemd-analyze verify: $(cat "$logs/systemd-analyze.log")"
  [ ! -s "$logs/systemd-analyze.log" ] || fail "systemd-analyze verify: $(cat "$logs/systemd-analyze.log")"
  grep -qx 'ExecStart=/usr/bin/canopy run' /usr/lib/systemd/user/canopy.service || fail "ExecStart is not /usr/bin/canopy run"
  echo "  no complaint"

  # A fresh user: HOME with nothing in it; the node's data goes to the XDG default.
  export HOME=/tmp/user
  mkdir -p "$HOME/bin"
  data=$HOME/.local/share/canopy

  step "installed canopy run serves the page; SIGTERM: exit 0"
  port=4700
  canopy run --role leaf --listen 127.0.0.1:0 --no-lan-discovery --ui-listen "127.0.0.1:$port" \
    > "$logs/run.log" 2>&1 &
  pids+=($!)
  run_pid=$!
  wait_for_file "$data/ui.addr" 150 || fail "no app address recorded in $data/ui.addr within 15 s"
  [ "$(cat "$data/ui.addr")" = "127.0.0.1:$port" ] || fail "the app is at $(cat "$data/ui.addr"), not 127.0.0.1:$port"
  [ -s "$data/node.key" ] || fail "no key in the XDG data folder $data"
  check_page "http://127.0.0.1:$port/"
  stop_cleanly "$run_pid"

  step "menu entry starts the node and opens its page; again while it runs"
  # shellcheck disable=SC2016 # $* is for the recorder
  # The desktop's opener, replaced by one that records what it is asked to open.
  printf '#!/bin/sh\necho "$*" >> %s/opened\n' "$HOME" > "$HOME/bin/xdg-open"
  chmod +x "$HOME/bin/xdg-open"
  export PATH=$HOME/bin:$PATH
  read -r -a menu_exec <<< "$(desktop_exec /usr/share/applications/canopy.desktop)"
  ((${#menu_exec[@]})) || fail "canopy.desktop has no Exec line"
  # No field codes or quoting in it: the desktop runs its words as they are.
  for attempt in 1 2 3; do
    "${menu_exec[@]}" > "$logs/menu-run.log" 2>&1 &
    pids+=($!)
    menu_pid=$!
    for ((i = 0; i < 300; i++)); do
      [ ! -s "$HOME/opened" ] || break
      kill -0 "$menu_pid" 2>/dev/null || break
      sleep 0.1
    done
    [ ! -s "$HOME/opened" ] || break
    kill -0 "$menu_pid" 2>/dev/null || wait "$menu_pid" || true
    # A node bug, not the package's: `canopy run` on its fixed port (4663) sometimes finds it
    # still held by its own election's endpoint, closed an instant before (more often on a
    # busy machine: 2 starts in 30 under load). Said, and tried again.
    if [ "$attempt" -lt 3 ] && grep -q 'cannot open a UDP socket on .*Address already in use' "$logs/menu-run.log"; then
      echo "  NOTE: canopy run failed to start: $(grep -o 'cannot open a UDP socket.*' "$logs/menu-run.log") (the election's socket, not yet closed: a node bug); again"
      continue
    fi
    break
  done
  [ -s "$HOME/opened" ] || fail "the menu entry opened nothing within 30 s"
  url=$(head -n 1 "$HOME/opened")
  [ "$url" = "http://127.0.0.1:4664/" ] || fail "the menu entry opened $url, not the app at http://127.0.0.1:4664/"
  echo "  started the node and opened $url"
  check_page "$url"
  : > "$HOME/opened"
  timeout 20 "${menu_exec[@]}" > "$logs/menu-again.log" 2>&1 || fail "the menu entry, run while the node runs, failed"
  [ "$(cat "$HOME/opened")" = "$url" ] || fail "the menu entry, run again, opened '$(cat "$HOME/opened")', not $url"
  kill -0 "$menu_pid" 2>/dev/null || fail "the node stopped"
  echo "  run again: opened $url (exit 0)"

  step "canopy: link handler hands a link to the running app"
  hash=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  link="canopy:$hash?size=1024&name=deb-check.bin"
  handler=$(desktop_exec /usr/share/applications/canopy-link.desktop)
  [ "$handler" = "canopy open %u" ] || fail "canopy-link.desktop runs '$handler'"
  # %u is the link, as one word.
  read -r -a words <<< "$handler"
  for i in "${!words[@]}"; do [ "${words[$i]}" != %u ] || words[i]=$link; done
  "${words[@]}" > "$logs/open-link.log" 2>&1 || fail "canopy open $link failed: $(cat "$logs/open-link.log")"
  grep -q "^downloading deb-check.bin ($hash)" "$logs/open-link.log" || fail "canopy open said: $(cat "$logs/open-link.log")"
  echo "  $(cat "$logs/open-link.log")"
  stop_cleanly "$menu_pid"

  step "menu entry, user unit enabled: starts the unit, opens its page"
  # The user's service manager, replaced by one that says the unit is enabled and, asked to start
  # it, runs the unit's ExecStart line in the background, recording the node's exit status; like
  # Restart=on-failure (but at once), it starts the node again if it lost the start-up race above.
  cat > "$HOME/bin/systemctl" <<EOF
#!/bin/sh
echo "\$*" >> $HOME/systemctl.calls
case "\$*" in
  "--user --quiet is-enabled canopy.service") exit 0 ;;
  "--user start canopy.service")
    for attempt in 1 2 3; do
      rm -f $HOME/unit.exit
      ( \$(sed -n 's/^ExecStart=//p' /usr/lib/systemd/user/canopy.service) > $logs/unit-run.log 2>&1 &
        echo \$! > $HOME/unit.pid; wait \$!; echo \$? > $HOME/unit.exit ) &
      i=0
      while [ \$i -lt 300 ] && [ ! -s $data/ui.addr ] && [ ! -e $HOME/unit.exit ]; do sleep 0.1; i=\$((i + 1)); done
      if [ -e $HOME/unit.exit ] && grep -q 'Address already in use' $logs/unit-run.log; then
        echo restarted >> $HOME/systemctl.calls
        continue
      fi
      break
    done
    exit 0 ;;
esac
exit 1
EOF
  chmod +x "$HOME/bin/systemctl"
  : > "$HOME/opened"
  timeout 60 "${menu_exec[@]}" > "$logs/menu-unit.log" 2>&1 \
    || fail "the menu entry, with the unit enabled, failed: $(cat "$logs/menu-unit.log")"
  grep -qxF -- '--user start canopy.service' "$HOME/systemctl.calls" || fail "the menu entry did not start the unit"
  if grep -q restarted "$HOME/systemctl.calls"; then
    echo "  NOTE: the unit's node lost the start-up race on port 4663 (a node bug, above) and was restarted"
  fi
  [ "$(cat "$HOME/opened")" = "$url" ] || fail "the menu entry opened '$(cat "$HOME/opened")', not $url"
  echo "  started the unit (its ExecStart) and opened $url"
  check_page "$url"
  unit_pid=$(cat "$HOME/unit.pid")
  kill -TERM "$unit_pid"
  for ((i = 0; i < 50; i++)); do
    [ ! -e "$HOME/unit.exit" ] || break
    sleep 0.1
  done
  [ -e "$HOME/unit.exit" ] || fail "the unit's canopy run did not exit within 5 s of SIGTERM"
  [ "$(cat "$HOME/unit.exit")" = 0 ] || fail "the unit's canopy run exited $(cat "$HOME/unit.exit") on SIGTERM (expected 0)"
  echo "  SIGTERM: exit 0 after $(awk -v i="$i" 'BEGIN { print i / 10 }') s"
  rm "$HOME/bin/systemctl"

  step "dpkg -r canopy"
  dpkg -r canopy > "$logs/dpkg-remove.log" 2>&1 || fail "dpkg -r failed"
  for file in /usr/bin/canopy /usr/libexec/canopy/canopy-app /usr/share/applications/canopy.desktop \
    /usr/share/applications/canopy-link.desktop /usr/lib/systemd/user/canopy.service; do
    [ ! -e "$file" ] || fail "$file is still there after dpkg -r"
  done
  ! grep -q 'canopy-link.desktop' /usr/share/applications/mimeinfo.cache 2>/dev/null \
    || fail "the desktop database still names canopy-link.desktop"
  dpkg-query -W -f '${Status}' canopy 2>/dev/null | grep -q 'not-installed' \
    || [ -z "$(dpkg-query -W -f '${Status}' canopy 2>/dev/null)" ] \
    || fail "dpkg still has canopy: $(dpkg-query -W -f '${Status}' canopy)"
  echo "  /usr/bin/canopy and the desktop files are gone"
  step ""
  exit 0
fi

# ---- On the host: build the package. ----------------------------------------------------------
case $mode in
  build) profile=${DEB_PROFILE:-release} ;;
  check) profile=${DEB_PROFILE:-dev} ;;
  *)
    echo "usage: bench/deb.sh [build|check]" >&2
    exit 2
    ;;
esac
target_dir=${CARGO_TARGET_DIR:-$root/target}
case $target_dir in /*) ;; *) target_dir=$root/$target_dir ;; esac
case $profile in
  dev) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac

if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
missing=()
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
if [ "$mode" = check ]; then
  command -v desktop-file-validate >/dev/null || missing+=(desktop-file-utils)
  command -v curl >/dev/null || missing+=(curl)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v systemd-analyze >/dev/null || missing+=(systemd)
fi
if ((${#missing[@]})); then
  echo "deb.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -n "${CANOPY:-}" ]; then
  binary=$CANOPY
  [ -x "$binary" ] || fail "CANOPY=$binary is not an executable"
else
  step "cargo build --profile $profile --bin canopy"
  # --workspace: the features of the whole workspace, as `cargo build --workspace --bins` (CI's
  # smoke benchmarks) builds them, so that build's binary is reused as it is.
  cargo build --quiet --workspace --bin canopy --profile "$profile"
  binary=$target_dir/$profile_dir/canopy
  [ -x "$binary" ] || fail "no $binary after the build"
fi

step "stage and dpkg-deb --build"
version=$(cargo pkgid -p canopy-node | sed 's/.*[@#]//')
deb_version=${version//-/\~} # 1.0.0-rc.1 sorts before 1.0.0 only as 1.0.0~rc.1
arch=$(dpkg --print-architecture)
# A package of another build than release goes beside, so that it never passes for the real one.
out=$target_dir/debian
[ "$profile" = release ] || out=$target_dir/debian/$profile_dir
stage=$out/canopy_${deb_version}_${arch}
deb=$out/canopy_${deb_version}_${arch}.deb
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
install -D -m 0755 "$binary" "$stage/usr/bin/canopy"
strip --strip-unneeded "$stage/usr/bin/canopy"
install -D -m 0755 deploy/deb/canopy-app "$stage/usr/libexec/canopy/canopy-app"
install -D -m 0644 deploy/deb/canopy.desktop "$stage/usr/share/applications/canopy.desktop"
install -D -m 0644 deploy/canopy-link.desktop "$stage/usr/share/applications/canopy-link.desktop"
install -D -m 0644 deploy/deb/canopy.service "$stage/usr/lib/systemd/user/canopy.service"
install -D -m 0644 node/src/web/assets/icon.svg "$stage/usr/share/icons/hicolor/scalable/apps/canopy.svg"
install -D -m 0644 deploy/deb/README.Debian "$stage/usr/share/doc/canopy/README.Debian"
{
  cat deploy/deb/copyright
  echo
  echo "Comment: Rust crates built into /usr/bin/canopy (name version: license), from Cargo.lock:"
  cargo tree --offline --quiet -p canopy-node -e normal,no-proc-macro --prefix none -f '{p}: {l}' \
    | sed 's/ (\*)$//; s/ v\([0-9]\)/ \1/' | grep -v '^canopy-' | sort -u | sed 's/^/ /'
} > "$stage/usr/share/doc/canopy/copyright"
chmod 0644 "$stage/usr/share/doc/canopy/copyright"
# Reproducible: dated at the last commit (files, changelog, the archive's members).
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
maintainer=${DEB_MAINTAINER:-Canopy developers <canopy@localhost>}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  printf 'canopy (%s) unstable; urgency=medium\n\n' "$deb_version"
  printf '  * Built from the Canopy repository at commit %s.\n\n' "$commit"
  printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$stage/usr/share/doc/canopy/changelog.gz"
chmod 0644 "$stage/usr/share/doc/canopy/changelog.gz"

# Depends: the shared libraries the binary links, as dpkg-shlibdeps names their packages.
depends="libc6, libgcc-s1"
if command -v dpkg-shlibdeps >/dev/null; then
  shlibs=$(mktemp -d)
  mkdir "$shlibs/debian"
  printf 'Source: canopy\n\nPackage: canopy\nArchitecture: any\n' > "$shlibs/debian/control"
  found=$(cd "$shlibs" && dpkg-shlibdeps -O "$stage/usr/bin/canopy" 2> "$shlibs/err" | sed -n 's/^shlibs:Depends=//p') || true
  rm -rf "$shlibs"
  if [ -n "$found" ]; then depends=$found; else echo "deb.sh: dpkg-shlibdeps gave nothing; Depends: $depends" >&2; fi
fi
installed_size=$(du -sk --apparent-size "$stage/usr" | cut -f1)
sed -e "s/@VERSION@/$deb_version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
  -e "s/@INSTALLED_SIZE@/$installed_size/" -e "s|@MAINTAINER@|$maintainer|" deploy/deb/control.in > "$stage/DEBIAN/control"
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# xz (dpkg's default: smallest, read by every dpkg) for the package to hand out; a check's package
# is compressed in a blink instead (xz takes 8 s of CPU over the binary).
compress=(-Zxz)
[ "$profile" = release ] || compress=(-Zgzip -z1)
dpkg-deb "${compress[@]}" --build --root-owner-group "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "deb.sh: built $deb ($(du -h "$deb" | cut -f1); Depends: $depends)"

if [ "$mode" = build ]; then
  step ""
  exit 0
fi

# ---- The check: install and try the package in a throwaway root. ------------------------------
for tool in unshare chroot; do command -v $tool >/dev/null || fail "$tool is missing"; done
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || fail "this kernel has no overlayfs"
title=$(grep -o '<title>[^<]*</title>' node/src/web/assets/index.html | head -n 1)
[ -n "$title" ] || fail "no <title> in node/src/web/assets/index.html"
work=$(mktemp -d /tmp/canopy-deb.XXXXXX)
logs=$work/logs
mkdir "$work/layers" "$logs"
failed=1
cleanup() {
  # The namespaces' mounts and processes are gone with them; only the folder is left.
  if [ "$failed" = 0 ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$work"; else echo "deb.sh: logs kept in $logs"; fi
}
trap cleanup EXIT
cp "$deb" "$work/canopy.deb"
step "install and check in a throwaway root"
echo
code=0
DEB_VERSION=$deb_version DEB_TITLE=$title timeout 300 unshare --mount --net --pid --fork --kill-child \
  --propagation private bash "$root/bench/deb.sh" __sandbox "$work" || code=$?
echo
if [ "$code" != 0 ]; then
  # What failed and the end of the logs were printed in there.
  why="exit $code"
  [ "$code" != 124 ] || why="timed out after 300 s"
  echo "deb.sh: FAILED: the check in the throwaway root ($why)" >&2
  exit 1
fi
step ""
failed=0
total=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
echo "deb.sh: all checks passed in $total s"
