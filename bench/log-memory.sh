#!/usr/bin/env bash
# Memory of the coordinator and an agent while a 2 GiB log passes through them, against their
# idle memory: `serve` and `crater-agent` as separate processes, one crate whose test prints
# 2 GiB, the default --max-log-bytes (1 GiB: the first GiB is stored, the rest only drained).
#
#   bench/log-memory.sh
#
# Prints a Markdown table; paste it into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin crater-at-home --bin crater-agent
bin=target/release
work=$(mktemp -d)
trap 'kill $serve $agent 2>/dev/null; rm -rf "$work"' EXIT

mkdir -p "$work/bomb/src"
printf '[package]\nname = "bench-output-bomb"\nversion = "0.1.0"\nedition = "2021"\n' >"$work/bomb/Cargo.toml"
cat >"$work/bomb/src/lib.rs" <<'RS'
#[test]
fn floods() {
    use std::io::Write;
    let line = [b'y'; 1 << 20];
    let mut out = std::io::stdout().lock();
    for _ in 0..2048 { out.write_all(&line).unwrap(); }
}
RS
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin/crater-at-home" image build >/dev/null
"$bin/crater-at-home" serve --listen "127.0.0.1:$port" --exit-when-done --tool test \
    --out "$work/out" --local-crate "$work/bomb" 2>"$work/serve.log" &
serve=$!
sleep 1
"$bin/crater-agent" --coordinator "http://127.0.0.1:$port" --slots 1 --memory-gb 4 2>"$work/agent.log" &
agent=$!

kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# Idle: both processes up and connected, before the job prints anything (it builds first).
for _ in $(seq 50); do
    grep -q "agent connected\|connected" "$work/agent.log" 2>/dev/null && break
    sleep 0.1
done
sleep 0.5
serve_idle=$(kib $serve VmRSS) agent_idle=$(kib $agent VmRSS)
serve_peak=0 agent_peak=0 start=$EPOCHREALTIME
while kill -0 $serve 2>/dev/null; do
    s=$(kib $serve VmHWM) a=$(kib $agent VmHWM)
    ((s > serve_peak)) && serve_peak=$s
    ((a > agent_peak)) && agent_peak=$a
    sleep 0.2
done
elapsed=$(awk "BEGIN { print $EPOCHREALTIME - $start }")
stored=$(stat -c %s "$work/out/test/raw/bench-output-bomb/0.1.0")
status=$(grep -o '"status": "[a-z-]*"' "$work/out/test/results/bench-output-bomb/0.1.0.json")
echo "| process | idle RSS (MiB) | peak RSS (MiB) | peak / idle |"
echo "|---|---|---|---|"
for p in coordinator:$serve_idle:$serve_peak agent:$agent_idle:$agent_peak; do
    IFS=: read -r name idle peak <<<"$p"
    awk -v n="$name" -v i="$idle" -v p="$peak" 'BEGIN { printf "| %s | %.1f | %.1f | %.2f |\n", n, i/1024, p/1024, p/i }'
done
awk -v s="$stored" -v e="$elapsed" 'BEGIN { printf "\n2 GiB of output in %.0f s (%.0f MiB/s through pty, docker attach, gRPC); stored log %.0f MiB\n", e, 2048/e, s/1048576 }'
echo "verdict: $status"
