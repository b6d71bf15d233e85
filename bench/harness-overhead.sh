#!/usr/bin/env bash
# Per-crate harness overhead: ten small real crates through `crater-at-home run --tool check`
# against the same work done directly in the same image: one container with the same limits,
# `docker exec` in a loop doing what the worker loop does (download the .crate, clean caches,
# cargo update, cargo fetch, cargo check) without the harness (no gRPC, no pty, no spooling,
# no HTML). Both sides use one slot, so the ratio is harness time / direct time.
#
#   bench/harness-overhead.sh [ROUNDS]      (default 3; rounds alternate the two sides)
#
# Prints a Markdown table and the median ratio; paste it into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
crates=(itoa@1.0.19 ryu@1.0.23 semver@1.0.28 memchr@2.8.3 cfg-if@1.0.5 once_cell@1.21.4
        bitflags@2.13.2 either@1.19.0 smallvec@1.16.6 scopeguard@1.2.0)

cargo build --release --quiet --bin crater-at-home
bin=target/release/crater-at-home
image=$("$bin" image build 2>/dev/null | tail -1)
sysroot=$(rustc +nightly --print sysroot 2>/dev/null || rustc --print sysroot)
target=$(rustc -vV | sed -n 's/^host: //p')
work=$(mktemp -d)
trap 'docker rm -f crater-bench-direct >/dev/null 2>&1; rm -rf "$work"' EXIT

crate_args=()
for c in "${crates[@]}"; do crate_args+=(--crate "$c"); done

harness() {
    "$bin" run --tool check --slots 1 --rerun --out "$work/out" "${crate_args[@]}" >/dev/null 2>&1
    local passed
    passed=$(grep -l '"status": "pass"' "$work"/out/check/results/*/*.json | wc -l)
    [ "$passed" = "${#crates[@]}" ] || { echo "run: only $passed of ${#crates[@]} passed" >&2; exit 1; }
}

direct() {
    docker rm -f crater-bench-direct >/dev/null 2>&1 || true
    # The slot container's flags (agent/src/slot.rs), with a shell that waits instead of the loop.
    docker run -d --name crater-bench-direct --entrypoint /bin/sleep \
        --cpuset-cpus=0 --memory=8g --memory-swap=8g --pids-limit=4096 --read-only \
        --cap-drop=ALL --security-opt=no-new-privileges --log-driver=none --volume=/build \
        --tmpfs=/tmp:rw,exec,nosuid,nodev,mode=1777 \
        --tmpfs=/cargo:rw,exec,nosuid,nodev,uid=1000,gid=1000 \
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
            crater-bench-direct bash -ec "
                find /build /tmp /cargo -mindepth 1 -delete 2>/dev/null || true
                cd /build && curl -sSfL https://static.crates.io/crates/$name/$name-$version.crate | tar -xz
                cd $name-$version && cargo update -q && cargo fetch -q && cargo check -q --target=$target
            " >"$work/direct.log" 2>&1 || { echo "direct: $c failed:" >&2; cat "$work/direct.log" >&2; exit 1; }
    done
    docker rm -f crater-bench-direct >/dev/null
}

calc() { awk "BEGIN { print $* }"; }
seconds() { local start=$EPOCHREALTIME; "$@"; calc "$EPOCHREALTIME - $start"; }

harness >/dev/null # warm the image, the page cache and the binaries once, untimed
h_times=() d_times=()
echo "| round | run (s) | direct (s) | ratio |"
echo "|---|---|---|---|"
for i in $(seq 1 "$rounds"); do
    if (( i % 2 )); then h=$(seconds harness); d=$(seconds direct)
    else d=$(seconds direct); h=$(seconds harness); fi
    h_times+=("$h") d_times+=("$d")
    printf '| %d | %.1f | %.1f | %.3f |\n' "$i" "$h" "$d" "$(calc "$h / $d")"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mh=$(median "${h_times[@]}") md=$(median "${d_times[@]}")
printf '| median | %.1f | %.1f | %.3f |\n' "$mh" "$md" "$(calc "$mh / $md")"
n=${#crates[@]}
printf '\nper crate: run %.2f s, direct %.2f s, overhead %.2f s\n' \
    "$(calc "$mh / $n")" "$(calc "$md / $n")" "$(calc "($mh - $md) / $n")"
