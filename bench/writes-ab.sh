#!/usr/bin/env bash
# W1 (create, 8 clients) and optionally W4 (update) alone, for A/B runs of two or more builds:
# each run starts its server on a fresh database (tenant and bench/schema applied), and the builds
# alternate A, B, B, A (… for more builds) ROUNDS times.
#
#   bench/writes-ab.sh /path/to/rapport-a /path/to/rapport-b [more builds…]
#   TOTAL=20000 ROUNDS=1 WHAT="create update" DURATION=15s …   # the defaults
# A build can be a script that sets environment variables and execs a binary.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
WORK="${BENCH_WORK:-/tmp/rapport-bench}/writes-ab"
TOTAL="${TOTAL:-20000}" ROUNDS="${ROUNDS:-1}" WHAT="${WHAT:-create update}" DUR="${DURATION:-15s}"
PORT=18193
[ $# -ge 2 ] || { echo "usage: bench/writes-ab.sh <build A> <build B> [more builds]" >&2; exit 1; }
BUILDS=("$@")
. bench/fresh.sh
SERVER=
trap '[ -n "$SERVER" ] && kill -TERM "$SERVER" 2>/dev/null; wait 2>/dev/null || true' EXIT
one() { # index of the build
  local bin="${BUILDS[$1]}" dir="$WORK/run"
  start_fresh "$bin" "$dir" "$PORT"
  for mode in $WHAT; do
    case $mode in
      create) TOTAL=$TOTAL CREATE_PATH=/api/v1/records/contacts BODY_WRAP='{"data":%s}' \
                "$KIT/driver/run_wrk.sh" create ;;
      update) sqlite3 "$dir/bench.db" "SELECT r.id FROM records r JOIN entities e ON e.id = r.entity_id WHERE e.name = 'contacts'" >"$dir/ids.txt"
              DURATION=$DUR IDS_FILE="$dir/ids.txt" ITEM_PATH='/api/v1/records/contacts/{id}' PATCH_WRAP='{"data":%s}' \
                "$KIT/driver/run_wrk.sh" update ;;
    esac | jq -c --arg b "$(basename "$bin")" --arg m "$mode" \
      '{build: $b, workload: $m, rps, p50: .lat_p50_ms, p90: .lat_p90_ms, p99: .lat_p99_ms, errors: (.http_errors + .non2xx3xx - .idle_requests)}'
  done
  kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=
}
for _ in $(seq "$ROUNDS"); do
  for i in "${!BUILDS[@]}"; do one "$i"; done
  for i in $(seq $((${#BUILDS[@]} - 1)) -1 0); do one "$i"; done
done
