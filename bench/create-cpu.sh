#!/usr/bin/env bash
# W1 alone (creates, 8 clients) against one build, with what the server spent on it: its CPU
# time and its threads' context switches (from /proc, around the run), per create.
#
#   bench/create-cpu.sh /path/to/rapport [more builds…]      # each on a fresh database, in order
#   TOTAL=20000 …                                             # the default
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
WORK="${BENCH_WORK:-/tmp/rapport-bench}/create-cpu"
TOTAL="${TOTAL:-20000}"
PORT=18194
[ $# -ge 1 ] || { echo "usage: bench/create-cpu.sh <build> [more builds]" >&2; exit 1; }
. bench/fresh.sh
SERVER=
trap '[ -n "$SERVER" ] && kill -TERM "$SERVER" 2>/dev/null; wait 2>/dev/null || true' EXIT
cpu() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; } # utime + stime, in clock ticks
switches() { cat /proc/"$SERVER"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
for bin in "$@"; do
  dir="$WORK/run"
  start_fresh "$bin" "$dir" "$PORT"
  cpu0=$(cpu); sw0=$(switches); t0=$(date +%s.%N)
  result=$(TOTAL=$TOTAL CREATE_PATH=/api/v1/records/contacts BODY_WRAP='{"data":%s}' "$KIT/driver/run_wrk.sh" create)
  cpu1=$(cpu); sw1=$(switches); t1=$(date +%s.%N)
  ticks=$(getconf CLK_TCK)
  jq -c --arg b "$(basename "$bin")" --argjson n "$TOTAL" --argjson cpu "$(echo "($cpu1 - $cpu0) / $ticks" | bc -l)" \
    --argjson sw "$((sw1 - sw0))" --argjson wall "$(echo "$t1 - $t0" | bc -l)" \
    '{build: $b, rps, p99: .lat_p99_ms, cores: ($cpu / $wall * 100 | round / 100),
      cpu_us_per_create: ($cpu / $n * 1e6 | round), switches_per_create: ($sw / $n * 10 | round / 10)}' <<<"$result"
  kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=
done
