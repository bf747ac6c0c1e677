#!/usr/bin/env bash
# Where the time goes in W1 (creates, 8 clients) or W6 (bulk import, one client, batches of 1,000):
# starts one build on a fresh database, runs the workload, and from one second in samples the
# server for three seconds. Prints the workload's result, the server's CPU in those seconds and
# how the machine's two cores were spent (user, system, idle, I/O wait, interrupts).
#
#   bench/profile.sh [build]                    # W1, `perf record` of the server → $WORK/perf.data
#   WHAT=bulk bench/profile.sh [build]          # W6 instead of W1
#   PERF_ARGS="--call-graph dwarf,16384" …      # call graphs (perf report --children)
#   SAMPLE=syncs bench/profile.sh [build]       # instead of perf: the WAL syncer's fsyncs (strace -T),
#                                               # how many in three seconds and how long they took
#   SAMPLE=none bench/profile.sh [build]        # only the workload, the server's cores and the machine's split
# A build can be a script that sets environment variables and execs a binary. Needs perf
# (linux-perf) and, for SAMPLE=syncs, strace.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
WORK="${BENCH_WORK:-/tmp/rapport-bench}/profile"
WHAT="${WHAT:-create}" SAMPLE="${SAMPLE:-perf}" PERF_ARGS="${PERF_ARGS:-}"
PORT=18195
bin="${1:-target/release/rapport}"
. bench/fresh.sh
SERVER=
trap '[ -n "$SERVER" ] && kill -TERM "$SERVER" 2>/dev/null; wait 2>/dev/null || true' EXIT
dir="$WORK/run"
start_fresh "$bin" "$dir" "$PORT"
# utime + stime of the server, in clock ticks
cpu() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
sample() {
  sleep 1
  head -1 /proc/stat >"$dir/stat0"; local c0; c0=$(cpu)
  case $SAMPLE in
    perf) perf record -F 4999 $PERF_ARGS -o "$WORK/perf.data" -p "$SERVER" -- sleep 3 2>/dev/null >/dev/null ;;
    syncs)
      local tid; tid=$(grep -l '^rapport-wal-syn' /proc/"$SERVER"/task/*/comm | head -1 | cut -d/ -f5)
      timeout 3 strace -T -e trace=fsync,fdatasync -p "$tid" -o "$dir/syncs.txt" 2>/dev/null || true ;;
    *) sleep 3 ;;
  esac
  head -1 /proc/stat >"$dir/stat1"
  printf 'server: %.2f cores over the 3 s sampled\n' "$(echo "($(cpu) - $c0) / $(getconf CLK_TCK) / 3" | bc -l)"
}
sample &
SAMPLER=$!
case $WHAT in
  create) TOTAL="${TOTAL:-30000}" CREATE_PATH=/api/v1/records/contacts BODY_WRAP='{"data":%s}' \
            "$KIT/driver/run_wrk.sh" create ;;
  bulk) TOTAL="${TOTAL:-100000}" BULK_SIZE=1000 CONC=1 THREADS=1 EMAIL_PREFIX=b \
          BULK_PATH=/api/v1/records/contacts_bulk/batch BULK_WRAP='{"records":%s}' "$KIT/driver/run_wrk.sh" bulk ;;
  *) echo "WHAT is create or bulk" >&2; exit 1 ;;
esac | jq -c '{rps, p50: .lat_p50_ms, p99: .lat_p99_ms}'
wait "$SAMPLER"
paste "$dir/stat0" "$dir/stat1" | awk '{u = $13 - $2 + $14 - $3; s = $15 - $4; i = $16 - $5; w = $17 - $6;
  q = $18 - $7 + $19 - $8; t = u + s + i + w + q;
  printf "machine: user %.0f%%, system %.0f%%, idle %.0f%%, I/O wait %.0f%%, interrupts %.0f%%\n",
    100 * u / t, 100 * s / t, 100 * i / t, 100 * w / t, 100 * q / t}'
case $SAMPLE in
  perf) echo "samples: $WORK/perf.data (perf report -i $WORK/perf.data --no-children --sort comm,dso)" ;;
  syncs) grep -o '<[0-9.]*>' "$dir/syncs.txt" | tr -d '<>' | sort -n | awk '{a[NR] = $1; s += $1}
    END {if (NR) printf "WAL syncs: %d in 3 s, p50 %.3f ms, p90 %.3f, p99 %.3f, mean %.3f\n",
      NR, a[int(NR / 2) + 1] * 1000, a[int(NR * .9) + 1] * 1000, a[int(NR * .99) + 1] * 1000, s / NR * 1000}' ;;
esac
kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=
