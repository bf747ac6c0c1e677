#!/usr/bin/env bash
# Workflow engine benchmark: record events → runs of a three-step workflow (set a field on the
# record, create a task, notify the owner), against a release `rapport serve`.
#
#   bench/workflows.sh                        # SQLite (synchronous=FULL)
#   BACKEND=postgres bench/workflows.sh       # PostgreSQL at $PG_URL (a fresh database is made)
#
# Phases, each printed as one JSON line (also in $BENCH_WORK/results/workflows_<backend>.jsonl):
#   idle     IDLE_EVENTS creates one at a time, PAUSE_MS apart: latency from the run's insert
#            (in the write's transaction) to the start of its first step, p50/p90/p99/max
#   load     EVENTS creates by 8 clients (wrk): events/s = runs finished / time from the first
#            create to the last run's end; the create rate alone; the same latency under load
#   soak     SOAK_SECONDS of creates by 2 clients, the server's RSS sampled every 10 s
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
BENCH_WORK="${BENCH_WORK:-/tmp/rapport-bench}"
BACKEND="${BACKEND:-sqlite}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
IDLE_EVENTS="${IDLE_EVENTS:-200}"
PAUSE_MS="${PAUSE_MS:-50}"
EVENTS="${EVENTS:-5000}"
SOAK_SECONDS="${SOAK_SECONDS:-60}"
PORT="${PORT:-18185}"
DATA="$BENCH_WORK/workflows-data"
OUT="$BENCH_WORK/results/workflows_$BACKEND.jsonl"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk jq sqlite3" >&2; exit 1; }

# RAPPORT_BIN=/path/to/rapport runs another build (A/B runs) instead of building this one.
if [ -z "${RAPPORT_BIN:-}" ]; then cargo build --release -p rapport; fi
BIN="${RAPPORT_BIN:-$PWD/target/release/rapport}"
rm -rf "$DATA"; mkdir -p "$DATA" "$(dirname "$OUT")"; : >"$OUT"
case "$BACKEND" in
  sqlite) export RAPPORT_DATABASE_URL="sqlite:$DATA/bench.db" ;;
  postgres)
    psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS rapport_wf_bench WITH (FORCE)" -c "CREATE DATABASE rapport_wf_bench"
    export RAPPORT_DATABASE_URL="$PG_URL/rapport_wf_bench" ;;
  *) echo "BACKEND is sqlite or postgres" >&2; exit 1 ;;
esac
# The load comes from one token: its rate limit is off.
export RAPPORT_LOG=warn RAPPORT_RATE_LIMIT=0
sql() { # one query, rows on stdout
  case "$BACKEND" in
    sqlite) sqlite3 "$DATA/bench.db" "$1" ;;
    postgres) psql "$RAPPORT_DATABASE_URL" -Atqc "$1" ;;
  esac
}
# Milliseconds from a run's insert to the start of its first step, for runs created after $1.
latencies() {
  case "$BACKEND" in
    sqlite) sql "SELECT (julianday(s.started_at) - julianday(r.created_at)) * 86400000.0 FROM workflow_runs r
                 JOIN workflow_steps s ON s.run_id = r.id AND s.seq = 1 WHERE r.created_at > '$1'" ;;
    postgres) sql "SELECT EXTRACT(EPOCH FROM (s.started_at - r.created_at)) * 1000 FROM workflow_runs r
                   JOIN workflow_steps s ON s.run_id = r.id AND s.seq = 1 WHERE r.created_at > '$1'" ;;
  esac
}
percentiles() { # JSON of p50/p90/p99/max of the numbers on stdin
  sort -g | awk '{v[NR]=$1} END {if (NR == 0) {print "{}"; exit}
    printf "{\"n\":%d,\"p50_ms\":%.2f,\"p90_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
    NR, v[int(NR*0.50+0.999)], v[int(NR*0.90+0.999)], v[int(NR*0.99+0.999)], v[NR]}'
}
stamp() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }
succeeded() { sql "SELECT COUNT(*) FROM workflow_runs WHERE status = 'succeeded'"; }

