#!/usr/bin/env bash
# Re-runs every figure in docs/NETSIM.md and copies the charts and summaries
# into docs/netsim/. Takes about 60 minutes on a 2-core machine; the largest
# runs need up to 5 GiB of memory. Usage: netsim/reproduce.sh [--smoke] [OUT_DIR]
#
# --smoke (CI's, bench/smoke.sh): the same runs and charts on the debug build,
# every network at 1,000 nodes and at most 100 queries, charts and summaries
# into OUT_DIR/docs-netsim instead of docs/netsim: seconds, and the figures
# mean nothing; it shows that every scenario and chart still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=
if [ "${1:-}" = --smoke ]; then
    smoke=1
    shift
fi
out=${1:-netsim-out}
if [ -n "$smoke" ]; then
    profile=(--profile dev) dir=debug docs=$out/docs-netsim
else
    profile=(--release) dir=release docs=docs/netsim
fi
bin=${CARGO_TARGET_DIR:-target}/$dir/canopy-netsim
examples=${CARGO_TARGET_DIR:-target}/$dir/examples
cargo build "${profile[@]}" -p canopy-netsim --bins --examples
# GNU time reports each run's peak memory (Debian's package "time").
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
mkdir -p "$out" "$docs"
names=()
run() { # name, then arguments
    local name=$1 i
    shift
    local args=("$@")
    if [ -n "$smoke" ]; then
        for ((i = 0; i + 1 < ${#args[@]}; i++)); do
            case ${args[i]} in
                --nodes) args[i + 1]=1000 ;;
                --queries) [ "${args[i + 1]}" -le 100 ] || args[i + 1]=100 ;;
            esac
        done
    fi
    names+=("$name")
    /usr/bin/time -f "$name: %e s wall, %M KiB peak" "$bin" --out "$out/$name" "${args[@]}" | tee "$out/$name.txt"
}
s=netsim/scenarios
# Baselines and Canopy at 10^4 and 10^5 nodes, Weibull churn.
for n in 10000 100000; do
    run "canopy-$n" --scenario $s/canopy.toml --nodes $n --queries 10000
    run "fasttrack-$n" --scenario $s/fasttrack.toml --nodes $n --queries 10000
done
run gnutella-10000 --scenario $s/gnutella.toml --nodes 10000 --queries 1000
run gnutella-100000 --scenario $s/gnutella.toml --nodes 100000 --queries 1000
# The same under a realistic query load (one query per user every ~11 min;
# Gnutella, whose queries cost 10^5 messages each, at 20 queries/s).
run canopy-100000-load --scenario $s/canopy.toml --nodes 100000 --queries 10000 --rate 150
run fasttrack-100000-load --scenario $s/fasttrack.toml --nodes 100000 --queries 10000 --rate 150
run gnutella-100000-load --scenario $s/gnutella.toml --nodes 100000 --queries 1200 --rate 20
# Calibration: a degree-8, TTL-7 flood against the 1.1 M tree.
run calibration-100000 --scenario $s/calibration-flood.toml --nodes 100000
run calibration-fixed-100000 --scenario $s/calibration-flood-fixed-latency.toml --nodes 100000
run calibration-1000000 --scenario $s/calibration-flood.toml --nodes 1000000
# Load against cluster size (Yang & Garcia-Molina), FastTrack selection.
run clusters --scenario $s/fasttrack.toml --nodes 20000 --queries 2000 --rate 10 \
    --cluster-sizes 5,10,20,50,100,200,500
# 10^6 nodes.
run canopy-1000000 --scenario $s/canopy.toml --nodes 1000000 --queries 10000
run fasttrack-1000000 --scenario $s/fasttrack.toml --nodes 1000000 --queries 1000
run gnutella-1000000 --scenario $s/gnutella.toml --nodes 1000000 --queries 200 --rate 1
# Canopy with exponential sessions, and with TTL 7 instead of 4.
run canopy-exponential-100000 --scenario $s/canopy-exponential.toml --nodes 100000 --queries 10000
run canopy-ttl7-100000 --scenario $s/canopy-ttl7.toml --nodes 100000 --queries 10000
run canopy-ttl7-1000000 --scenario $s/canopy-ttl7.toml --nodes 1000000 --queries 2000
# Keyword routing and dynamic querying (issue 11).
for name in canopy-horizon canopy-horizon-small-tables canopy-horizon-rtt fasttrack-rtt \
    canopy-tables canopy-qrp canopy-qrp-ttl5 canopy-qrp-ttl4; do
    run "$name-100000" --scenario $s/$name.toml --nodes 100000 --queries 10000
done
run canopy-horizon-100000-load --scenario $s/canopy-horizon.toml --nodes 100000 --queries 10000 --rate 150
run canopy-horizon-1000000 --scenario $s/canopy-horizon.toml --nodes 1000000 --queries 10000
run canopy-horizon-rtt-1000000 --scenario $s/canopy-horizon-rtt.toml --nodes 1000000 --queries 10000
run fasttrack-rtt-1000000 --scenario $s/fasttrack-rtt.toml --nodes 1000000 --queries 1000
# NAT traversal (issue 19): home routers, and which way each download's
# sources get through them; one download per search, one search per user
# every ~11 min (docs/NAT.md, "In the simulator").
run canopy-nat-100000-load --scenario $s/canopy-nat.toml --nodes 100000 --queries 30000 --rate 150
# Pollution (issue 22): decoys, Sybils, index poisoning and liars against each
# defence (docs/NETSIM.md, "Pollution"); 266,910 searches are the files' 30 per
# user at 10^4 nodes (a pollution study reads --queries as its searches).
run pollution-10000 --scenario $s/pollution.toml --nodes 10000 --queries 266910
run pollution-camouflage-10000 --scenario $s/pollution-camouflage.toml --nodes 10000 --queries 266910
run pollution-no-asking-10000 --scenario $s/pollution-no-asking.toml --nodes 10000 --queries 266910
# Every run's summary (the figure below charts this run's, not older copies).
for name in "${names[@]}"; do
    [ ! -f "$out/$name/summary.csv" ] || cp "$out/$name/summary.csv" "$docs/$name-summary.csv"
done
# Charts into docs/netsim/.
for name in canopy-100000 fasttrack-100000 gnutella-100000 canopy-1000000 canopy-ttl7-1000000 \
    canopy-100000-load fasttrack-100000-load gnutella-100000-load; do
    for chart in reach load timeline; do
        cp "$out/$name/$chart.svg" "$docs/$name-$chart.svg"
    done
done
cp "$out"/clusters/*.svg "$docs"/
for name in pollution-10000 pollution-camouflage-10000 pollution-no-asking-10000; do
    cp "$out/$name/pollution.svg" "$docs/$name.svg"
    cp "$out/$name/pollution.csv" "$docs/$name.csv"
done
d=$docs
"$examples/figure_chart" "$d/query-messages-vs-size.svg" \
    "query messages / query" "Query messages per query (seed 1, 50-500 ms one-way links)" \
    "Gnutella (TTL 7)=$d/gnutella-100000-summary.csv,$d/gnutella-1000000-summary.csv" \
    "FastTrack (TTL 7)=$d/fasttrack-100000-summary.csv,$d/fasttrack-1000000-summary.csv" \
    "Canopy, TTL 4 flood=$d/canopy-100000-summary.csv,$d/canopy-1000000-summary.csv" \
    "Canopy, horizon tables + dynamic=$d/canopy-horizon-100000-summary.csv,$d/canopy-horizon-1000000-summary.csv"
"$examples/reach_chart" "$docs/calibration-reach.svg" 8 \
    "10^5, 100 ms links=$out/calibration-fixed-100000" \
    "10^5, 50-500 ms=$out/calibration-100000" \
    "10^6, 50-500 ms=$out/calibration-1000000"
