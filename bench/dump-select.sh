#!/usr/bin/env bash
# Reading crates.io's database dump at full size: wall time and peak memory of picking every
# crate's version and recent downloads (`crater-at-home list --all --db-dump DUMP`), against the
# least any reader of the dump must do, decompressing and scanning every byte
# (`gzip -dc DUMP | wc -l`).
#
# The real dump cannot be downloaded here, so the dump is a synthetic one in the real format
# (coordinator/examples/synth-dump.rs: 200,000 crates, 1.8 million versions, 15 million
# version_downloads rows; about a minute to write). It is written to a temporary directory and
# removed afterwards, or kept at $CRATER_BENCH_DUMP and reused when that file already exists
# (delete it after changing the generator).
#
#   bench/dump-select.sh                      # BENCH_RUNS=3: each command 3 times, median wall
#   CRATER_BENCH_DUMP=/tmp/db-dump.tar.gz bench/dump-select.sh
#
# Prints a Markdown table; paste it into BENCHMARKS.md. Peak RSS is GNU time's (the largest
# process); it includes the file pages of the dump that db-dump maps into memory (as large as
# the compressed dump), so peak anonymous memory (sampled from /proc 20 times a second, summed
# over the command's processes) is shown too.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_RUNS:-3}

if ! [[ -x /usr/bin/time ]] || ! /usr/bin/time -v true >/dev/null 2>&1; then
    sudo=$([[ $(id -u) == 0 ]] || echo sudo)
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq time >/dev/null
fi

cargo build --release --quiet -p crater-coordinator --bin crater-at-home --example synth-dump
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

dump=${CRATER_BENCH_DUMP:-$work/db-dump.tar.gz}
if [[ -s $dump ]]; then
    echo "reusing the dump $dump" >&2
else
    mkdir -p "$(dirname "$dump")"
    "$bin/examples/synth-dump" "$dump" >&2
fi
cat "$dump" >/dev/null # warm the page cache: every command reads it from memory

descendants() {
    local child
    for child in $(pgrep -P "$1"); do
        echo "$child"
        descendants "$child"
    done
}

# measure NAME COMMAND...: runs it under GNU time; sets wall (s), rss (KiB), anon (KiB).
measure() {
    local name=$1
    shift
    /usr/bin/time -v -o "$work/time.$name" "$@" >"$work/stdout.$name" 2>"$work/stderr.$name" &
    local timer=$! sample pid kib
    anon=0
    while kill -0 "$timer" 2>/dev/null; do
        sample=0
        for pid in $(descendants "$timer"); do
            kib=$(awk '$1 == "RssAnon:" { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
            sample=$((sample + ${kib:-0}))
        done
        if ((sample > anon)); then anon=$sample; fi
        sleep 0.05
    done
    if ! wait "$timer"; then
        echo "$name failed:" >&2
        cat "$work/stderr.$name" "$work/time.$name" >&2
        exit 1
    fi
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {
        n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' \
        "$work/time.$name")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time.$name")
}

# bench NAME COMMAND...: $runs runs; the median wall time, the largest peaks.
declare -A walls rsss anons
bench() {
    local name=$1 i all=()
    shift
    local max_rss=0 max_anon=0
    for ((i = 0; i < runs; i++)); do
        measure "$name" "$@"
        all+=("$wall")
        if ((rss > max_rss)); then max_rss=$rss; fi
        if ((anon > max_anon)); then max_anon=$anon; fi
    done
    walls[$name]=$(printf '%s\n' "${all[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    rsss[$name]=$max_rss
    anons[$name]=$max_anon
}

bench baseline bash -c "gzip -dc '$dump' | wc -l"
lines=$(cat "$work/stdout.baseline")
list_run() { rm -rf "$work/out" && "$bin/crater-at-home" list --all --db-dump "$dump" --out "$work/out"; }
export -f list_run
export bin dump work
bench list bash -c list_run
listed=$(wc -l <"$work/stdout.list")

size=$(stat -c %s "$dump")
echo "dump: $(awk -v s="$size" 'BEGIN { printf "%.0f MiB", s / 1048576 }') gzip'd, $lines lines;" \
    "$(grep -h 'the dump lists' "$work/stderr.list" || true); $listed crates listed"
echo "median of $runs runs; peaks are the largest of the runs"
echo
echo "| command | wall (s) | peak RSS (MiB) | peak anon (MiB) | wall / baseline |"
echo "|---|---|---|---|---|"
row() {
    # The name goes through the environment: awk -v would take `\|` for an escape.
    name=$1 awk -v w="${walls[$2]}" -v r="${rsss[$2]}" -v a="${anons[$2]}" -v b="${walls[baseline]}" \
        'BEGIN { printf "| %s | %.2f | %.0f | %.0f | %.2f |\n", ENVIRON["name"], w, r / 1024, a / 1024, w / b }'
}
row '`gzip -dc DUMP \| wc -l` (baseline)' baseline
row '`crater-at-home list --all --db-dump DUMP`' list
