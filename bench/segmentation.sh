#!/usr/bin/env bash
# k-means over a million customers inside the sandbox (issue 7's target: 1 M × 5 features in
# ≤ 10 s, fuel reported): on the database bench/analytics.sh loaded (1 M contacts with five
# numeric features), the segmentation plugin's `segment` step reads every contact's features
# with records.scan, normalises them and clusters them into K segments, report only (no writes),
# started as a manual workflow run; the run's time and the plugin run's time and fuel.
#
#   bench/analytics.sh && bench/segmentation.sh
# Results: $BENCH_WORK/results/rapport_analytics/segmentation.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_WORK="${BENCH_WORK:-/tmp/rapport-bench}"
PORT="${PORT:-18184}"
K="${K:-5}"
OUT="$BENCH_WORK/results/rapport_analytics"
DATA="$BENCH_WORK/rapport-analytics"
[ -f "$DATA/token" ] || { echo "run bench/analytics.sh first" >&2; exit 1; }
if [ -z "${RAPPORT_BIN:-}" ]; then cargo build --release -p rapport; fi
BIN="${RAPPORT_BIN:-$PWD/target/release/rapport}"
scripts/plugins >/dev/null
export RAPPORT_DATABASE_URL="sqlite:$DATA/analytics.db" RAPPORT_LOG=warn RAPPORT_RATE_LIMIT=0
TOKEN=$(cat "$DATA/token")
"$BIN" serve --listen "127.0.0.1:$PORT" >"$DATA/segmentation-server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do kill -0 "$SERVER" || exit 1; sleep 0.05; done
B="http://127.0.0.1:$PORT/api/v1"
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
record() { echo "$1" | tee -a "$OUT/segmentation.jsonl"; }
# The plugin as built now (removed first if an earlier run installed it).
api -X DELETE "$B/plugins/segmentation" >/dev/null
jq -n --slurpfile m plugins/segmentation/manifest.json --rawfile c <(base64 -w0 target/plugins/segmentation.wasm) \
  '{manifest: $m[0], component: $c}' | api -X POST "$B/plugins" -d @- >/dev/null
api -X POST "$B/plugins/segmentation/enable" >/dev/null
: >"$OUT/segmentation.jsonl"

run_job() { # name input-json
  api -X DELETE "$B/workflows/$1" >/dev/null
  api -X POST "$B/workflows" -d "{\"name\": \"$1\", \"trigger\": {\"type\": \"manual\"}, \"retry\": {\"max_attempts\": 1},
    \"steps\": [{\"id\": \"segment\", \"type\": \"plugin\", \"plugin\": \"segmentation\", \"step\": \"segment\", \"input\": $2}]}" >/dev/null
  local id status t0 t1
  t0=$(date +%s%N)
  id=$(api -X POST "$B/workflows/$1/runs" -d '{}' | jq -r .id)
  while :; do
    status=$(api "$B/workflows/$1/runs/$id" | jq -r .status)
    case "$status" in succeeded|failed) break ;; esac
    sleep 0.2
  done
  t1=$(date +%s%N)
  local run plugin_run
  run=$(api "$B/workflows/$1/runs/$id")
  plugin_run=$(api "$B/plugins/segmentation/runs?limit=1" | jq -c '.data[0] | {duration_ms: (.duration_us / 1000), fuel_used, outcome, error}')
  record "$(jq -c --argjson p "$plugin_run" --arg ms "$(( (t1 - t0) / 1000000 ))" \
    '{mode: "segmentation", job: .workflow_id, status, run_ms: ($ms | tonumber), plugin: $p,
      output: (.steps[0].output | {customers, skipped, iterations, converged, written, segments: [.segments[]? | {segment, size}]}),
      error}' <<<"$run")"
}
FEATURES='["recency", "frequency", "monetary", "annual_value", "tenure_days"]'
run_job segment_all "{\"entity\": \"contact\", \"features\": $FEATURES, \"k\": $K, \"segment_field\": null}"
