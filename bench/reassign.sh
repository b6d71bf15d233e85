#!/usr/bin/env bash
# Reassignment latency: how long a crate whose agent is lost waits before it runs on another.
#
#   bench/reassign.sh [ROUNDS] [LEASE_SECS]      (defaults 5 and 10; needs root and Docker)
#
# A coordinator with TLS and tokens listens on a bridge; two agents run in network namespaces
# of their own (as in the fleet tests). One local crate whose build script sleeps a minute is
# run; once it runs on an agent, that agent is lost in one of three ways, and the time until
# `status` shows the crate running on the other agent is measured:
#   release    SIGTERM with --drain-timeout 0s: the agent gives the job back at once (the
#              baseline: reassignment with no waiting, what the dispatch itself costs);
#   kill       kill -9 of the agent: its connection closes, its lease runs out;
#   partition  its namespace's link goes down: nothing closes, the lease runs out.
# `serve --lease-timeout LEASE_SECS`. Prints Markdown: each round's seconds, the medians, each
# median over the lease timeout, and what kill and partition take beyond the lease timeout
# against the release baseline. Logs are kept in the folder it names (KEEP=DIR to choose it).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
lease=${2:-10}
[ "$(id -u)" = 0 ] || { echo "bench/reassign.sh needs root (ip netns)" >&2; exit 1; }

cargo build --release --quiet --bin crater-at-home --bin crater-agent
bin=$PWD/target/release/crater-at-home
agent_bin=$PWD/target/release/crater-agent
"$bin" image build >/dev/null 2>&1
keep=${KEEP:-$(mktemp -d /tmp/crater-reassign-bench.XXXXXX)}
mkdir -p "$keep"
echo "logs: $keep" >&2

bridge=crbench0 net=10.79.0
cleanup() {
    pkill -KILL -f "$agent_bin" 2>/dev/null || true
    pkill -KILL -f "$bin serve" 2>/dev/null || true
    for i in 1 2; do ip netns del "crbench$i" 2>/dev/null || true; ip link del "crbv$i" 2>/dev/null || true; done
    ip link del "$bridge" 2>/dev/null || true
    docker ps -aq --filter label=org.crater-at-home.owner-pid | xargs -r docker rm -f -v >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up
for i in 1 2; do
    ip netns add "crbench$i"
    ip link add "crbv$i" type veth peer name eth0 netns "crbench$i"
    ip link set "crbv$i" master "$bridge" up
    ip -n "crbench$i" addr add "$net.1$i/24" dev eth0
    ip -n "crbench$i" link set eth0 up
    ip -n "crbench$i" link set lo up
done
# Docker's iptables may drop bridged traffic it does not know.
iptables -I FORWARD -i "$bridge" -o "$bridge" -j ACCEPT
trap 'iptables -D FORWARD -i "$bridge" -o "$bridge" -j ACCEPT; cleanup' EXIT

"$bin" tls init --out "$keep/fleet" --host "$net.1" >/dev/null
crate=$keep/crates/bench-reassign
mkdir -p "$crate/src"
printf '[package]\nname = "bench-reassign"\nversion = "0.1.0"\nedition = "2021"\n' >"$crate/Cargo.toml"
: >"$crate/src/lib.rs"
echo 'fn main() { std::thread::sleep(std::time::Duration::from_secs(60)); }' >"$crate/build.rs"

port=7979
status_json() {
    "$bin" status --coordinator "https://$net.1:$port" --ca-cert "$keep/fleet/ca.pem" \
        --token-file "$keep/fleet/status-token" --json 2>/dev/null
}
# runner_of: the agent the crate runs on now, or nothing.
runner_of() {
    status_json | jq -r '.agents[] | select(.lost | not) | select(any(.running[]; .crate == "bench-reassign")) | .name' 2>/dev/null | head -1
}

# one EVENT ROUND: prints the seconds from losing the agent to the crate running on the other.
one() {
    local event=$1 round=$2 out=$keep/out-$1-$2 serve_pid pids=() name from start
    "$bin" serve --listen "$net.1:$port" --tls-cert "$keep/fleet/server.pem" \
        --tls-key "$keep/fleet/server-key.pem" --agent-token-file "$keep/fleet/agent-token" \
        --status-token-file "$keep/fleet/status-token" --lease-timeout "${lease}s" \
        --tool check --local-crate "$crate" --out "$out" >"$keep/serve-$event-$round.log" 2>&1 &
    serve_pid=$!
    until status_json >/dev/null; do sleep 0.2; done
    for i in 1 2; do
        ip netns exec "crbench$i" "$agent_bin" --coordinator "https://$net.1:$port" \
            --ca-cert "$keep/fleet/ca.pem" --token-file "$keep/fleet/agent-token" --slots 1 \
            --cpus $((i - 1)) --memory-gb 2 --disk-gb 0 --drain-timeout 0s --name "agent-$i" \
            >"$keep/agent-$i-$event-$round.log" 2>&1 &
        pids+=($!)
    done
    until from=$(runner_of) && [ -n "$from" ]; do sleep 0.2; done
    sleep 3 # into the build script
    local n=${from#agent-}
    start=$EPOCHREALTIME
    case $event in
        release) kill -TERM "${pids[$((n - 1))]}" ;;
        kill) kill -KILL "${pids[$((n - 1))]}" ;;
        partition) ip link set "crbv$n" down ;;
    esac
    while true; do
        name=$(runner_of)
        if [ -n "$name" ] && [ "$name" != "$from" ]; then break; fi
        sleep 0.1
    done
    awk "BEGIN { printf \"%.2f\", $EPOCHREALTIME - $start }"
    [ "$event" = partition ] && ip link set "crbv$n" up
    kill -KILL "${pids[@]}" "$serve_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    docker ps -aq --filter label=org.crater-at-home.owner-pid | xargs -r docker rm -f -v >/dev/null 2>&1 || true
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A times
for round in $(seq "$rounds"); do
    for event in release kill partition; do
        t=$(one "$event" "$round")
        echo "round $round $event: ${t}s" >&2
        times[$event]+="$t "
    done
done

echo "| event | rounds (s) | median (s) | median / lease timeout | beyond the lease timeout (s) |"
echo "|---|---|---|---|---|"
base=$(tr ' ' '\n' <<<"${times[release]}" | grep . | median)
for event in release kill partition; do
    m=$(tr ' ' '\n' <<<"${times[$event]}" | grep . | median)
    beyond=$(awk "BEGIN { printf \"%.2f\", $m - $lease }")
    [ "$event" = release ] && beyond="(baseline: no lease wait)"
    echo "| $event | ${times[$event]} | $m | $(awk "BEGIN { printf \"%.2f\", $m / $lease }") | $beyond |"
done
echo
echo "lease timeout ${lease}s; the release baseline (${base}s) is the dispatch itself: an agent's"
echo "Release to the other agent's Assign showing in status."
