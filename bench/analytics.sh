#!/usr/bin/env bash
# The analytics targets of issue 7 on SQLite (release build), with data loaded through the batch
# API: 1 M contacts, 5 M activities (and 100,000 accounts, 200,000 cases, 200,000 opportunities).
#   screen pop    GET /lookup?phone=<national number>, a random contact each request, 8 clients
#   timeline      GET /records/contact/<id>/timeline?limit=20, a random contact, 8 clients
#   dashboard     GET /dashboards/bench_daily/data (eight widgets), 1 client, then 8
# Each is measured for 20 s after WARM (10s) of the same load; the screen pop is also measured
# cold, first, right after the server's start and a pause (`screen_pop_cold`).
#
#   bench/analytics.sh                          # the full sizes (loading takes a while)
#   CONTACTS=100000 ACTIVITIES=500000 bench/analytics.sh
#   KEEP=1 bench/analytics.sh                   # reuse the loaded database of a previous run
# Results: $BENCH_WORK/results/rapport_analytics/results.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
BENCH_WORK="${BENCH_WORK:-/tmp/rapport-bench}"
PORT="${PORT:-18183}"
OUT="$BENCH_WORK/results/rapport_analytics"
DATA="$BENCH_WORK/rapport-analytics"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk jq" >&2; exit 1; }
if curl -s "http://127.0.0.1:$PORT/" >/dev/null 2>&1; then echo "port $PORT is in use" >&2; exit 1; fi
if [ -z "${RAPPORT_BIN:-}" ]; then cargo build --release -p rapport; fi
BIN="${RAPPORT_BIN:-$PWD/target/release/rapport}"
export RAPPORT_DATABASE_URL="sqlite:$DATA/analytics.db" RAPPORT_LOG=warn RAPPORT_RATE_LIMIT=0
mkdir -p "$OUT"; : >"$OUT/results.jsonl"
if [ -z "${KEEP:-}" ] || [ ! -f "$DATA/token" ]; then
  rm -rf "$DATA"; mkdir -p "$DATA"
  "$BIN" tenant create bench --json | jq -r .token >"$DATA/token"
  "$BIN" schema apply bench/analytics-schema --tenant bench >/dev/null
  LOAD=1
fi
TOKEN=$(cat "$DATA/token")
record() { echo "$1" | tee -a "$OUT/results.jsonl"; }
"$BIN" serve --listen "127.0.0.1:$PORT" >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do kill -0 "$SERVER" || exit 1; sleep 0.05; done
export BASE_URL="http://127.0.0.1:$PORT" AUTH="Bearer $TOKEN"
if [ -n "${LOAD:-}" ]; then
  BASE_URL=$BASE_URL TOKEN=$TOKEN OUT=$DATA python3 bench/analytics_data.py | tee -a "$OUT/results.jsonl"
  curl -sf -H "$(printf 'Authorization: Bearer %s' "$TOKEN")" -H 'Content-Type: application/json' \
    -X POST "$BASE_URL/api/v1/dashboards" -d @bench/analytics-dashboard.json >/dev/null
fi
# The server refreshes the planner's statistics when the records table has doubled, checking
# every minute (and at start-up): give it one round.
sleep 65
run() { # mode label [env…]
  record "$("$KIT/driver/run_wrk.sh" "$1" "$OUT/wrk.log" | jq -c --arg w "$2" '. + {workload: $w}')"
}
warm() { # mode [env…]: WARM (10s) of the same load, not recorded
  DURATION="${WARM:-10s}" "$KIT/driver/run_wrk.sh" "$1" "$OUT/wrk.log" >/dev/null
}
pop() { IDS_FILE="$DATA/contact_phones.txt" ITEM_PATH='/api/v1/lookup?phone={id}' "$@"; }
timeline() { IDS_FILE="$DATA/contact_ids.txt" ITEM_PATH='/api/v1/records/contact/{id}/timeline?limit=20' "$@"; }
dashboard() { LIST_PATH='/api/v1/dashboards/bench_daily/data' "$@"; }
# The screen pop right after the pause, cold: pages of the database that nobody read during it
# may have left the OS page cache (machines of this kind reclaim file pages idle for a minute),
# so its first requests wait on the disk. Recorded for the record; the targets are measured next,
# each workload after a warm-up of its own.
DURATION=20s pop run read screen_pop_cold
pop warm read; DURATION=20s pop run read screen_pop
timeline warm read; DURATION=20s timeline run read timeline_first_page
CONC=1 THREADS=1 dashboard warm list
DURATION=20s CONC=1 THREADS=1 dashboard run list dashboard_8_widgets_1_client
DURATION=20s dashboard run list dashboard_8_widgets_8_clients
# Where the dashboard's time goes: each widget's own time (`ms`), one request, one client.
curl -sf -H "Authorization: Bearer $TOKEN" "$BASE_URL/api/v1/dashboards/bench_daily/data" >"$OUT/dashboard.json"
record "$(jq -c '{mode: "dashboard_widgets", widgets: [.widgets[] | {id, ms, value, rows: (.data // [] | length), error}]}' "$OUT/dashboard.json")"
record "{\"mode\":\"memory\",\"rss_mb\":$(awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$SERVER/status")}"
echo "results: $OUT/results.jsonl"
