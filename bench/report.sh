#!/usr/bin/env bash
# `report` over a synthetic store of CRATES results (small logs, every verdict; written by
# examples/synth-store.rs), against a baseline of reading the same verdict JSON files (`cat` of
# all of them) in the same round:
#   full      `report --full --no-archives`: every verdict read one by one
#   snapshot  after 1% of the verdicts were rewritten: `report --no-archives` (the rest come
#             from {tool}/results.jsonl)
#   archives  `report` with the two log archives, against `tar -c raw | zstd -3` of the raw logs
#   xz        the archive format: `tar -c raw | xz -6` against `tar -c raw | zstd -3`, time and size
# and the landing page's size and Chromium's time to show it: `chromium --headless --dump-dom`
# of index.html (its data.js holds every crate, and the search has run once by the end of
# loading) against the same for a page with nothing on it.
# Each figure is the median of ROUNDS; wall seconds and peak RSS from /usr/bin/time -v.
#
#   bench/report.sh [CRATES] [ROUNDS]       (defaults 200000 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
crates=${1:-200000}
rounds=${2:-3}
tgt=${CARGO_TARGET_DIR:-target}
for tool in zstd xz; do
    command -v $tool >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${tool/xz/xz-utils}"
done
cargo build --release --quiet -p crater-coordinator --bin crater-at-home --example synth-store
bin=$PWD/$tgt/release/crater-at-home
[[ $tgt = /* ]] && bin=$tgt/release/crater-at-home
synth=${bin%/crater-at-home}/examples/synth-store
work=$(mktemp -d -p "${TMPDIR:-/tmp}")
trap 'rm -rf "$work"' EXIT
store=$work/store
echo "writing $crates synthetic results to $store"
"$synth" "$store" "$crates"

measure() { # label, command...: prints "label wall_s peak_kib"
    local label=$1; shift
    /usr/bin/time -v -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$work/time")
    rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/time")
    echo "$label $wall $rss"
}
cat_all() { find "$store/check/results" -name '*.json' -print0 | xargs -0 cat; }
export -f cat_all; export store
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: >"$work/rows"
for round in $(seq "$rounds"); do
    measure cat bash -c cat_all >>"$work/rows"
    measure full "$bin" report --out "$store" --full --no-archives >>"$work/rows"
    "$synth" "$store" "$crates" --touch 1 2>/dev/null
    measure cat1 bash -c cat_all >>"$work/rows"
    measure snapshot "$bin" report --out "$store" --no-archives >>"$work/rows"
done
written=$(du -cb "$store/check/"{index.html,ub.html,failures.html,data.js,summary.json,results.jsonl} | tail -1 | cut -f1)
for round in $(seq "$rounds"); do
    measure tarzst sh -c "tar -C '$store/check' -c raw | zstd -3 -q -c >'$work/raw.tar.zst'" >>"$work/rows"
    measure archives "$bin" report --out "$store" >>"$work/rows"
done

for round in $(seq "$rounds"); do
    measure xz sh -c "tar -C '$store/check' -c raw | xz -6 -T1 -c >'$work/raw.tar.xz'" >>"$work/rows"
done

row() { # label: median wall and rss
    local wall rss
    wall=$(awk -v l="$1" '$1==l {print $2}' "$work/rows" | median)
    rss=$(awk -v l="$1" '$1==l {print $3}' "$work/rows" | median)
    echo "$wall $rss"
}
printf '%-10s %10s %12s\n' what wall_s peak_MiB
for label in cat full cat1 snapshot tarzst archives xz; do
    read -r wall rss < <(row "$label")
    printf '%-10s %10s %12s\n' "$label" "$wall" "$((rss / 1024))"
done
ratio() { awk -v a="$(row "$1" | cut -d' ' -f1)" -v b="$(row "$2" | cut -d' ' -f1)" 'BEGIN {printf "%.2f", a/b}'; }
echo "full/cat $(ratio full cat)  snapshot/cat $(ratio snapshot cat1)  archives/tar|zstd $(ratio archives tarzst)  xz/zstd $(ratio xz tarzst)"
echo "pages written by one report: $((written / 1024)) KiB (results.jsonl included)"
ls -l "$store/check/raw.tar.zst" "$work/raw.tar.zst" "$work/raw.tar.xz" | awk '{print $5, $9}'
ls -l "$store/check/index.html" "$store/check/data.js" | awk '{print $5, $9}'

if command -v chromium >/dev/null; then
    printf '<!DOCTYPE html><html lang="en"><head><title>blank</title></head><body></body></html>' >"$work/blank.html"
    dom() { chromium --headless=new --no-sandbox --disable-gpu --dump-dom "$1"; }
    export -f dom
    : >"$work/tti"
    for round in $(seq "$rounds"); do
        measure blank bash -c "dom file://$work/blank.html" >>"$work/tti"
        measure landing bash -c "dom file://$store/check/index.html" >>"$work/tti"
    done
    b=$(awk '$1=="blank" {print $2}' "$work/tti" | median)
    l=$(awk '$1=="landing" {print $2}' "$work/tti" | median)
    echo "chromium dump-dom: blank ${b}s, landing ${l}s, landing/blank $(awk -v a="$l" -v b="$b" 'BEGIN {printf "%.2f", a/b}')"
fi
