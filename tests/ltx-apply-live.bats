#!/usr/bin/env bats
# ltx-apply --live: atomic steps for concurrent readers, kill -9, refusals.
# LIVE_SOAK=1 (make live-soak) runs the reader test for minutes.

load test_helper/common

setup() {
  V="$WALSYNC_VECTORS/ltx"
  C="$V/chain"
  TOOLS="$BATS_TEST_DIRNAME/tools"
}

teardown() {
  for p in ${KILL_PIDS:-}; do kill "$p" 2>/dev/null || true; done
}

state_of() { echo "$(sha "$1") $(sha "$1-ltx/state")"; }

@test "live: the golden chain gives the plain apply's content, rollback-journal page 1" {
  cat "$C"/*.ltx | ltx-apply --live "$T/r.db"
  ltx-apply "$T/plain.db" "$C"/*.ltx
  [ "$(sqlite3 "$T/r.db" .sha3sum)" = "$(sqlite3 "$T/plain.db" .sha3sum)" ]
  [ "$(sqlite3 "$T/r.db" 'PRAGMA integrity_check')" = ok ]
  [ "$(od -An -tu1 -j18 -N2 "$T/r.db" | tr -s ' ')" = " 1 1" ]
  [ "$(sqlite3 "$T/r.db" 'PRAGMA journal_mode')" = delete ]
  run ltx-apply --position "$T/r.db"
  assert_success
  assert_output 0000000000000004
  [ ! -e "$T/r.db-journal" ]
}

@test "live: files at or below the position are skipped; a restart continues" {
  ltx-apply --live "$T/r.db" "$C/0000000000000001-0000000000000001.ltx"
  ltx-apply --live "$T/r.db" "$C/0000000000000002-0000000000000002.ltx"
  run bash -c "cat '$C'/*.ltx | ltx-apply -v --live '$T/r.db'"
  assert_success
  assert_output --partial "skipped 0000000000000002-0000000000000002.ltx"
  assert_output --partial "applied 0000000000000004-0000000000000004.ltx, txid 0000000000000004"
  ltx-apply "$T/plain.db" "$C"/*.ltx
  [ "$(sqlite3 "$T/r.db" .sha3sum)" = "$(sqlite3 "$T/plain.db" .sha3sum)" ]
}

@test "live: a newer snapshot replaces an existing replica" {
  cat "$C"/*.ltx | ltx-apply --live "$T/r.db"
  sqlite3 "$T/n.db" 'PRAGMA page_size=1024; CREATE TABLE other(x); INSERT INTO other VALUES (42);'
  ltx-encode --db "$T/n.db" --txid 0000000000000009 > "$T/snap.ltx"
  ltx-apply --live "$T/r.db" "$T/snap.ltx"
  [ "$(sqlite3 "$T/r.db" .sha3sum)" = "$(sqlite3 "$T/n.db" .sha3sum)" ]
  [ "$(sqlite3 "$T/r.db" 'PRAGMA integrity_check')" = ok ]
  [ "$(ltx-apply --position "$T/r.db")" = 0000000000000009 ]
}

@test "live: a reader holding the replica past --busy-timeout fails the apply (exit 1), unchanged" {
  ltx-apply --live "$T/r.db" "$C/0000000000000001-0000000000000001.ltx"
  before=$(state_of "$T/r.db")
  python3 -c "
import sqlite3, time
c = sqlite3.connect('$T/r.db', isolation_level=None)
c.execute('BEGIN'); c.execute('SELECT count(*) FROM sqlite_master').fetchall()
open('$T/holding', 'w').close(); time.sleep(60)" & holder=$!
  KILL_PIDS="$holder"
  for _ in $(seq 1 600); do [ -e "$T/holding" ] && break; sleep 0.1; done
  run ltx-apply --live --busy-timeout 300 "$T/r.db" "$C/0000000000000002-0000000000000002.ltx"
  assert_failure 1
  assert_output --partial "database is locked"
  kill "$holder"; wait "$holder" || true
  [ "$(state_of "$T/r.db")" = "$before" ]
  ltx-apply --live "$T/r.db" "$C/0000000000000002-0000000000000002.ltx"
}

@test "live: --position of a database without a recorded position is zero" {
  run ltx-apply --position "$T/none.db"
  assert_success
  assert_output 0000000000000000
  run ltx-apply --position --live "$T/none.db"
  assert_failure 2
}

@test "live: a TXID gap is refused (exit 3) and the replica is unchanged" {
  ltx-apply --live "$T/r.db" "$C/0000000000000001-0000000000000001.ltx"
  before=$(state_of "$T/r.db")
  run ltx-apply --live "$T/r.db" "$C/0000000000000003-0000000000000003.ltx"
  assert_failure 3
  assert_output --partial "TXID gap: replica is at 0000000000000001, file starts at 0000000000000003"
  [ "$(state_of "$T/r.db")" = "$before" ]
  [ ! -e "$T/r.db-journal" ]
}

@test "live: a pre-apply checksum mismatch is refused and the replica is unchanged" {
  ltx-apply --live "$T/r.db" "$V/snap_freelist.ltx"
  before=$(state_of "$T/r.db")
  run ltx-apply --live "$T/r.db" "$C/0000000000000002-0000000000000002.ltx"
  assert_failure 3
  assert_output --partial "pre-apply checksum mismatch"
  [ "$(state_of "$T/r.db")" = "$before" ]
  [ ! -e "$T/r.db-journal" ]
}

@test "live: a corrupt or truncated file is refused and the replica is unchanged" {
  ltx-apply --live "$T/r.db" "$C/0000000000000001-0000000000000001.ltx"
  before=$(state_of "$T/r.db")
  cp "$C/0000000000000002-0000000000000002.ltx" "$T/bad.ltx"
  printf '\377' | dd of="$T/bad.ltx" bs=1 seek=300 conv=notrunc 2>/dev/null
  run ltx-apply --live "$T/r.db" "$T/bad.ltx"
  assert_failure 3
  head -c 500 "$C/0000000000000002-0000000000000002.ltx" > "$T/cut.ltx"
  run ltx-apply --live "$T/r.db" "$T/cut.ltx"
  assert_failure 3
  assert_output --partial "unexpected EOF"
  [ "$(state_of "$T/r.db")" = "$before" ]
}

@test "live: shrink truncates; a replica changed behind its back is refused" {
  ltx-apply --live "$T/r.db" "$V/snap_freelist.ltx"
  ltx-apply --live "$T/r.db" "$V/delta_shrink.ltx"
  [ "$(stat -c %s "$T/r.db")" -eq $((102 * 1024)) ]
  [ "$(sqlite3 "$T/r.db" 'PRAGMA integrity_check')" = ok ]
  sqlite3 "$T/r.db" 'CREATE TABLE intruder(x)'
  run ltx-apply --live "$T/r.db" "$V/delta_shrink.ltx"
  assert_failure 3
  assert_output --partial "changed outside ltx-apply --live"
}

@test "live: a WAL-mode database without a position is refused" {
  sqlite3 "$T/w.db" 'PRAGMA journal_mode=WAL; CREATE TABLE t(x);' >/dev/null
  run ltx-apply --live "$T/w.db" "$C/0000000000000001-0000000000000001.ltx"
  assert_failure 1
  assert_output --partial "WAL mode"
}

# Primary P written by live-writer.py; stream captured with the real tools.
make_stream() {  # NTXNS
  python3 "$TOOLS/live-writer.py" "$T/P.db" 0
  mkfifo "$T/wal.fifo"
  wal-tail "$T/P.db" > "$T/wal.fifo" & local wt=$!
  ltx-encode --state "$T/S" < "$T/wal.fifo" > "$T/stream.ltx" & local enc=$!
  python3 "$TOOLS/live-writer.py" "$T/P.db" "$1"
  for _ in $(seq 1 300); do  # until the stream holds the last commit
    ltx-apply --live "$T/probe.db" < "$T/stream.ltx" 2>/dev/null || true
    [ "$(sqlite3 "$T/probe.db" 'SELECT n FROM counter' 2>/dev/null)" = "$1" ] && break
    sleep 0.2
  done
  sleep 0.3
  kill "$wt"; wait "$wt" || true
  wait "$enc"
  ltx-apply -v "$T/check.db" < "$T/stream.ltx" 2> "$T/check.log"
  [ "$(sqlite3 "$T/check.db" .sha3sum)" = "$(sqlite3 "$T/P.db" .sha3sum)" ]
}

consistent() {  # DB: the counter equals the log table
  python3 - "$1" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
names = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
if "counter" in names:
    n = c.execute("SELECT n FROM counter").fetchone()[0]
    cnt, mx = c.execute("SELECT count(*), coalesce(max(n), 0) FROM log").fetchone()
    assert cnt == n and mx == n, (n, cnt, mx)
assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
PY
}

@test "live: kill -9 mid-apply leaves a replica readers open cleanly; a restart converges" {
  make_stream 1500
  rp=""
  for r in 1 2; do  # readers roll back the hot journals the kills leave
    python3 "$TOOLS/live-reader.py" "$T/R.db" 1500 "$T/stop" > "$T/reader$r.out" & rp="$rp $!"
  done
  KILL_PIDS="$rp"
  for i in 1 2 3 4 5 6 7 8 9 10; do
    ltx-apply --live "$T/R.db" < "$T/stream.ltx" & pid=$!
    if [ $((i % 2)) -eq 0 ]; then
      # kill while a hot journal exists (pages may be half written)
      for _ in $(seq 1 20000); do [ -e "$T/R.db-journal" ] && break; done
    else
      sleep "0.$((RANDOM % 5))$((RANDOM % 10))"
    fi
    kill -9 "$pid" 2>/dev/null || true  # it may already have finished the stream
    wait "$pid" || true
    [ -e "$T/R.db" ] || continue
    consistent "$T/R.db"
  done
  ltx-apply --live "$T/R.db" < "$T/stream.ltx"
  touch "$T/stop"
  for p in $rp; do wait "$p"; done
  cat "$T"/reader*.out >&3
  [ "$(sqlite3 "$T/R.db" .sha3sum)" = "$(sqlite3 "$T/P.db" .sha3sum)" ]
  [ "$(sqlite3 "$T/R.db" 'PRAGMA integrity_check')" = ok ]
  grep -q "txid $(ltx-apply --position "$T/R.db")," "$T/check.log"
  [ ! -e "$T/R.db-journal" ]
}

@test "live: 4 readers see only committed states while a busy primary is followed" {
  ntx=${LIVE_NTXNS:-2000}; rate=${LIVE_RATE:-100}
  [ -n "${LIVE_SOAK:-}" ] && { ntx=${LIVE_NTXNS:-30000}; rate=${LIVE_RATE:-150}; }
  python3 "$TOOLS/live-writer.py" "$T/P.db" 0
  mkfifo "$T/wal.fifo"
  wal-tail "$T/P.db" > "$T/wal.fifo" & wt=$!
  KILL_PIDS="$wt"
  (ltx-encode --state "$T/S" < "$T/wal.fifo" | ltx-apply -v --live "$T/R.db" 2> "$T/apply.log") & ap=$!
  for _ in $(seq 1 100); do [ "$(ltx-apply --position "$T/R.db")" != 0000000000000000 ] && break; sleep 0.1; done
  rp=""
  for r in 1 2 3 4; do
    python3 "$TOOLS/live-reader.py" "$T/R.db" "$ntx" "$T/stop" > "$T/reader$r.out" & rp="$rp $!"
  done
  python3 "$TOOLS/live-writer.py" "$T/P.db" "$ntx" "$rate"
  want=$(sqlite3 "$T/P.db" .sha3sum)
  for _ in $(seq 1 600); do
    [ "$(sqlite3 "$T/R.db" 'SELECT n FROM counter' 2>/dev/null)" = "$ntx" ] && break
    sleep 0.1
  done
  touch "$T/stop"
  fail=0
  for p in $rp; do wait "$p" || fail=1; done
  kill "$wt"; wait "$wt" || true
  wait "$ap" || true
  cat "$T"/reader*.out >&3 2>/dev/null || true
  awk '/locked/ {print $(NF-1)}' "$T/apply.log" | sort -n | awk '{a[NR]=$1} END {if (NR) printf "# %d files applied, lock ms p50 %s p99 %s max %s\n", NR, a[int(NR*0.5)+1], a[int(NR*0.99)+1], a[NR]}' >&3
  [ "$fail" -eq 0 ]
  [ "$(sqlite3 "$T/R.db" .sha3sum)" = "$want" ]
  [ "$(sqlite3 "$T/R.db" 'PRAGMA integrity_check')" = ok ]
}
