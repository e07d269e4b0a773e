#!/usr/bin/env bats
# wal-tail: refusals, snapshot, following with checkpoints, resume, idle,
# latency, and a short torture run (the long one: `make torture`).
load test_helper/common

setup() {
  cd "$T"
  python3 - <<'PY'
import sqlite3
c = sqlite3.connect("app.db")
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
c.executemany("INSERT INTO t(v) VALUES(randomblob(500))", [()] * 200)
c.commit()
PY
}

teardown() {
  [ -z "${TAIL_PID:-}" ] || kill "$TAIL_PID" 2>/dev/null || true
  [ -z "${HOLD_PID:-}" ] || kill "$HOLD_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}

sql() { python3 -c "import sqlite3,sys; c=sqlite3.connect('app.db', isolation_level=None); [c.execute(s).fetchall() for s in sys.argv[1:]]" "$@"; }

# Keep a connection open so the -wal file outlives each sql call.
hold_open() {
  python3 -c 'import sqlite3, time; c = sqlite3.connect("app.db"); c.execute("SELECT count(*) FROM sqlite_master").fetchall(); time.sleep(60)' &
  HOLD_PID=$!
  sleep 0.2
}

checkpoint_source() { sql "PRAGMA wal_checkpoint(TRUNCATE)"; }

# wait_for FILE SIZE: until FILE is at least SIZE bytes (60 s)
wait_for() {
  for _ in $(seq 3000); do
    [ -e "$1" ] && [ "$(stat -c %s "$1")" -ge "$2" ] && return 0
    sleep 0.02
  done
  echo "$1: never reached $2 bytes" >&2
  return 1
}

# wait_grep PATTERN FILE: until FILE has a line matching PATTERN (60 s)
wait_grep() {
  for _ in $(seq 3000); do
    grep -q -- "$1" "$2" 2>/dev/null && return 0
    sleep 0.02
  done
  echo "$2: no line matching '$1'" >&2
  return 1
}

# wait_quiet PID: until PID went a whole second without waking up (60 s):
# start-up work (resync, idle checkpoint) is done however slow the machine.
wakeups() { awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$1/status"; }
wait_quiet() {
  local a b
  for _ in $(seq 60); do
    a=$(wakeups "$1"); sleep 1; b=$(wakeups "$1")
    [ "$a" -eq "$b" ] && return 0
  done
  echo "pid $1 never went quiet" >&2
  return 1
}

@test "wal-tail --help and --version exit 0" {
  run wal-tail --help
  assert_success
  assert_output --partial "--snapshot"
  run wal-tail --version
  assert_success
}

@test "wal-tail: usage errors exit 2" {
  run wal-tail
  assert_failure 2
  run wal-tail --from nonsense app.db
  assert_failure 2
  assert_output --partial "wal-tail: --from"
}

@test "wal-tail refuses a file that is not SQLite (exit 3, nothing on stdout)" {
  head -c 8192 /dev/urandom > junk.db
  run bash -c 'wal-tail junk.db > out 2> err; echo $?'
  assert_output 3
  run cat err
  assert_output "wal-tail: junk.db: not a SQLite database"
  [ ! -s out ]
}

@test "wal-tail refuses a directory (exit 1, one line, nothing on stdout)" {
  mkdir dir.db
  run bash -c 'wal-tail dir.db > out 2> err; echo $?'
  assert_output 1
  run cat err
  assert_output "wal-tail: dir.db: is a directory"
  [ ! -s out ]
}

@test "wal-tail refuses a database not in WAL mode (exit 1)" {
  sqlite3 plain.db "CREATE TABLE x(y)"
  run bash -c 'wal-tail plain.db > out 2> err; echo $?'
  assert_output 1
  run cat err
  assert_output --partial "not in WAL mode"
  [ ! -s out ]
}

@test "wal-tail refuses a database in exclusive locking mode (exit 1)" {
  python3 -c '
import sqlite3, time
c = sqlite3.connect("app.db", isolation_level=None)
c.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
c.execute("INSERT INTO t(v) VALUES(1)")
open("held", "w").close()
time.sleep(30)' &
  HOLD_PID=$!
  wait_for held 0
  sleep 0.2
  run bash -c 'timeout 10 wal-tail --busy-timeout 200 app.db > out 2> err; echo $?'
  assert_output 1
  run cat err
  assert_output --partial "exclusive locking mode"
  [ ! -s out ]
}

@test "a page size change between runs is refused (exit 3): nothing emitted, the state unchanged" {
  mkfifo p
  ltx-encode -s st < p > first.ltx &
  wal-tail app.db > p &
  TAIL_PID=$!
  wait_grep '^txid 0000000000000001$' st/position
  kill "$TAIL_PID"; wait; TAIL_PID=
  cp st/position before
  # Only possible with no reader: leave WAL mode, change the page size, return.
  sqlite3 app.db "PRAGMA journal_mode=DELETE; PRAGMA page_size=8192; VACUUM; PRAGMA journal_mode=WAL;" >/dev/null
  [ "$(sqlite3 app.db 'PRAGMA page_size')" = 8192 ]
  run bash -c 'timeout -s TERM 60 wal-tail app.db | ltx-encode -s st > second.ltx'
  assert_failure 3
  assert_output "ltx-encode: page size changed from 4096 to 8192"
  [ ! -s second.ltx ]
  cmp before st/position
}

@test "wal-tail stops with exit 1 when the database file is replaced" {
  wal-tail app.db > out 2> err &
  TAIL_PID=$!
  wait_for out 1  # it has the file open
  cp app.db copy.db && mv copy.db app.db
  rc=0
  wait "$TAIL_PID" || rc=$?
  TAIL_PID=
  [ "$rc" -eq 1 ]
  run cat err
  assert_output "wal-tail: app.db: database file was replaced or removed"
}

@test "wal-tail --snapshot restores byte for byte without blocking writers" {
  sql "INSERT INTO t(v) VALUES(randomblob(9000))"   # frames not yet checkpointed
  run bash -c 'set -o pipefail; wal-tail --snapshot app.db | ltx-encode > snap.ltx'
  assert_success
  ltx-apply restored.db < snap.ltx
  checkpoint_source
  cmp app.db restored.db
  run sqlite3 restored.db "PRAGMA integrity_check"
  assert_output ok
}

@test "wal-tail follows commits across RESTART, TRUNCATE and VACUUM" {
  wal-tail app.db > stream 2> err &
  TAIL_PID=$!
  wait_for stream 1
  sql "INSERT INTO t(v) VALUES(randomblob(5000))" \
      "PRAGMA wal_checkpoint(RESTART)" \
      "UPDATE t SET v=randomblob(300) WHERE id % 3 = 0" \
      "PRAGMA wal_checkpoint(TRUNCATE)" \
      "DELETE FROM t WHERE id % 2 = 0" "VACUUM" \
      "INSERT INTO t(v) VALUES(randomblob(100))"
  kill "$TAIL_PID"; wait "$TAIL_PID"; TAIL_PID=  # stopping, it writes out every commit
  ltx-encode < stream > all.ltx
  ltx-apply restored.db < all.ltx
  checkpoint_source
  cmp app.db restored.db
}

@test "wal-tail keeps the WAL bounded under a writer that never pauses" {
  # A reader always present keeps SQLite from restarting the WAL; wal-tail
  # pauses writers for a moment to let it restart (without that: ~1 GB in 5 s).
  mkfifo p
  ltx-encode -s st < p > all.ltx &
  wal-tail -v app.db 2> err > p &
  TAIL_PID=$!
  wait_for all.ltx 100
  python3 - > walmax <<'PY'
import os, sqlite3, time
c = sqlite3.connect("app.db", isolation_level=None, timeout=10)
c.execute("PRAGMA synchronous=NORMAL")
end = time.time() + 3; n = 0; mx = 0
while time.time() < end:
    c.execute("INSERT INTO t(v) VALUES(randomblob(60))"); n += 1
    if n % 500 == 0: mx = max(mx, os.path.getsize("app.db-wal"))
print(n, mx)
PY
  read -r n walmax < walmax
  echo "# $n commits in 3 s; largest WAL $walmax bytes; $(grep -c 'WAL restarted' err) restarts" >&3
  kill "$TAIL_PID"; wait; TAIL_PID=
  # Bounded means restarted: at least one frame a commit was appended, and
  # the WAL never held half of them (on a quiet machine it stays under
  # 16 MB; a loaded one restarts less often, but restarts).
  [ "$walmax" -lt $((n * 4120 / 2)) ]
  ltx-apply restored.db < all.ltx
  checkpoint_source
  cmp app.db restored.db
}

@test "wal-tail --from resumes without a resync, and resyncs when the WAL moved on" {
  hold_open
  sql "PRAGMA wal_autocheckpoint=0" "INSERT INTO t(v) VALUES(randomblob(100))"
  pos=$(python3 -c '
import os, struct
b = open("app.db-wal", "rb").read(32)
print("%08x:%08x:%d" % (struct.unpack(">I", b[16:20])[0], struct.unpack(">I", b[20:24])[0], os.path.getsize("app.db-wal")))')
  wal-tail -v --from "$pos" app.db > out 2> err &
  TAIL_PID=$!
  wait_grep "resume at frame" err
  kill "$TAIL_PID"; wait "$TAIL_PID"; TAIL_PID=
  run cat err
  assert_output --partial "resume at frame"
  refute_output --partial "resync"
  [ "$(head -c 1 out)" = H ] && [ "$(stat -c %s out)" -lt 100 ]  # header + position only
  run bash -c 'wal-tail -v --from 00000001:00000002:32 --snapshot app.db'
  assert_failure 2
  wal-tail -v --from 00000001:00000002:32 app.db > out 2> err &
  TAIL_PID=$!
  wait_grep "resync" err
  kill "$TAIL_PID"; wait "$TAIL_PID"; TAIL_PID=
  run cat err
  assert_output --partial "resync"
}

@test "wal-tail is silent and uses no CPU while the database is idle" {
  wal-tail app.db > out &
  TAIL_PID=$!
  wait_for out 1
  wait_quiet "$TAIL_PID"  # initial resync and idle checkpoint done
  size=$(stat -c %s out)
  t0=$(awk '{print $14 + $15}' "/proc/$TAIL_PID/stat")
  sleep 4
  t1=$(awk '{print $14 + $15}' "/proc/$TAIL_PID/stat")
  [ "$(stat -c %s out)" -eq "$size" ]
  echo "# idle CPU over 4 s: $((t1 - t0)) ticks" >&3
  [ $((t1 - t0)) -le 1 ]
}

@test "wal-tail drops its inotify watch under a stream of commits, and sleeps again after it" {
  wal-tail app.db > out &
  TAIL_PID=$!
  wait_for out 1
  wait_quiet "$TAIL_PID"
  # The watch costs the writer an event per write(): /proc fdinfo lists it.
  # wal-tail drops it when a copy finds 8 frames or more; every commit here
  # writes 10 pages or more, so whichever copy finds a commit drops it, on
  # any disk and under any load. Bounds are generous: behaviour, not speed
  # (the writer's cost is measured by bench/tail).
  run python3 - "$TAIL_PID" <<'PY'
import os, sqlite3, sys, time
pid = sys.argv[1]
fd = next(f for f in os.listdir("/proc/%s/fd" % pid) if os.readlink("/proc/%s/fd/%s" % (pid, f)) == "anon_inode:inotify")
def watched():
    return "inotify wd:" in open("/proc/%s/fdinfo/%s" % (pid, fd)).read()
def wakeups():
    return next(int(l.split()[1]) for l in open("/proc/%s/status" % pid) if l.startswith("voluntary_ctxt_switches"))
before = watched()
c = sqlite3.connect("app.db", isolation_level=None)
c.execute("PRAGMA synchronous=OFF")
dropped, n, end = False, 0, time.time() + 60
while not dropped and time.time() < end:
    c.execute("BEGIN")
    for _ in range(10): c.execute("INSERT INTO t(v) VALUES(randomblob(3000))")
    c.execute("COMMIT"); n += 1
    dropped = not watched()
# quiet: the watch comes back, and wal-tail goes a whole second without waking
back = quiet = False
end = time.time() + 60
while not (back and quiet) and time.time() < end:
    back = watched()
    w0 = wakeups(); time.sleep(1); quiet = wakeups() == w0
size = os.path.getsize("out")
c.execute("INSERT INTO t(v) VALUES(randomblob(200))")
end = time.time() + 60
while os.path.getsize("out") == size and time.time() < end:
    time.sleep(0.001)
arrived = os.path.getsize("out") > size
print("watched before %s; dropped after %d commits %s; back %s, quiet %s; next commit out %s"
      % (before, n, dropped, back, quiet, arrived))
sys.exit(0 if before and dropped and back and quiet and arrived else 1)
PY
  echo "# $output" >&3
  assert_success
}

@test "wal-tail: every commit reaches stdout, one after another, and the stream restores the database" {
  # How soon (commit-to-stdout latency) is measured by bench/tail.
  wal-tail app.db > out &
  TAIL_PID=$!
  wait_for out 1
  run python3 - <<'PY'
import os, sqlite3, time
c = sqlite3.connect("app.db", isolation_level=None)
for i in range(200):
    size = os.path.getsize("out")
    c.execute("INSERT INTO t(v) VALUES(randomblob(200))")
    end = time.time() + 60
    while os.path.getsize("out") == size:
        if time.time() > end:
            raise SystemExit("commit %d never reached stdout" % i)
        time.sleep(0.0002)
    time.sleep(0.005)
PY
  assert_success
  kill "$TAIL_PID"; wait "$TAIL_PID"; TAIL_PID=
  ltx-encode < out > all.ltx
  ltx-apply restored.db < all.ltx
  checkpoint_source
  cmp app.db restored.db
}

@test "wal-tail torture (short): kill -9 and restart under random checkpoints" {
  run "$REPO_ROOT/tests/wal-tail-torture.sh" "$T/torture" 400 3
  echo "$output" | sed 's/^/# /' >&3
  assert_success
  assert_output --partial "restore identical"
  refute_output --partial "kills 0"
}
