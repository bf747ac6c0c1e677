#!/usr/bin/env bash
# HTTP create throughput with one `before` hook against none, in one session (W1 of the shared
# driver, 8 clients): first without plugins; then with the `hostile` plugin in its harmless mode
# (`attack: none`: reads its configuration and proceeds) bound as a `before` hook on `contacts`,
# once as shipped (it requests record capabilities, so the hook runs inside the write's
# transaction) and once with no capabilities (a pure hook: it runs before the transaction);
# then once more without (to see the drift of the machine between runs).
#
#   bench/plugins.sh                      # TOTAL=20000 records per run
#   RAPPORT_BIN=/path/to/rapport bench/plugins.sh   # another build (A/B)
#   cargo bench -p rapport --bench plugins   # the in-process cost of one invocation (criterion)
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$(cd "${RAPPORT_BENCH_KIT:-../shared/bench}" && pwd)"
BENCH_WORK="${BENCH_WORK:-/tmp/rapport-bench}"
TOTAL="${TOTAL:-20000}"
PORT="${PORT:-18183}"
OUT="$BENCH_WORK/results/rapport_plugins"
DATA="$BENCH_WORK/rapport-plugins-data"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk jq sqlite3" >&2; exit 1; }

scripts/plugins >/dev/null
if [ -z "${RAPPORT_BIN:-}" ]; then cargo build --release -p rapport; fi
BIN="${RAPPORT_BIN:-$PWD/target/release/rapport}"
rm -rf "$DATA" "$OUT"; mkdir -p "$DATA" "$OUT"
# The load comes from one token: its rate limit is off.
export RAPPORT_DATABASE_URL="sqlite:$DATA/bench.db" RAPPORT_LOG=warn RAPPORT_CACHE_DIR="$DATA/cache" RAPPORT_RATE_LIMIT=0
TOKEN=$("$BIN" tenant create bench --json | jq -r .token)
"$BIN" schema apply bench/schema --tenant bench >/dev/null
"$BIN" serve --listen "127.0.0.1:$PORT" >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.01; done
export BASE_URL="http://127.0.0.1:$PORT" AUTH="Bearer $TOKEN"
api() { curl -sf -H "Authorization: $AUTH" -H 'Content-Type: application/json' "$@"; }
run() { # label email-prefix
  TOTAL=$TOTAL EMAIL_PREFIX=$2 CREATE_PATH=/api/v1/records/contacts BODY_WRAP='{"data":%s}' \
    "$KIT/driver/run_wrk.sh" create "$OUT/wrk.log" | jq -c --arg w "$1" '. + {workload: $w}' | tee -a "$OUT/results.jsonl"
}

run "create, no plugin" a
base64 -w0 target/plugins/hostile.wasm >"$DATA/hostile.b64"
upload() { # version capabilities
  jq -n --slurpfile m plugins/hostile/manifest.json --rawfile c "$DATA/hostile.b64" --arg v "$1" --argjson caps "$2" \
    '{manifest: ($m[0] | .version = $v | .capabilities = (if $caps == null then .capabilities else $caps end)
       | .provides = {hooks: [{entity: "contacts", stage: "before", operations: ["create"]}]}), component: $c}' \
    > "$DATA/upload.json"
  api --data @"$DATA/upload.json" "$BASE_URL/api/v1/plugins" >/dev/null
}
upload 0.1.0 null
api -X PUT -d '{"attack": "none"}' "$BASE_URL/api/v1/plugins/hostile/config" >/dev/null
api -X POST "$BASE_URL/api/v1/plugins/hostile/enable" >/dev/null
run "create, one before hook with record capabilities (in the transaction)" b
upload 0.1.1 '{}'
run "create, one pure before hook (before the transaction)" c
api -X POST "$BASE_URL/api/v1/plugins/hostile/disable" >/dev/null
run "create, no plugin (again)" d
echo "results: $OUT/results.jsonl"
