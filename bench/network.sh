#!/usr/bin/env bash
# What `--network off` costs against `--network on`: twenty real crates from crates.io (small to
# medium, some with build scripts, some with dependencies and proc macros) through
# `crater-at-home run --tool check --slots 1` both ways. `off` (the default) starts a short-lived
# fetch container per crate that unpacks it and downloads its dependencies, then builds in the
# slot container with no network; `on` downloads inside the slot container. Everything else (the
# slot disk, the user split) is the same on both sides.
#
#   bench/network.sh [ROUNDS]      (default 3)
#
# One untimed warm-up run of each side, then ROUNDS rounds alternating which side goes first.
# Prints Markdown: the time of each side per round and the ratio off/on, the median ratio, the
# per-crate seconds (the mean over the twenty crates of each side's median run, and each crate's
# median job time from its JSON verdict), and the verdicts of every crate on both sides, with the
# crates whose verdict differs between off and on flagged. The results and logs of every run are
# kept in the folder it names at the start (KEEP=DIR to choose it).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
crates=(itoa@1.0.19 ryu@1.0.23 semver@1.0.28 memchr@2.8.3 cfg-if@1.0.5 once_cell@1.21.4
        bitflags@2.13.2 either@1.19.0 smallvec@1.16.6 scopeguard@1.2.0 libc@0.2.191
        serde@1.0.229 log@0.4.35 hashbrown@0.17.1 anyhow@1.0.104 thiserror@2.0.21
        regex-syntax@0.8.12 byteorder@1.5.0 lazy_static@1.5.1 unicode-ident@1.0.27)

cargo build --release --quiet --bin crater-at-home
bin=target/release/crater-at-home
"$bin" image build >/dev/null 2>&1
keep=${KEEP:-$(mktemp -d /tmp/crater-network-bench.XXXXXX)}
mkdir -p "$keep"
echo "results and logs of every run: $keep" >&2

crate_args=()
for c in "${crates[@]}"; do crate_args+=(--crate "$c"); done

# run_side SIDE LABEL: one `run` of all crates with --network SIDE into $keep/SIDE; its results
# and logs are then copied to $keep/LABEL, its verdicts appended to $keep/verdicts.tsv.
run_side() {
    local side=$1 label=$2 out=$keep/$1
    if ! "$bin" run --tool check --slots 1 --rerun --network "$side" --out "$out" \
        "${crate_args[@]}" >"$keep/$label.log" 2>&1; then
        echo "$label: run failed (exit status $?), log $keep/$label.log" >&2
        exit 1
    fi
    rm -rf "${keep:?}/$label"
    cp -r "$out/check" "$keep/$label"
    local c name version json
    for c in "${crates[@]}"; do
        name=${c%@*} version=${c#*@}
        json=$out/check/results/$name/$version.json
        if [ -f "$json" ]; then
            jq -r --arg side "$side" --arg run "$label" \
                '[$side, $run, .crate + "@" + .version, .status, .duration_ms] | @tsv' "$json"
        else
            printf '%s\t%s\t%s\tmissing\t0\n' "$side" "$label" "$c"
        fi
    done >>"$keep/verdicts.tsv"
}

calc() { awk "BEGIN { print $* }"; }
seconds() { local start=$EPOCHREALTIME; "$@" >&2; calc "$EPOCHREALTIME - $start"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: >"$keep/verdicts.tsv"
run_side off off-warmup # the image, the page cache, the binaries and the index once, untimed
run_side on on-warmup
off_times=() on_times=() ratios=()
echo "| round | order | off (s) | on (s) | off/on |"
echo "|---|---|---|---|---|"
for i in $(seq 1 "$rounds"); do
    if (( i % 2 )); then
        f=$(seconds run_side off "off-$i"); o=$(seconds run_side on "on-$i"); order="off,on"
    else
        o=$(seconds run_side on "on-$i"); f=$(seconds run_side off "off-$i"); order="on,off"
    fi
    off_times+=("$f") on_times+=("$o") ratios+=("$(calc "$f / $o")")
    printf '| %d | %s | %.1f | %.1f | %.3f |\n' "$i" "$order" "$f" "$o" "$(calc "$f / $o")"
done
mf=$(median "${off_times[@]}") mo=$(median "${on_times[@]}")
printf '| median | | %.1f | %.1f | %.3f |\n' "$mf" "$mo" "$(calc "$mf / $mo")"
n=${#crates[@]}
printf '\nmedian of the per-round ratios off/on: %.3f\n' "$(median "${ratios[@]}")"
printf 'per crate: off %.2f s, on %.2f s, off − on %+.2f s\n' \
    "$(calc "$mf / $n")" "$(calc "$mo / $n")" "$(calc "($mf - $mo) / $n")"

# Per crate, over the timed rounds: the median job time (duration_ms: the crate's download on the
# host, the fetch container for off, the build) and the verdicts of every run, warm-up included.
echo
echo "| crate | off: job (s) | on: job (s) | off − on (s) | off verdicts | on verdicts | same? |"
echo "|---|---|---|---|---|---|---|"
# verdicts SIDE: "pass ×4" (several verdicts sorted, comma-separated) of crate $c on SIDE.
verdicts() {
    awk -F'\t' -v c="$c" -v s="$1" '$1 == s && $3 == c {n[$4]++} END {
        for (v in n) printf "%s ×%d\n", v, n[v] }' "$keep/verdicts.tsv" | sort | paste -sd, - |
        sed 's/,/, /g'
}
differ=()
for c in "${crates[@]}"; do
    # shellcheck disable=SC2207 # numbers, one a line
    off_ms=($(awk -F'\t' -v c="$c" '$1 == "off" && $2 !~ /warmup/ && $3 == c {print $5}' "$keep/verdicts.tsv"))
    # shellcheck disable=SC2207
    on_ms=($(awk -F'\t' -v c="$c" '$1 == "on" && $2 !~ /warmup/ && $3 == c {print $5}' "$keep/verdicts.tsv"))
    vf=$(verdicts off) vo=$(verdicts on)
    same=yes
    if [ "$vf" != "$vo" ]; then same="**no**"; differ+=("$c"); fi
    jf=$(calc "$(median "${off_ms[@]}") / 1000") jo=$(calc "$(median "${on_ms[@]}") / 1000")
    printf '| %s | %.1f | %.1f | %+.1f | %s | %s | %s |\n' "$c" "$jf" "$jo" "$(calc "$jf - $jo")" \
        "$vf" "$vo" "$same"
done
echo
if ((${#differ[@]})); then
    echo "verdicts differ between off and on: ${differ[*]} (logs under $keep/{off,on}-ROUND/raw)"
else
    echo "every crate got the same verdicts with off and on"
fi
