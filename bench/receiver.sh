#!/usr/bin/env bash
# Measures how many events/s `ferry receiver --store memory` accepts: gzip'd 2000-event JSON
# batches of ~1 KB events, sent over loopback by `receiver_load` on the same machine.
#   bench/receiver.sh [EVENTS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
concurrency=${2:-8}
cargo build --release -q -p ferry -p ferry-bench
target=${CARGO_TARGET_DIR:-target}/release
log=$(mktemp)
"$target/ferry" receiver --listen 127.0.0.1:0 --store memory --project 1:bench-token \
  --service-account bench:bench-secret >"$log" 2>/dev/null &
rx=$!
trap 'kill $rx 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 50); do grep -q listening "$log" && break; sleep 0.1; done
url=$(sed -n 's/.*listening on //p' "$log")
[ -n "$url" ] || { echo "receiver did not start" >&2; exit 1; }
"$target/receiver_load" --url "$url" --events "$events" --concurrency "$concurrency"
