#!/usr/bin/env bash
# Results stored per second through the outbox, to moto and to Garage on loopback, with
# --upload-concurrency 1, 4, 16 and 64: `examples/outbox-bench.rs` commits RESULTS small results
# (a 4 KiB log, three objects each: raw, page, JSON) and times the uploader until the outbox is
# empty, in a process of its own per run (so its peak RSS is that run's). Ratios are to
# concurrency 1 against the same server in the same round; medians over ROUNDS.
#
#   bench/s3-concurrency.sh [RESULTS] [ROUNDS]      (defaults 400 and 3)
#
# Garage is built once into target/garage-2.5.0 (as the tests do) when it is not there yet.
set -euo pipefail
cd "$(dirname "$0")/.."
results=${1:-400}
rounds=${2:-3}
venv=target/bench-s3-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import moto, boto3' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "moto[server]==5.2.5" boto3
fi
garage=$PWD/target/garage-2.5.0/bin/garage
if [[ ! -x $garage ]]; then
    cargo install garage@2.5.0 --locked --root target/garage-2.5.0.partial
    mv target/garage-2.5.0.partial target/garage-2.5.0
fi
cargo build --release --quiet --example outbox-bench
bench=$PWD/target/release/examples/outbox-bench
work=$(mktemp -d -p "$PWD/target")
moto='' garage_pid=''
trap 'kill $moto $garage_pid 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# moto
moto_port=$(free_port)
"$venv/bin/python" -m moto.server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
moto=$!
for _ in $(seq 100); do curl -s "http://127.0.0.1:$moto_port/moto-api/config" >/dev/null && break; sleep 0.2; done
AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 "$venv/bin/python" -c \
    "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$moto_port').create_bucket(Bucket='bench')"

# Garage: one node, a key, a bucket
g=$work/garage
mkdir -p "$g"
rpc=$(free_port) s3=$(free_port)
cat >"$g/garage.toml" <<EOF
metadata_dir = "$g/meta"
data_dir = "$g/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$s3"
EOF
gc() { "$garage" -c "$g/garage.toml" "$@"; }
gc server >"$g/log" 2>&1 &
garage_pid=$!
until gc status >/dev/null 2>&1; do sleep 0.2; done
node=$(gc node id -q)
gc layout assign -z dc1 -c 1G "${node%%@*}" >/dev/null
gc layout apply --version 1 >/dev/null
gkey=GK0123456789abcdef01234567 gsecret=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
gc key import --yes -n bench "$gkey" "$gsecret" >/dev/null
gc bucket create bench >/dev/null
gc bucket allow --read --write --owner bench --key "$gkey" >/dev/null
until curl -s "http://127.0.0.1:$s3/" >/dev/null; do sleep 0.2; done

# one SERVER CONCURRENCY: prints "per_s peak_rss_kib"
one() {
    local endpoint key secret line
    case $1 in
        moto) endpoint=http://127.0.0.1:$moto_port key=bench secret=bench ;;
        garage) endpoint=http://127.0.0.1:$s3 key=$gkey secret=$gsecret ;;
    esac
    line=$(cd "$work" && AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1 \
        AWS_EC2_METADATA_DISABLED=true "$bench" "$endpoint" bench "$results" "$2")
    eval "${line// /; }"
    echo "$per_s $peak_rss_kib"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A rate ratio rss
for round in $(seq "$rounds"); do
    for server in moto garage; do
        base=''
        for c in 1 4 16 64; do
            read -r per_s peak <<<"$(one "$server" "$c")"
            base=${base:-$per_s}
            rate[$server.$c]+="$per_s "
            ratio[$server.$c]+="$(awk "BEGIN { printf \"%.2f\", $per_s / $base }") "
            rss[$server.$c]+="$peak "
            echo "round $round $server concurrency $c: $per_s results/s, peak RSS $peak KiB" >&2
        done
    done
done
echo "| server | concurrency | results/s (median of $rounds) | / concurrency 1 | peak RSS (MiB) |"
echo "|---|---|---|---|---|"
for server in moto garage; do
    for c in 1 4 16 64; do
        r=$(tr ' ' '\n' <<<"${rate[$server.$c]}" | grep . | median)
        q=$(tr ' ' '\n' <<<"${ratio[$server.$c]}" | grep . | median)
        m=$(tr ' ' '\n' <<<"${rss[$server.$c]}" | grep . | median)
        echo "| $server | $c | $r | **$q** | $(awk "BEGIN { printf \"%.1f\", $m / 1024 }") |"
    done
done
echo
echo "$results results a run, three objects each (raw log, page, JSON)."
