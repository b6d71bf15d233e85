#!/usr/bin/env bash
# Per-crate harness overhead: ten small real crates through `crater-at-home run --tool check`
# against the same work done directly in the same image: one container with the slot's flags,
# `docker exec` in a loop doing what the worker loop does (download the .crate, clean caches,
# cargo update, cargo fetch, cargo check with the crate's docs.rs/playground features, as the
# unprivileged crate user) without the harness
# (no gRPC, no pty, no spooling, no HTML, no fetch container, no slot disk). Every side uses one
# slot, so a ratio is harness time / direct time.
#
#   bench/harness-overhead.sh [ROUNDS] [BASELINE_BIN]
#
# ROUNDS defaults to 3. Without BASELINE_BIN, rounds alternate the two sides `run` (this tree's
# binary with its defaults) and direct. With BASELINE_BIN (a `crater-at-home` built from an older
# commit), each round times four sides in rotating order: the baseline's `run` with its own
# defaults, this tree's `run` with its defaults, this tree's `run --network on`, and direct; each
# binary builds and uses its own worker image (`image build`), the direct side this tree's. One
# untimed warm-up run of every side comes first.
#
# Prints a Markdown table and the median ratios; paste it into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
baseline=${2:-}
crates=(itoa@1.0.19 ryu@1.0.23 semver@1.0.28 memchr@2.8.3 cfg-if@1.0.5 once_cell@1.21.4
        bitflags@2.13.2 either@1.19.0 smallvec@1.16.6 scopeguard@1.2.0)
if [ -n "$baseline" ]; then
    baseline=$(realpath "$baseline")
    [ -x "$baseline" ] || { echo "$baseline: not an executable" >&2; exit 1; }
fi

cargo build --release --quiet --bin crater-at-home
bin=target/release/crater-at-home
image=$("$bin" image build 2>/dev/null | tail -1)
if [ -n "$baseline" ]; then
    base_image=$("$baseline" image build 2>/dev/null | tail -1)
    echo "baseline image $base_image, new image $image" >&2
fi
sysroot=$(rustc +nightly --print sysroot 2>/dev/null || rustc --print sysroot)
target=$(rustc -vV | sed -n 's/^host: //p')
work=$(mktemp -d)
# A failed side leaves $work/keep (it runs in a subshell), so its logs outlive the script.
trap 'docker rm -f crater-bench-direct >/dev/null 2>&1; [ -e "$work/keep" ] || rm -rf "$work"' EXIT

crate_args=()
for c in "${crates[@]}"; do crate_args+=(--crate "$c"); done

