#!/usr/bin/env bats
# walsync watch -- CMD: the application as a child (exec mode). The first
# boot (no database, no replica), restore before the application starts,
# its exit status, signals forwarded, no orphan after kill -9, and the
# application stopped when the backup fails for good.
load test_helper/common
load test_helper/s3
load test_helper/watch
bats_require_minimum_version 1.5.0

# The application: app.py DB N STATUS. Writes its pid to $T/app.pid and the
# rows it found to $T/seen, commits N rows (one transaction each), then
# exits STATUS; with WAIT=1 it first waits for SIGTERM, commits one more
# row ('bye') and exits STATUS. With IGNORE_TERM=1 it ignores SIGTERM.
setup() {
  cat > "$T/app.py" <<'PY'
import os, signal, sqlite3, sys
db, n, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
T = os.environ["T"]
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
with open(T + "/seen.tmp", "w") as f:
    f.write("%d\n" % c.execute("SELECT count(*) FROM t").fetchone()[0])
os.rename(T + "/seen.tmp", T + "/seen")
for i in range(n):
    c.execute("INSERT INTO t(v) VALUES(?)", ("row %d" % i,))
def bye(*_):
    c.execute("INSERT INTO t(v) VALUES('bye')")
    sys.exit(status)
if os.environ.get("IGNORE_TERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif os.environ.get("WAIT") == "1":
    signal.signal(signal.SIGTERM, bye)
with open(T + "/app.pid.tmp", "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(T + "/app.pid.tmp", T + "/app.pid")
if os.environ.get("WAIT") == "1" or os.environ.get("IGNORE_TERM") == "1":
    while True:
        signal.pause()
sys.exit(status)
PY
  export T
}

# wait_file FILE: until FILE exists (60 s).
wait_file() {
  local i
  for i in $(seq 1 600); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "$1: never written" >&2
  return 1
}

# gone PID: until PID has exited (20 s).
gone() {
  local i
  for i in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  echo "process $1 is still alive" >&2
  return 1
}

rows() { sqlite3 "$1" 'SELECT count(*) FROM t'; }

@test "exec: first boot (no database, no replica): the app writes N rows and exits 7; walsync exits 7; the replica has the N rows" {
  cd "$T"
  run walsync watch app.db -b "file://$T/rep" -- python3 "$T/app.py" app.db 120 7
  [ "$status" -eq 7 ] || { echo "$output" >&2; return 1; }
  assert_output --partial "app: no database and no replica at file://$T/rep/app: starting empty"
  assert_output --partial "python3 exited with status 7"
  assert_output --partial "app: drained at TXID"
  [ "$(cat seen)" = 0 ]
  walsync restore app -b "file://$T/rep" -o restored.db
  [ "$(rows restored.db)" = 120 ]
  same app.db restored.db
}

@test "exec: a database missing locally is restored before the app starts; the app sees its rows" {
  cd "$T"
  walsync watch app.db -b "file://$T/rep" -- python3 "$T/app.py" app.db 50 0
  rm -rf app.db app.db-wal app.db-shm app.db-walsync seen
  run walsync watch app.db -b "file://$T/rep" -- python3 "$T/app.py" app.db 30 0
  [ "$status" -eq 0 ] || { echo "$output" >&2; return 1; }
  assert_output --partial "app: no database: restoring it from file://$T/rep/app"
  [ "$(cat seen)" = 50 ]
  walsync restore app -b "file://$T/rep" -o restored.db
  [ "$(rows restored.db)" = 80 ]
  same app.db restored.db
}

@test "exec: the S3 replica: restore if missing, run, drain" {
  require_s3
  cd "$T"
  local url; url=$(s3_url base)
  walsync watch app.db -b "$url" -- python3 "$T/app.py" app.db 40 0
  rm -rf app.db app.db-wal app.db-shm app.db-walsync seen
  run walsync watch app.db -b "$url" -- python3 "$T/app.py" app.db 10 3
  [ "$status" -eq 3 ] || { echo "$output" >&2; return 1; }
  [ "$(cat seen)" = 40 ]
  walsync restore app -b "$url" -o restored.db
  [ "$(rows restored.db)" = 50 ]
}

@test "exec: SIGTERM to walsync reaches the app; its last transaction is in the replica and its status is walsync's" {
  cd "$T"
  mkdb app.db
  WAIT=1 walsync watch app.db -b "file://$T/rep" -- python3 "$T/app.py" app.db 20 42 2>watch.log &
  local pid=$!
  wait_file app.pid
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  [ "$rc" -eq 42 ] || { cat watch.log >&2; return 1; }
  grep -q "SIGTERM: forwarded to python3" watch.log
  walsync restore app -b "file://$T/rep" -o restored.db
  [ "$(rows restored.db)" = 21 ]
  [ "$(sqlite3 restored.db 'SELECT v FROM t ORDER BY id DESC LIMIT 1')" = bye ]
}

@test "exec: an app killed by the forwarded signal: walsync exits 128+N (SIGINT, SIGHUP)" {
  cd "$T"
  mkdb app.db
  local sig want
  for sig in INT HUP; do
    rm -f app.pid
    walsync watch app.db -b "file://$T/rep" -- sh -c 'echo $$ > "$T/app.pid.tmp"; mv "$T/app.pid.tmp" "$T/app.pid"; exec sleep 300' 2>watch.log &
    local pid=$!
    wait_file app.pid
    kill -"$sig" "$pid"
    local rc=0
    wait "$pid" || rc=$?
    want=$((128 + $(kill -l "$sig")))
    [ "$rc" -eq "$want" ] || { echo "SIG$sig: $rc, not $want" >&2; cat watch.log >&2; return 1; }
    grep -q "killed by" watch.log
  done
}

@test "exec: kill -9 of walsync leaves no app behind" {
  cd "$T"
  mkdb app.db
  IGNORE_TERM=1 walsync watch app.db -b "file://$T/rep" -- python3 "$T/app.py" app.db 5 0 2>watch.log &
  local pid=$!
  wait_file app.pid
  local child; child=$(cat app.pid)
  kill -0 "$child"
  kill -KILL "$pid"
  wait "$pid" || true
  gone "$child"
}

@test "exec: a backup that fails for good stops the app (SIGTERM, then SIGKILL after the grace) and exits 1" {
  cd "$T"
  sqlite3 app.db 'CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)'  # rollback journal: cannot be backed up
  IGNORE_TERM=1 run walsync watch app.db -b "file://$T/rep" --drain-timeout 1s -- python3 "$T/app.py" app.db 5 0
  [ "$status" -eq 1 ] || { echo "$output" >&2; return 1; }
  assert_output --partial "not in WAL mode"
  assert_output --partial "stopping python3 (SIGTERM, SIGKILL after 1000 ms)"
  assert_output --partial "python3 killed by"
  assert_output --partial "backup failed: exit status 1, not python3's"
  gone "$(cat app.pid)"
}

@test "exec: a command that cannot be run is status 127; -- without a command is a usage error" {
  cd "$T"
  mkdb app.db
  run -127 walsync watch app.db -b "file://$T/rep" -- "$T/no-such-app"
  assert_output --partial "walsync: exec $T/no-such-app: No such file or directory"
  run walsync watch app.db -b "file://$T/rep" --
  [ "$status" -eq 2 ]
  assert_output "walsync: watch: -- needs a command (walsync watch DB... -- CMD [ARGS])"
}

@test "exec: exec = in the configuration file (quoted words); -- CMD on the command line wins" {
  cd "$T"
  cat > w.conf <<EOF
url = file://$T/rep
exec = python3 '$T/app.py' app.db 7 5
[$T/app.db]
EOF
  run walsync watch -c w.conf
  [ "$status" -eq 5 ] || { echo "$output" >&2; return 1; }
  [ "$(rows app.db)" = 7 ]
  run walsync watch -c w.conf -- python3 "$T/app.py" app.db 3 6
  [ "$status" -eq 6 ]
  [ "$(rows app.db)" = 10 ]
  walsync restore app -b "file://$T/rep" -o restored.db
  same app.db restored.db
  printf 'exec = app "unbalanced\n' > bad.conf
  run walsync watch -c bad.conf app.db -b "file://$T/rep"
  [ "$status" -eq 2 ]
  assert_output "walsync: bad.conf:1: unbalanced quotes: app \"unbalanced"
}

@test "examples/container/entrypoint.sh: first boot, then a boot on an empty volume restores; the app's status" {
  cd "$T"
  export WALSYNC_DB=$T/data/app.db WALSYNC_URL=file://$T/rep WALSYNC_METRICS_ADDR=127.0.0.1:0
  mkdir data
  run "$REPO_ROOT/examples/container/entrypoint.sh" python3 "$T/app.py" "$T/data/app.db" 25 0
  [ "$status" -eq 0 ] || { echo "$output" >&2; return 1; }
  rm -rf data && mkdir data
  run "$REPO_ROOT/examples/container/entrypoint.sh" python3 "$T/app.py" "$T/data/app.db" 5 4
  [ "$status" -eq 4 ] || { echo "$output" >&2; return 1; }
  [ "$(cat seen)" = 25 ]
  walsync restore app -b "file://$T/rep" -o restored.db
  [ "$(rows restored.db)" = 30 ]
}
