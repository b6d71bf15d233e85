#!/usr/bin/env bash
# The S3 store against a real S3-compatible server (moto, from PyPI) on loopback:
#  1. upload throughput of large logs (the store's own upload code, `examples/upload-bench.rs`)
#     against writing the same bytes to local disk and syncing them, in alternating rounds;
#  2. the coordinator's peak RSS while it stores a 1 GiB log as a multipart upload: `serve
#     --bucket` and `crater-agent` as separate processes, one crate whose test prints 1 GiB.
#
#   bench/s3-upload.sh
#
# Prints Markdown tables; paste them into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/bench-s3-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import moto, boto3' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "moto[server]==5.2.5" boto3
fi
cargo build --release --quiet --bin crater-at-home --bin crater-agent --example upload-bench
bin=target/release
work=$(mktemp -d -p "$PWD/target")
moto='' serve='' agent=''
trap 'kill $moto $serve $agent 2>/dev/null; rm -rf "$work"' EXIT

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint="http://127.0.0.1:$port"
"$venv/bin/python" -m moto.server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
for _ in $(seq 100); do curl -s "$endpoint/moto-api/config" >/dev/null && break; sleep 0.2; done
"$venv/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='$endpoint').create_bucket(Bucket='bench')"

echo "| log size | rounds | S3 upload (MiB/s) | local disk write + fsync (MiB/s) | S3 / disk | peak RSS before → after uploads (MiB) |"
echo "|---|---|---|---|---|---|"
for spec in 64:5 1024:3; do
    IFS=: read -r size rounds <<<"$spec"
    line=$(cd "$work" && "../release/examples/upload-bench" "$endpoint" bench "$size" "$rounds")
    eval "${line// /; }"
    awk -v sz="$size_mib" -v r="$rounds" -v s="$s3_mib_s" -v d="$disk_mib_s" -v q="$ratio" \
        -v b="$peak_rss_before_kib" -v a="$peak_rss_after_kib" \
        'BEGIN { printf "| %d MiB | %d | %.0f | %.0f | %.3f | %.1f → %.1f |\n", sz, r, s, d, q, b/1024, a/1024 }'
done

# 2. The coordinator while a 1 GiB log goes up in parts.
mkdir -p "$work/talker/src"
printf '[package]\nname = "bench-talker"\nversion = "0.1.0"\nedition = "2021"\n' >"$work/talker/Cargo.toml"
cat >"$work/talker/src/lib.rs" <<'RS'
#[test]
fn talks() {
    use std::io::Write;
    let line = [b'y'; 1 << 20];
    let mut out = std::io::stdout().lock();
    for _ in 0..1024 { out.write_all(&line).unwrap(); out.write_all(b"\n").unwrap(); }
}
RS
cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin/crater-at-home" image build >/dev/null
"$bin/crater-at-home" serve --listen "127.0.0.1:$cport" --exit-when-done --tool test \
    --out "$work/out" --local-crate "$work/talker" --max-log-bytes 2GiB \
    --bucket bench --s3-endpoint "$endpoint" --s3-path-style 2>"$work/serve.log" &
serve=$!
sleep 1
"$bin/crater-agent" --coordinator "http://127.0.0.1:$cport" --slots 1 --memory-gb 4 2>"$work/agent.log" &
agent=$!
kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
sleep 2
serve_idle=$(kib $serve VmRSS)
serve_peak=0 start=$EPOCHREALTIME uploading=''
while kill -0 $serve 2>/dev/null; do
    s=$(kib $serve VmHWM)
    ((s > serve_peak)) && serve_peak=$s
    [[ -z $uploading ]] && compgen -G "$work/out/.spool/outbox/*/raw" >/dev/null && uploading=$EPOCHREALTIME
    sleep 0.2
done
end=$EPOCHREALTIME
size=$("$venv/bin/python" -c "import boto3; print(boto3.client('s3', endpoint_url='$endpoint').head_object(Bucket='bench', Key='test/raw/bench-talker/0.1.0')['ContentLength'])")
etag=$("$venv/bin/python" -c "import boto3; print(boto3.client('s3', endpoint_url='$endpoint').head_object(Bucket='bench', Key='test/raw/bench-talker/0.1.0')['ETag'])")
echo
echo "| coordinator (\`serve --bucket\`) | idle RSS (MiB) | peak RSS (MiB) | peak / idle |"
echo "|---|---|---|---|"
awk -v i="$serve_idle" -v p="$serve_peak" 'BEGIN { printf "| 1 GiB log stored as multipart | %.1f | %.1f | %.2f |\n", i/1024, p/1024, p/i }'
awk -v s="$size" -v e="$etag" -v t0="$start" -v t1="$uploading" -v t2="$end" \
    'BEGIN { printf "\nstored raw log: %.0f MiB, ETag %s; %.0f s from start, %.0f s from commit to stored (render + upload of log and page)\n", s/1048576, e, t2-t0, t2-t1 }'
