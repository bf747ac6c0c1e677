# Sourced by the benchmark scripts that start one build on a fresh database (writes-ab.sh,
# create-cpu.sh, profile.sh).
#
# start_fresh <build> <dir> <port>: empties <dir>, creates the tenant `bench` and applies
# bench/schema there (SQLite, <dir>/bench.db), starts `serve` on 127.0.0.1:<port> and waits
# for /healthz. Sets SERVER (the server's pid: a build that is a wrapper script exec's the
# binary, same pid) and exports BASE_URL and AUTH for ../shared/bench/driver/run_wrk.sh.
start_fresh() {
  local bin="$1" dir="$2" port="$3" token
  rm -rf "$dir"; mkdir -p "$dir"
  export RAPPORT_DATABASE_URL="sqlite:$dir/bench.db" RAPPORT_LOG=warn RAPPORT_RATE_LIMIT=0
  token=$("$bin" tenant create bench --json | jq -r .token)
  "$bin" schema apply bench/schema --tenant bench >/dev/null
  "$bin" serve --listen "127.0.0.1:$port" >"$dir/server.log" 2>&1 &
  SERVER=$!
  until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do kill -0 "$SERVER" || exit 1; sleep 0.02; done
  export BASE_URL="http://127.0.0.1:$port" AUTH="Bearer $token"
}
