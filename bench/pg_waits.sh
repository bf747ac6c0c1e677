#!/usr/bin/env bash
# What the active PostgreSQL sessions of one database wait on: samples pg_stat_activity every
# 100 ms for SECONDS seconds and counts `wait_event_type:wait_event` (CPU when none).
#
#   DB=rapport_wf_bench SECONDS_TO_SAMPLE=30 bench/pg_waits.sh   # during bench/workflows.sh's load phase
set -euo pipefail
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
DB="${DB:-rapport_wf_bench}"
end=$(( $(date +%s) + ${SECONDS_TO_SAMPLE:-30} ))
while [ "$(date +%s)" -lt "$end" ]; do
  psql "$PG_URL/postgres" -Atqc "SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-')
    FROM pg_stat_activity WHERE datname = '$DB' AND state = 'active' AND pid <> pg_backend_pid()"
  sleep 0.1
done | sort | uniq -c | sort -rn
