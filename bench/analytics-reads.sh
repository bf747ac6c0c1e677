#!/usr/bin/env bash
# The screen pop and the dashboard again, on the database a previous `bench/analytics.sh` loaded,
# after a warm-up (analytics.sh measures right after the server starts), for A/B runs of builds:
#   screen pop   GET /lookup?phone=<national number>, 8 clients then 2, DURATION each
#   dashboard    GET /dashboards/bench_daily/data, 1 client, DURATION
#   widgets      each widget of that dashboard alone (a one-widget dashboard `one_<id>`, saved
#                once), N requests after three warm ones: the server's own `ms`, min/p50/max
#
#   RAPPORT_BIN=/path/to/rapport bench/analytics-reads.sh [label]
#   WARM=10s DURATION=20s WHAT="pop dashboard" N=9 …  # the defaults (WHAT=widgets: not run unless asked)
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
DATA="${BENCH_WORK:-/tmp/rapport-bench}/rapport-analytics"
PORT="${PORT:-18184}"
WARM="${WARM:-10s}" DUR="${DURATION:-20s}" WHAT="${WHAT:-pop dashboard}" N="${N:-9}"
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
widgets() { # label
  local api="$BASE_URL/api/v1" board=bench/analytics-dashboard.json id
  for id in $(jq -r '.widgets[].id' "$board"); do
    curl -sf -o /dev/null -H "Authorization: $AUTH" "$api/dashboards/one_$id" ||
      jq -c --arg id "$id" '{name: ("one_" + $id), label: $id, widgets: [.widgets[] | select(.id == $id)]}' "$board" |
        curl -sf -o /dev/null -H "Authorization: $AUTH" -H 'Content-Type: application/json' -X POST "$api/dashboards" -d @-
    for _ in 1 2 3; do curl -sf -o /dev/null -H "Authorization: $AUTH" "$api/dashboards/one_$id/data"; done
    for _ in $(seq "$N"); do curl -sf -H "Authorization: $AUTH" "$api/dashboards/one_$id/data" | jq '.widgets[0].ms'; done |
      sort -n | jq -sc --arg l "$1" --arg w "$id" '{label: $l, widget: $w, min: .[0], p50: .[(length - 1) / 2 | floor], max: .[-1]}'
  done
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
    widgets)
      widgets "${1:-}" ;;
    *) echo "unknown: $what" >&2; exit 1 ;;
  esac
done
echo "{\"label\":\"${1:-}\",\"rss_mb\":$(awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$SERVER/status")}"
