#!/usr/bin/env bash
# HTTP load benchmark of Rapport with the shared CRM driver (wrk + crm.lua from
# ../shared/bench, the same workloads and records as the Directus peer):
#   W1 create TOTAL records (8 clients) · W2 read by id · W3 filtered+sorted list on indexed
#   fields · W4 update · W6 bulk import BULK_TOTAL records in batches of 1,000 · start-up, RSS.
#
#   bench/run.sh                        # DURABILITY=full (the WAL synced before a write is answered, the default)
#   DURABILITY=normal bench/run.sh      # synchronous=NORMAL
#   RAPPORT_BIN=/path/to/rapport bench/run.sh   # another build (A/B runs), not built here
#
# Results: $BENCH_WORK/results/rapport_<durability>/results.jsonl (one JSON line per workload).
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
BENCH_WORK="${BENCH_WORK:-/tmp/rapport-bench}"
DURABILITY="${DURABILITY:-full}"
TOTAL="${TOTAL:-20000}"
BULK_TOTAL="${BULK_TOTAL:-100000}"
PORT="${PORT:-18181}"
RW_DURATION="${RW_DURATION:-20s}"
OUT="$BENCH_WORK/results/rapport_$DURABILITY"
DATA="$BENCH_WORK/rapport-data"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk jq sqlite3" >&2; exit 1; }

if curl -s "http://127.0.0.1:$PORT/" >/dev/null 2>&1; then echo "port $PORT is in use" >&2; exit 1; fi
if [ -z "${RAPPORT_BIN:-}" ]; then cargo build --release -p rapport; fi
BIN="${RAPPORT_BIN:-$PWD/target/release/rapport}"
rm -rf "$DATA" "$OUT"; mkdir -p "$DATA" "$OUT"
# The load comes from one token: its rate limit is off.
export RAPPORT_DATABASE_URL="sqlite:$DATA/bench.db" RAPPORT_DURABILITY="$DURABILITY" RAPPORT_LOG=warn RAPPORT_RATE_LIMIT=0
TOKEN=$("$BIN" tenant create bench --json | jq -r .token)
"$BIN" schema apply bench/schema --tenant bench >/dev/null

start_server() { # sets SERVER (pid) and STARTUP_MS
  local t0; t0=$(date +%s%N)
  "$BIN" serve --listen "127.0.0.1:$PORT" >"$DATA/server.log" 2>&1 &
  SERVER=$!
  until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || ! kill -0 "$SERVER" 2>/dev/null; do sleep 0.005; done
  kill -0 "$SERVER" || { cat "$DATA/server.log" >&2; exit 1; }
  : || until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.005; done
  STARTUP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
rss_mb() { awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$SERVER/status"; }
stop_server() { kill -TERM "$SERVER"; wait "$SERVER" || true; }
record() { echo "$1" | tee -a "$OUT/results.jsonl"; }

start_server
sleep 1
record "{\"mode\":\"startup\",\"startup_ms\":$STARTUP_MS,\"idle_rss_mb\":$(rss_mb)}"

export BASE_URL="http://127.0.0.1:$PORT" AUTH="Bearer $TOKEN" DURATION="$RW_DURATION"
run() { # mode [label]
  record "$("$KIT/driver/run_wrk.sh" "$1" "$OUT/wrk.log" | jq -c --arg w "${2:-$1}" '. + {workload: $w}')"
}

TOTAL=$TOTAL CREATE_PATH=/api/v1/records/contacts BODY_WRAP='{"data":%s}' run create
sqlite3 "$DATA/bench.db" "SELECT r.id FROM records r JOIN entities e ON e.id = r.entity_id WHERE e.name = 'contacts'" >"$DATA/ids.txt"
IDS_FILE="$DATA/ids.txt" ITEM_PATH='/api/v1/records/contacts/{id}' run read
LIST_PATH="/api/v1/records/contacts?filter=lifecycle_stage%20eq%20%27customer%27&sort=-annual_value&limit=50" run list
IDS_FILE="$DATA/ids.txt" ITEM_PATH='/api/v1/records/contacts/{id}' PATCH_WRAP='{"data":%s}' run update
TOTAL=$BULK_TOTAL BULK_SIZE=1000 CONC=1 THREADS=1 EMAIL_PREFIX=b BULK_PATH=/api/v1/records/contacts_bulk/batch \
  BULK_WRAP='{"records":%s}' run bulk
record "{\"mode\":\"after\",\"rss_mb\":$(rss_mb)}"
stop_server
start_server
record "{\"mode\":\"restart\",\"startup_ms\":$STARTUP_MS,\"records\":$(sqlite3 "$DATA/bench.db" 'SELECT COUNT(*) FROM records')}"
stop_server
echo "results: $OUT/results.jsonl"