# harness NAME BIN [ARGS...]: one `run` of all crates into $work/NAME; every crate must pass.
harness() {
    local name=$1 binary=$2
    shift 2
    local out=$work/$name
    if ! "$binary" run --tool check --slots 1 --rerun --out "$out" "$@" "${crate_args[@]}" \
        >"$out.log" 2>&1; then
        touch "$work/keep"
        echo "$name: run failed, log $out.log, results in $out" >&2
        exit 1
    fi
    local passed
    passed=$(grep -l '"status": "pass"' "$out"/check/results/*/*.json | wc -l)
    if [ "$passed" != "${#crates[@]}" ]; then
        touch "$work/keep"
        echo "$name: only $passed of ${#crates[@]} passed; results in $out/check" >&2
        exit 1
    fi
}

# The crate commands run as the crate user, as docker/worker.sh runs them.
as_crate=(setpriv --reuid=1000 --regid=1000 --clear-groups --inh-caps=-all --)
# One crate, as the worker loop does it: `bash -c "$direct_job" - NAME VERSION TARGET`. The
# features are the worker's `feature_args` (docs.rs and playground metadata): without them some
# crates (either: serde, and with it syn) check far less than through the harness.
# shellcheck disable=SC2016 # expanded by the shell in the container
direct_job='
    set -e
    name=$1 version=$2 target=$3
    find /build /tmp /cargo -mindepth 1 -delete 2>/dev/null || true
    cd /build && curl -sSfL "https://static.crates.io/crates/$name/$name-$version.crate" | tar -xz
    cd "$name-$version" && cargo update -q && cargo fetch -q
    mapfile -t features < <(cargo metadata --no-deps --format-version 1 2>/dev/null </dev/null |
        jq -r --arg manifest "$PWD/Cargo.toml" '"'"'
        .packages[] | select(.manifest_path == $manifest) | (.metadata // {}) |
        [.playground, .["docs.rs"], .docs.rs] | map(select(type == "object")) as $m |
        ([$m[] | .features // [] | .[]] | unique) as $features |
        (if ($features | length) > 0 then "--features=" + ($features | join(",")) else empty end),
        (if any($m[]; .["all-features"] == true) then "--all-features" else empty end),
        (if any($m[]; .["no-default-features"] == true) then "--no-default-features" else empty end)'"'"')
    echo "features: ${features[*]}"
    cargo check -q --target="$target" "${features[@]}"
'

direct() {
    docker rm -f crater-bench-direct >/dev/null 2>&1 || true
    # The slot container's flags (agent/src/slot.rs `container_body`, without a slot disk: /build
    # a volume, /cargo a tmpfs), root with the loop's three capabilities, a shell that waits
    # instead of the loop.
    docker run -d --name crater-bench-direct --entrypoint /bin/sleep --user 0:0 \
        --cpuset-cpus=0 --memory=8g --memory-swap=8g --pids-limit=4096 --read-only \
        --cap-drop=ALL --cap-add=SETUID --cap-add=SETGID --cap-add=KILL \
        --security-opt=no-new-privileges --log-driver=none --volume=/build \
        --tmpfs=/tmp:rw,exec,nosuid,nodev,mode=1777 \
        --tmpfs=/cargo:rw,exec,nosuid,nodev,mode=1777 \
        --tmpfs=/run/crater:rw,noexec,nosuid,nodev,mode=0700 \
        --tmpfs=/opt/miri-sysroot:rw,exec,nosuid,nodev,mode=0755 \
        -v "$sysroot:/opt/rust:ro" \
        -v /etc/ssl/certs/ca-certificates.crt:/etc/crater/ca-certificates.crt:ro \
        "$image" infinity >/dev/null
    for c in "${crates[@]}"; do
        name=${c%@*} version=${c#*@}
        docker exec \
            -e CARGO_HTTP_CAINFO=/etc/crater/ca-certificates.crt \
            -e SSL_CERT_FILE=/etc/crater/ca-certificates.crt \
            -e CARGO_TERM_COLOR=always -e CARGO_INCREMENTAL=0 \
            -e RUSTFLAGS="--cap-lints=warn -Aunexpected-cfgs" \
            crater-bench-direct "${as_crate[@]}" bash -c "$direct_job" - "$name" "$version" "$target" \
            >"$work/direct.log" 2>&1 || { echo "direct: $c failed:" >&2; cat "$work/direct.log" >&2; exit 1; }
        cat "$work/direct.log" >>"$work/direct-all.log"
    done
    docker rm -f crater-bench-direct >/dev/null
}

calc() { awk "BEGIN { print $* }"; }
seconds() { local start=$EPOCHREALTIME; "$@" >&2; calc "$EPOCHREALTIME - $start"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
n=${#crates[@]}

if [ -z "$baseline" ]; then
    harness run "$bin" >/dev/null # warm the image, the page cache and the binaries once, untimed
    h_times=() d_times=()
    echo "| round | run (s) | direct (s) | ratio |"
    echo "|---|---|---|---|"
    for i in $(seq 1 "$rounds"); do
        if (( i % 2 )); then h=$(seconds harness run "$bin"); d=$(seconds direct)
        else d=$(seconds direct); h=$(seconds harness run "$bin"); fi
        h_times+=("$h") d_times+=("$d")
        printf '| %d | %.1f | %.1f | %.3f |\n' "$i" "$h" "$d" "$(calc "$h / $d")"
    done
    mh=$(median "${h_times[@]}") md=$(median "${d_times[@]}")
    printf '| median | %.1f | %.1f | %.3f |\n' "$mh" "$md" "$(calc "$mh / $md")"
    printf '\nper crate: run %.2f s, direct %.2f s, overhead %.2f s\n' \
        "$(calc "$mh / $n")" "$(calc "$md / $n")" "$(calc "($mh - $md) / $n")"
    exit 0
fi

# With a baseline: four sides, in an order that rotates by one every round.
side() {
    case $1 in
    base) harness base "$baseline" ;;
    new) harness new "$bin" ;;
    new-on) harness new-on "$bin" --network on ;;
    direct) direct ;;
    esac
}
sides=(base new new-on direct)
for s in "${sides[@]}"; do side "$s"; done # untimed warm-up of every side
declare -A times=()
ratio_rows=()
echo "| round | order | baseline (s) | new (s) | new, network on (s) | direct (s) | baseline/direct | new/direct | new/baseline | new-on/baseline | new/new-on |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for i in $(seq 1 "$rounds"); do
    order=()
    for k in 0 1 2 3; do order+=("${sides[(i - 1 + k) % 4]}"); done
    declare -A t=()
    for s in "${order[@]}"; do t[$s]=$(seconds side "$s"); times[$s]+="${t[$s]} "; done
    bd=$(calc "${t[base]} / ${t[direct]}") nd=$(calc "${t[new]} / ${t[direct]}")
    nb=$(calc "${t[new]} / ${t[base]}") ob=$(calc "${t[new-on]} / ${t[base]}")
    no=$(calc "${t[new]} / ${t[new-on]}")
    ratio_rows+=("$bd $nd $nb $ob $no")
    printf '| %d | %s | %.1f | %.1f | %.1f | %.1f | %.3f | %.3f | %.3f | %.3f | %.3f |\n' "$i" \
        "$(IFS=,; echo "${order[*]}")" "${t[base]}" "${t[new]}" "${t[new-on]}" "${t[direct]}" \
        "$bd" "$nd" "$nb" "$ob" "$no"
    unset t
done
# shellcheck disable=SC2086 # the lists are words on purpose
mb=$(median ${times[base]}) mn=$(median ${times[new]}) mo=$(median ${times[new-on]})
md=$(median ${times[direct]})
printf '| median | | %.1f | %.1f | %.1f | %.1f | %.3f | %.3f | %.3f | %.3f | %.3f |\n' \
    "$mb" "$mn" "$mo" "$md" "$(calc "$mb / $md")" "$(calc "$mn / $md")" "$(calc "$mn / $mb")" \
    "$(calc "$mo / $mb")" "$(calc "$mn / $mo")"
col() { printf '%s\n' "${ratio_rows[@]}" | awk -v c="$1" '{print $c}'; }
printf '\nmedian of the per-round ratios: baseline/direct %.3f, new/direct %.3f, new/baseline %.3f, new-on/baseline %.3f, new/new-on %.3f\n' \
    "$(median $(col 1))" "$(median $(col 2))" "$(median $(col 3))" "$(median $(col 4))" "$(median $(col 5))"
printf 'per crate: baseline %.2f s, new %.2f s, new with network on %.2f s, direct %.2f s\n' \
    "$(calc "$mb / $n")" "$(calc "$mn / $n")" "$(calc "$mo / $n")" "$(calc "$md / $n")"
printf 'per crate over direct: baseline %.2f s, new %.2f s, new with network on %.2f s\n' \
    "$(calc "($mb - $md) / $n")" "$(calc "($mn - $md) / $n")" "$(calc "($mo - $md) / $n")"