TOKEN=$("$BIN" tenant create bench --json | jq -r .token)
"$BIN" schema apply bench/schema --tenant bench >/dev/null
"$BIN" serve --listen "127.0.0.1:$PORT" >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.02; done
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
BASE="http://127.0.0.1:$PORT/api/v1"
api -X POST "$BASE/entities" -d '{"name": "bench_tasks", "fields": [
  {"name": "subject", "type": "text", "required": true},
  {"name": "contact", "type": "reference", "entity": "contacts"}]}' >/dev/null
api -X POST "$BASE/workflows" -d '{"name": "welcome",
  "trigger": {"type": "record", "entity": "contacts", "events": ["created"]},
  "steps": [
    {"id": "tag", "type": "set_fields", "values": {"company": "{{record.company}} (welcomed)"}},
    {"id": "task", "type": "create_record", "entity": "bench_tasks",
     "values": {"subject": "Call {{record.first_name}} {{record.last_name}}", "contact": "{{record._id}}"}},
    {"id": "tell", "type": "notify", "user": "{{record._owner}}", "message": "New contact {{record.email}}"}]}' >/dev/null
rss_mb() { awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$SERVER/status"; }
record() { echo "$1" | tee -a "$OUT"; }
wait_for() { # runs succeeded count
  until [ "$(succeeded)" -ge "$1" ]; do sleep 0.05; done
}

# idle: one event at a time
since=$(stamp)
for i in $(seq 1 "$IDLE_EVENTS"); do
  api -X POST "$BASE/records/contacts" -d "{\"data\": {\"first_name\": \"Idle\", \"last_name\": \"N$i\", \"email\": \"idle$i@example.com\", \"company\": \"Acme\"}}" >/dev/null
  sleep "$(awk "BEGIN {print $PAUSE_MS / 1000}")"
done
wait_for "$IDLE_EVENTS"
record "{\"phase\":\"idle\",\"backend\":\"$BACKEND\",\"commit_to_first_step\":$(latencies "$since" | percentiles)}"

# load: 8 clients create EVENTS contacts; the engine works while they do
since=$(stamp)
before=$(succeeded)
t0=$(date +%s%N)
created=$(BASE_URL="http://127.0.0.1:$PORT" AUTH="Bearer $TOKEN" TOTAL=$EVENTS EMAIL_PREFIX=l \
  CREATE_PATH=/api/v1/records/contacts BODY_WRAP='{"data":%s}' "$KIT/driver/run_wrk.sh" create "$DATA/wrk.log")
t1=$(date +%s%N)
wait_for $((before + EVENTS))
t2=$(date +%s%N)
record "$(jq -c --argjson lat "$(latencies "$since" | percentiles)" \
  --arg backend "$BACKEND" --argjson events "$EVENTS" \
  --argjson create_s "$(awk "BEGIN {print ($t1 - $t0) / 1e9}")" \
  --argjson total_s "$(awk "BEGIN {print ($t2 - $t0) / 1e9}")" \
  '{phase: "load", backend: $backend, events: $events, creates_per_s: .rps, create_p99_ms: .lat_p99_ms,
    events_per_s: ($events / $total_s), seconds_to_last_run: $total_s, create_seconds: $create_s,
    commit_to_first_step: $lat}' <<<"$created")"

# soak: steady creates, RSS every 10 s
samples=()
( BASE_URL="http://127.0.0.1:$PORT" AUTH="Bearer $TOKEN" TOTAL=100000000 EMAIL_PREFIX=s CONC=2 THREADS=1 \
  MAX_DURATION="${SOAK_SECONDS}s" CREATE_PATH=/api/v1/records/contacts BODY_WRAP='{"data":%s}' \
  "$KIT/driver/run_wrk.sh" create "$DATA/wrk-soak.log" >"$DATA/soak.json" ) &
LOAD=$!
while kill -0 "$LOAD" 2>/dev/null; do samples+=("$(rss_mb)"); sleep 10; done
wait "$LOAD" || true
pending=$(sql "SELECT COUNT(*) FROM workflow_runs WHERE status <> 'succeeded'")
record "$(jq -c --arg backend "$BACKEND" --argjson seconds "$SOAK_SECONDS" --argjson pending "$pending" \
  --argjson rss "[$(IFS=,; echo "${samples[*]}")]" \
  '{phase: "soak", backend: $backend, seconds: $seconds, creates_per_s: .rps, rss_mb_every_10s: $rss,
    runs_not_finished_at_end: $pending}' <"$DATA/soak.json")"
echo "results: $OUT"
