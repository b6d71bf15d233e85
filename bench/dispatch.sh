#!/usr/bin/env bash
# Dispatch at scale: simulated agents (`examples/dispatch-bench.rs`, AGENTS gRPC streams of SLOTS
# slots, each job answered at once with a 64 KiB log and its JobDone) against one coordinator in
# a child process storing to a local directory on disk, against the same coordinator with its
# spool and store on tmpfs (/dev/shm) as the baseline. Rounds alternate which side goes first.
#
#   bench/dispatch.sh [JOBS [AGENTS [SLOTS [ROUNDS]]]]     (default 5000 50 20 3)
#
# Honours CARGO_TARGET_DIR. Prints a Markdown table; paste it into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-5000} agents=${2:-50} slots=${3:-20} rounds=${4:-3}
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --quiet -p crater-coordinator --example dispatch-bench
bin=$target/release/examples/dispatch-bench
disk_root=$(mktemp -d -p "$target")
shm_root=$(mktemp -d -p /dev/shm)
trap 'rm -rf "$disk_root" "$shm_root"' EXIT

# One run: its key=value line.
run() {
    local dir=$1/run
    rm -rf "$dir" && mkdir -p "$dir"
    "$bin" "$dir" "$jobs" "$agents" "$slots"
    rm -rf "$dir"
}

results=$(mktemp)
for round in $(seq "$rounds"); do
    if (( round % 2 )); then order="disk shm"; else order="shm disk"; fi
    for side in $order; do
        if [[ $side == disk ]]; then root=$disk_root; else root=$shm_root; fi
        echo "round $round: $side" >&2
        echo "round=$round side=$side $(run "$root")" >>"$results"
    done
done

echo "$jobs jobs, $agents agents × $slots slots, 64 KiB log each; disk: $(df --output=source "$target" | tail -1), baseline: tmpfs"
echo
echo "| round | disk stored/s | tmpfs stored/s | disk / tmpfs | p50 ms (disk / tmpfs) | p99 ms (disk / tmpfs) | CPU s per 1,000 jobs (disk / tmpfs) | peak RSS MiB (disk / tmpfs) |"
echo "|---|---|---|---|---|---|---|---|"
awk '
function val(key,   i, kv) {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) return kv[2] }
    return "nan"
}
function median(arr, n,   i, j, t, s) {
    for (i = 1; i <= n; i++) s[i] = arr[i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
    return (n % 2) ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
}
{
    r = val("round"); side = val("side"); rounds[r] = 1
    for (k = 1; k <= 6; k++) {
        key = (k == 1) ? "stored_per_s" : (k == 2) ? "p50_ms" : (k == 3) ? "p99_ms" : (k == 4) ? "cpu_s_per_1000" : (k == 5) ? "peak_rss_mib" : "store_failures"
        v[side, key, r] = val(key)
    }
    if (val("store_failures") + 0 > 0) failures = 1
}
END {
    n = 0
    for (r = 1; r in rounds; r++) {
        n++
        ratio[n] = v["disk", "stored_per_s", r] / v["shm", "stored_per_s", r]
        for (k = 1; k <= 5; k++) {
            key = (k == 1) ? "stored_per_s" : (k == 2) ? "p50_ms" : (k == 3) ? "p99_ms" : (k == 4) ? "cpu_s_per_1000" : "peak_rss_mib"
            d[key, n] = v["disk", key, r]; s[key, n] = v["shm", key, r]
        }
        printf "| %d | %.0f | %.0f | %.3f | %.1f / %.1f | %.1f / %.1f | %.2f / %.2f | %.1f / %.1f |\n", r,
            d["stored_per_s", n], s["stored_per_s", n], ratio[n], d["p50_ms", n], s["p50_ms", n],
            d["p99_ms", n], s["p99_ms", n], d["cpu_s_per_1000", n], s["cpu_s_per_1000", n],
            d["peak_rss_mib", n], s["peak_rss_mib", n]
    }
    for (k = 1; k <= 5; k++) {
        key = (k == 1) ? "stored_per_s" : (k == 2) ? "p50_ms" : (k == 3) ? "p99_ms" : (k == 4) ? "cpu_s_per_1000" : "peak_rss_mib"
        for (i = 1; i <= n; i++) { a[i] = d[key, i]; b[i] = s[key, i] }
        md[key] = median(a, n); ms[key] = median(b, n)
    }
    printf "| median | %.0f | %.0f | **%.3f** | %.1f / %.1f | %.1f / %.1f | %.2f / %.2f | %.1f / %.1f |\n",
        md["stored_per_s"], ms["stored_per_s"], median(ratio, n), md["p50_ms"], ms["p50_ms"],
        md["p99_ms"], ms["p99_ms"], md["cpu_s_per_1000"], ms["cpu_s_per_1000"],
        md["peak_rss_mib"], ms["peak_rss_mib"]
    if (failures) print "\nWARNING: some results failed to store"
}' "$results"
echo
echo "raw lines:"
sed 's/^/    /' "$results"
rm -f "$results"
