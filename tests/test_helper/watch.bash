# Helpers of the walsync watch tests (walsync.bats, state.bats,
# tenants.bats, metrics.bats, fence.bats): `load test_helper/watch` after
# test_helper/common.

# mkdb DB: an empty WAL-mode database with table t.
mkdb() {
  sqlite3 "$1" >/dev/null <<'SQL'
PRAGMA journal_mode=WAL;
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
SQL
}

# writer DB N DELAY [FIRST]: N small transactions, DELAY seconds apart;
# every tenth also updates rows across the table, unless WRITER_APPEND=1
# (appends alone: a transaction touches few pages).
writer() {
  WRITER_APPEND=${WRITER_APPEND:-0} python3 - "$@" <<'PY'
import os, sqlite3, sys, time
db, n, d = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
append = os.environ["WRITER_APPEND"] == "1"
c = sqlite3.connect(db, timeout=30, isolation_level=None)
for i in range(first, first + n):
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO t(v) VALUES(?)", ("row %d %s" % (i, "x" * (i * 37 % 900)),))
    if i % 10 == 0 and not append:
        c.execute("UPDATE t SET v = v || '!' WHERE id % 7 = ?", (i % 7,))
    c.execute("COMMIT")
    time.sleep(d)
PY
}

# same DB RESTORED: equal content and a clean integrity check.
same() {
  [ "$(sqlite3 "$2" 'PRAGMA integrity_check')" = ok ] || { echo "$2: integrity" >&2; return 1; }
  local a b
  a=$(sqlite3 "$1" .sha3sum) b=$(sqlite3 "$2" .sha3sum)
  [ "$a" = "$b" ] || { echo "$1 vs $2: $a != $b" >&2; return 1; }
}

# stop_watch PID [MAXSEC]: SIGTERM, then require exit 0 within MAXSEC (10).
stop_watch() {
  local pid=$1 max=${2:-10} i
  kill -TERM "$pid"
  for i in $(seq 1 $((max * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "walsync watch did not exit within $max s" >&2
    kill -KILL "$pid"
    return 1
  fi
  wait "$pid"
}

# wait_count N PATTERN FILE: until FILE has N lines matching PATTERN (60 s).
wait_count() {
  local i
  for i in $(seq 1 600); do
    [ "$(grep -c -- "$2" "$3" 2>/dev/null)" -ge "$1" ] && return 0
    sleep 0.1
  done
  echo "$3: fewer than $1 lines matching '$2'" >&2
  cat "$3" >&2
  return 1
}

# wait_log PATTERN FILE: until FILE has a line matching PATTERN (60 s).
wait_log() { wait_count 1 "$@"; }

# caught_up BASE NAME DB: until a restore of replica NAME under BASE equals
# DB (60 s): whatever the machine's load, the watch has stored every commit
# (transactions that arrive together may share a TXID, so a position alone
# does not say so).
caught_up() {
  local i
  for i in $(seq 1 300); do
    rm -f "$T/probe.db"
    walsync restore "$2" -b "$1" -o "$T/probe.db" 2>/dev/null &&
      [ "$(sqlite3 "$T/probe.db" .sha3sum)" = "$(sqlite3 "$3" .sha3sum)" ] && return 0
    sleep 0.2
  done
  echo "$2: the replica never caught up with $3" >&2
  return 1
}

# teardown: nothing outlives a failed test (a stopped job is woken to die).
teardown() {
  local j
  for j in $(jobs -p); do kill -CONT "$j" 2>/dev/null; kill "$j" 2>/dev/null; done
  true
}
