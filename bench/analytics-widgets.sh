#!/usr/bin/env bash
# Each widget of the benchmark dashboard alone, on the database a previous `bench/analytics.sh`
# loaded: saves one one-widget dashboard per widget (`one_<id>`, once), then requests each N
# times after three warm-ups and prints the server's own time for it (`ms`): min, p50, max.
#
#   RAPPORT_BIN=/path/to/rapport bench/analytics-widgets.sh [label]
#   N=9 …                                                      # requests per widget (default 9)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${BENCH_WORK:-/tmp/rapport-bench}/rapport-analytics"
PORT="${PORT:-18185}" N="${N:-9}" LABEL="${1:-}"
[ -f "$DATA/token" ] || { echo "no loaded database in $DATA: run bench/analytics.sh first" >&2; exit 1; }
if curl -s "http://127.0.0.1:$PORT/" >/dev/null 2>&1; then echo "port $PORT is in use" >&2; exit 1; fi
BIN="${RAPPORT_BIN:-$PWD/target/release/rapport}"
export RAPPORT_DATABASE_URL="sqlite:$DATA/analytics.db" RAPPORT_LOG=warn RAPPORT_RATE_LIMIT=0
"$BIN" serve --listen "127.0.0.1:$PORT" >"$DATA/widgets-server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do kill -0 "$SERVER" || exit 1; sleep 0.05; done
AUTH="Authorization: Bearer $(cat "$DATA/token")" API="http://127.0.0.1:$PORT/api/v1"
DASHBOARD=bench/analytics-dashboard.json
for id in $(jq -r '.widgets[].id' "$DASHBOARD"); do
  if ! curl -sf -o /dev/null -H "$AUTH" "$API/dashboards/one_$id"; then
    jq -c --arg id "$id" '{name: ("one_" + $id), label: $id, widgets: [.widgets[] | select(.id == $id)]}' "$DASHBOARD" \
      | curl -sf -o /dev/null -H "$AUTH" -H 'Content-Type: application/json' -X POST "$API/dashboards" -d @-
  fi
done
for id in $(jq -r '.widgets[].id' "$DASHBOARD"); do
  for _ in 1 2 3; do curl -sf -o /dev/null -H "$AUTH" "$API/dashboards/one_$id/data"; done
  for _ in $(seq "$N"); do curl -sf -H "$AUTH" "$API/dashboards/one_$id/data" | jq '.widgets[0].ms'; done \
    | sort -n | jq -sc --arg l "$LABEL" --arg w "$id" \
      '{label: $l, widget: $w, min: .[0], p50: .[(length - 1) / 2 | floor], max: .[-1]}'
done
