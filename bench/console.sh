#!/usr/bin/env bash
# The console's target: a record list page of 50 rows rendered server-side in ≤ 20 ms. Loads
# 10,000 contacts (ten fields of the kinds a list shows: text, email, phone, picklist, decimal,
# date, boolean, a reference to an account) through the batch API, signs in through the
# console's own form, then requests `/r/contact` (50 rows, references expanded to the account's
# name) with 1 client and with 8 (wrk, 20 s each), and the second page by its cursor.
#   bench/console.sh            RAPPORT_BIN=<binary> bench/console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_WORK="${BENCH_WORK:-/tmp/rapport-bench}"
PORT="${PORT:-18186}"
DATA="$BENCH_WORK/rapport-console"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk jq" >&2; exit 1; }
if [ -z "${RAPPORT_BIN:-}" ]; then cargo build --release -p rapport; fi
BIN="${RAPPORT_BIN:-$PWD/target/release/rapport}"
rm -rf "$DATA"; mkdir -p "$DATA"
export RAPPORT_DATABASE_URL="sqlite:$DATA/console.db" RAPPORT_LOG=warn RAPPORT_RATE_LIMIT=0
TOKEN=$("$BIN" tenant create bench --json | jq -r .token)
"$BIN" serve --listen "127.0.0.1:$PORT" >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do kill -0 "$SERVER" || exit 1; sleep 0.05; done
B="http://127.0.0.1:$PORT"
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
api -X POST "$B/api/v1/entities" -d '{"name": "account", "fields": [{"name": "name", "type": "text", "required": true}]}' >/dev/null
api -X POST "$B/api/v1/entities" -d '{"name": "contact", "label": "Contact", "plural_label": "Contacts", "fields": [
  {"name": "first_name", "type": "text", "required": true}, {"name": "last_name", "type": "text"},
  {"name": "email", "type": "email"}, {"name": "phone", "type": "phone"},
  {"name": "stage", "type": "picklist", "options": ["lead", "customer", "churned"]},
  {"name": "account", "type": "reference", "entity": "account"},
  {"name": "annual_value", "type": "decimal"}, {"name": "since", "type": "date"},
  {"name": "vip", "type": "boolean"}, {"name": "notes", "type": "long_text"}]}' >/dev/null
python3 - "$B" "$TOKEN" <<'PY'
import json, sys, urllib.request
base, token = sys.argv[1], sys.argv[2]
def post(path, body):
    request = urllib.request.Request(base + path, json.dumps(body).encode(), {
        "Authorization": "Bearer " + token, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request))
accounts = [r["id"] for r in post("/api/v1/records/account/batch",
            {"records": [{"name": f"Account {i}"} for i in range(200)]})["data"]]
for chunk in range(10):
    post("/api/v1/records/contact/batch", {"records": [{
        "first_name": f"First{chunk * 1000 + i}", "last_name": "Last", "email": f"c{chunk * 1000 + i}@example.com",
        "phone": f"+3314400{chunk * 1000 + i:04d}", "stage": ["lead", "customer", "churned"][i % 3],
        "account": accounts[i % 200], "annual_value": i * 10.5, "since": "2025-06-01", "vip": i % 7 == 0,
        "notes": "x" * 200} for i in range(1000)]})
PY
# The console's own sign-in (a password for the tenant's admin first).
echo "bench-password-123" | "$BIN" user password bench admin >/dev/null
COOKIE=$(curl -s -o /dev/null -D - -X POST "$B/sign-in" --data 'tenant=bench&user=admin&password=bench-password-123&next=/' \
  | awk -F'[ ;]' 'tolower($1)=="set-cookie:" {print $2}')
[ -n "$COOKIE" ] || { echo "sign-in failed" >&2; exit 1; }
ROWS=$(curl -sf -H "Cookie: $COOKIE" "$B/r/contact" | grep -o '<tr>' | wc -l)
echo "list page rows (with the header row): $ROWS"
CURSOR=$(curl -sf -H "Cookie: $COOKIE" "$B/r/contact" | grep -o 'cursor=[^"]*' | head -1 | sed 's/&amp;/\&/g')
for page in "/r/contact" "/r/contact?$CURSOR"; do
  for clients in 1 8; do
    echo "== GET $page, $clients client(s), 20 s"
    COOKIE="$COOKIE" PAGE="$page" wrk -t$(( clients < 2 ? 1 : 2 )) -c$clients -d20s --latency -s bench/console.lua "$B" \
      | grep -E 'Requests/sec|Latency|50%|90%|99%'
  done
done
echo "server RSS: $(awk '/^VmRSS/{printf "%.1f MB", $2/1024}' "/proc/$SERVER/status")"
