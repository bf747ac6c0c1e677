#!/usr/bin/env bash
# W3 (filtered + sorted list) and W2 (read by id) alone, for A/B runs of two builds: both
# servers run side by side on copies of the database a previous `bench/run.sh` left, and the
# runs alternate A, B, B, A for each workload (8 clients, DURATION each).
#
#   bench/run.sh                                      # once, for the database
#   bench/reads-ab.sh /path/to/rapport-a /path/to/rapport-b
#   DURATION=15s WHAT="list read" …                   # the defaults
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
WORK="${BENCH_WORK:-/tmp/rapport-bench}"
SOURCE="$WORK/rapport-data"
DUR="${DURATION:-15s}" WHAT="${WHAT:-list read}"
A="${1:?usage: bench/reads-ab.sh <binary A> <binary B>}" B="${2:?binary B}"
[ -f "$SOURCE/bench.db" ] || { echo "no database in $SOURCE: run bench/run.sh first" >&2; exit 1; }
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done' EXIT
start() { # name binary port: a server on a copy of the database, with a token of its own
  local dir="$WORK/reads-ab-$1"
  rm -rf "$dir"; mkdir -p "$dir"; cp "$SOURCE/bench.db" "$dir/"
  export RAPPORT_DATABASE_URL="sqlite:$dir/bench.db" RAPPORT_LOG=warn RAPPORT_RATE_LIMIT=0
  "$2" user create bench "reader-$1" --json | jq -r .token >"$dir/token"
  "$2" serve --listen "127.0.0.1:$3" >"$dir/server.log" 2>&1 &
  PIDS+=($!)
  until curl -sf "http://127.0.0.1:$3/healthz" >/dev/null; do kill -0 "${PIDS[-1]}" || exit 1; sleep 0.05; done
}
start a "$A" 18191
start b "$B" 18192
export LIST_PATH="/api/v1/records/contacts?filter=lifecycle_stage%20eq%20%27customer%27&sort=-annual_value&limit=50"
export IDS_FILE="$SOURCE/ids.txt" ITEM_PATH='/api/v1/records/contacts/{id}' DURATION="$DUR"
for mode in $WHAT; do
  for build in a b b a; do
    port=$([ "$build" = a ] && echo 18191 || echo 18192)
    BASE_URL="http://127.0.0.1:$port" AUTH="Bearer $(cat "$WORK/reads-ab-$build/token")" \
      "$KIT/driver/run_wrk.sh" "$mode" |
      jq -c --arg b "$build" --arg m "$mode" '{build: $b, workload: $m, rps, p50: .lat_p50_ms, p99: .lat_p99_ms, errors: .http_errors}'
  done
done
