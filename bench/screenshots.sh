#!/usr/bin/env bash
# Screenshots of the report pages at desktop and phone widths, to look at before calling a page
# done (they are not committed): the landing page (empty and searched), the UB page, and the
# failures page with a cause chosen, from a synthetic store rendered by `report`.
#
#   bench/screenshots.sh [OUT_DIR]      (default: target/screenshots)
#
# Needs Debian's chromium (installed if missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/screenshots}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if ! command -v chromium >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium \
    || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }
fi
tgt=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p crater-coordinator --bin crater-at-home --example synth-store
store=$(mktemp -d)
trap 'rm -rf "$store"' EXIT
"$tgt"/release/examples/synth-store "$store" 2000 1000000
"$tgt"/release/crater-at-home report --out "$store" --no-archives
shoot() { # name width height url
  chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size="$2,$3" --screenshot="$out/$1.png" "$4" >/dev/null 2>&1
  echo "$out/$1.png"
}
base="file://$store/check"
for size in desktop:1280:900 phone:390:844; do
  IFS=: read -r name width height <<<"$size"
  shoot "landing-$name" "$width" "$height" "$base/index.html"
  shoot "landing-search-$name" "$width" "$height" "$base/index.html#q=synth-12"
  shoot "ub-$name" "$width" "$height" "$base/ub.html#crate=synth-26%400.0.1"
  shoot "failures-$name" "$width" "$height" "$base/failures.html#cause=E0425"
done
