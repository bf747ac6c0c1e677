#!/usr/bin/env bash
# Rapport at a million records (SQLite): bulk import of RECORDS contacts through the batch API,
# then the operations whose targets are stated at that size:
#   add a field (PUT of the definition, timed), filtered+sorted list on indexed fields and a
#   lookup by phone number (wrk, 8 clients, 20 s each), idle memory and restart time.
#
#   bench/large.sh                      # RECORDS=1000000
# Results: $BENCH_WORK/results/rapport_large/results.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
BENCH_WORK="${BENCH_WORK:-/tmp/rapport-bench}"
RECORDS="${RECORDS:-1000000}"
PORT="${PORT:-18182}"
OUT="$BENCH_WORK/results/rapport_large"
DATA="$BENCH_WORK/rapport-large"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk jq sqlite3" >&2; exit 1; }
if curl -s "http://127.0.0.1:$PORT/" >/dev/null 2>&1; then echo "port $PORT is in use" >&2; exit 1; fi

cargo build --release -p rapport
BIN="$PWD/target/release/rapport"
rm -rf "$DATA" "$OUT"; mkdir -p "$DATA" "$OUT"
# The load comes from one token: its rate limit is off.
export RAPPORT_DATABASE_URL="sqlite:$DATA/large.db" RAPPORT_LOG=warn RAPPORT_RATE_LIMIT=0
TOKEN=$("$BIN" tenant create bench --json | jq -r .token)
"$BIN" schema apply bench/schema --tenant bench >/dev/null

start_server() {
  local t0; t0=$(date +%s%N)
  "$BIN" serve --listen "127.0.0.1:$PORT" >"$DATA/server.log" 2>&1 &
  SERVER=$!
  until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || ! kill -0 "$SERVER" 2>/dev/null; do sleep 0.005; done
  kill -0 "$SERVER" || { cat "$DATA/server.log" >&2; exit 1; }
  STARTUP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
record() { echo "$1" | tee -a "$OUT/results.jsonl"; }
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }

start_server
export BASE_URL="http://127.0.0.1:$PORT" AUTH="Bearer $TOKEN" DURATION=20s
run() { # mode [label]
  record "$("$KIT/driver/run_wrk.sh" "$1" "$OUT/wrk.log" | jq -c --arg w "${2:-$1}" '. + {workload: $w}')"
}
TOTAL=$RECORDS BULK_SIZE=1000 CONC=1 THREADS=1 BULK_PATH=/api/v1/records/contacts/batch BULK_WRAP='{"records":%s}' \
  MAX_DURATION=3600s run bulk
# Planner statistics are refreshed every 30 s by the server; give it one round.
sleep 31

# Add a field to the entity holding RECORDS records.
definition=$(api "$BASE_URL/api/v1/entities/contacts" | jq 'del(.updated_at) | .fields += [{"name": "nickname", "type": "text"}]')
t0=$(date +%s%N)
status=$(api -o /dev/null -w '%{http_code}' -X PUT "$BASE_URL/api/v1/entities/contacts" -d "$definition")
add_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
record "{\"mode\":\"add_field\",\"records\":$RECORDS,\"status\":$status,\"ms\":$add_ms}"

LIST_PATH="/api/v1/records/contacts?filter=lifecycle_stage%20eq%20%27customer%27&sort=-annual_value&limit=50" run list list_filtered_sorted
phone=$(printf '+1-555-%07d' $((RECORDS / 2)))
LIST_PATH="/api/v1/records/contacts?filter=phone%20eq%20%27$(jq -rn --arg p "$phone" '$p|@uri')%27" run list find_by_phone
record "{\"mode\":\"memory\",\"rss_mb\":$(awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$SERVER/status")}"
kill -TERM "$SERVER"; wait "$SERVER" || true
start_server
record "{\"mode\":\"restart\",\"startup_ms\":$STARTUP_MS,\"idle_rss_mb\":$(awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$SERVER/status")}"
kill -TERM "$SERVER"; wait "$SERVER" || true
echo "results: $OUT/results.jsonl"
