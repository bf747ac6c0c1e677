#!/usr/bin/env python3
"""Times SQL statements on a Rapport SQLite database outside the server, with the SQLite the
server bundles: each statement on stdin (separated by `;` at a line end) runs RUNS times on one
read-only connection with the readers' mmap_size, after its query plan is printed.

  S=$(ls -d ~/.cargo/registry/src/*/libsqlite3-sys-0.30.1/sqlite3)
  gcc -O2 -shared -fPIC -DSQLITE_DEFAULT_MEMSTATUS=0 -DSQLITE_MAX_MMAP_SIZE=0x10000000000 \
      -DSQLITE_ENABLE_STAT4 $S/sqlite3.c -o /tmp/sq/libsqlite3.so.0 -lpthread -ldl -lm
  LD_LIBRARY_PATH=/tmp/sq python3 bench/sqlite_statements.py <database> <<'SQL'
  SELECT COUNT(*) FROM records INDEXED BY rx_2_stage WHERE tenant_id = '…' AND entity_id = 2 AND deleted_at IS NULL;
  SQL
"""
import os
import sqlite3
import sys
import time

RUNS = int(os.environ.get("RUNS", "4"))
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
db.execute("PRAGMA mmap_size=68719476736")
db.execute("PRAGMA temp_store=memory")
print("SQLite", sqlite3.sqlite_version)
for sql in sys.stdin.read().split(";\n"):
    sql = sql.strip().rstrip(";")
    if not sql:
        continue
    print(sql[:160])
    for row in db.execute("EXPLAIN QUERY PLAN " + sql):
        print("  plan:", row[3])
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        rows = db.execute(sql).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    print("  ms:", " ".join(f"{t:.1f}" for t in times), "| first rows:", rows[:4])
