#!/usr/bin/env bash
# The screen pop and the dashboard again, on the database a previous `bench/analytics.sh` loaded,
# after a warm-up (analytics.sh measures right after the server starts), for A/B runs of builds:
#   screen pop   GET /lookup?phone=<national number>, 8 clients then 2, DURATION each
#   dashboard    GET /dashboards/bench_daily/data, 1 client, DURATION
#
#   RAPPORT_BIN=/path/to/rapport bench/analytics-reads.sh [label]
#   WARM=10s DURATION=20s WHAT="pop dashboard" …     # the defaults
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
DATA="${BENCH_WORK:-/tmp/rapport-bench}/rapport-analytics"
PORT="${PORT:-18184}"
WARM="${WARM:-10s}" DUR="${DURATION:-20s}" WHAT="${WHAT:-pop dashboard}"
[ -f "$DATA/token" ] || { echo "no loaded database in $DATA: run bench/analytics.sh first" >&2; exit 1; }
if curl -s "http://127.0.0.1:$PORT/" >/dev/null 2>&1; then echo "port $PORT is in use" >&2; exit 1; fi
BIN="${RAPPORT_BIN:-$PWD/target/release/rapport}"
export RAPPORT_DATABASE_URL="sqlite:$DATA/analytics.db" RAPPORT_LOG=warn RAPPORT_RATE_LIMIT=0
"$BIN" serve --listen "127.0.0.1:$PORT" >"$DATA/reads-server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do kill -0 "$SERVER" || exit 1; sleep 0.05; done
export BASE_URL="http://127.0.0.1:$PORT" AUTH="Bearer $(cat "$DATA/token")"
show() { jq -c --arg l "${1:-}" --arg w "$2" '{label: $l, workload: $w, rps, p50: .lat_p50_ms, p99: .lat_p99_ms, errors: .http_errors}'; }
pop() { # clients duration
  CONC=$1 THREADS=$(($1 < 2 ? 1 : 2)) DURATION=$2 IDS_FILE="$DATA/contact_phones.txt" \
    ITEM_PATH='/api/v1/lookup?phone={id}' "$KIT/driver/run_wrk.sh" read
}
dashboard() { # duration
  CONC=1 THREADS=1 DURATION=$1 LIST_PATH='/api/v1/dashboards/bench_daily/data' "$KIT/driver/run_wrk.sh" list
}
for what in $WHAT; do
  case "$what" in
    pop)
      pop 8 "$WARM" >/dev/null
      pop 8 "$DUR" | show "${1:-}" screen_pop_8_clients
      pop 2 "$DUR" | show "${1:-}" screen_pop_2_clients ;;
    dashboard)
      dashboard "$WARM" >/dev/null
      dashboard "$DUR" | show "${1:-}" dashboard_8_widgets_1_client ;;
    *) echo "unknown: $what" >&2; exit 1 ;;
  esac
done
echo "{\"label\":\"${1:-}\",\"rss_mb\":$(awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$SERVER/status")}"
