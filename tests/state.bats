#!/usr/bin/env bats
# Local state is checked, never trusted: walsync watch with a writer while
# the page state is truncated or the state directory deleted, then every
# TXID of the replica must restore; one watcher per database; s3-verify
# proves what it calls restorable by replaying the chain.
load test_helper/common
load test_helper/watch

# latest REPDIR: the highest MaxTXID of the level-0 files (hex).
latest() { ls "$1/ltx/0" | sed 's/.*-\(.*\)\.ltx/\1/' | sort | tail -1; }

# restores_to DB URL: wait (up to 90 s: a busy machine) until the replica restores to DB.
restores_to() {
  local i
  for i in $(seq 1 180); do
    rm -f "$T/cu.db"
    if s3-get "$2" 2>/dev/null | ltx-apply "$T/cu.db" 2>/dev/null &&
      [ "$(sqlite3 "$1" .sha3sum)" = "$(sqlite3 "$T/cu.db" .sha3sum)" ]; then
      return 0
    fi
    sleep 0.5
  done
  echo "the replica did not catch up with $1" >&2
  return 1
}

# every_txid_restores URL REPDIR: each TXID a level-0 file ends at restores
# (every post-apply checksum checked by ltx-apply) to a sound database. A
# group commit shares a file between transactions: the TXIDs inside it are
# not restore points.
every_txid_restores() {
  local n i
  n=$(ls "$2/ltx/0" | wc -l)
  for i in $(ls "$2/ltx/0" | sed -n 's/^[0-9a-f]\{16\}-\([0-9a-f]\{16\}\)\.ltx$/\1/p' | sort -u); do
    i=$((16#$i))
    rm -f "$T/at.db"
    s3-get --txid "$(printf %x "$i")" "$1" | ltx-apply "$T/at.db" ||
      { echo "TXID $i of $n does not restore" >&2; return 1; }
    [ "$(sqlite3 "$T/at.db" 'PRAGMA integrity_check')" = ok ] || { echo "TXID $i: integrity" >&2; return 1; }
  done
}

@test "state: pages truncated under a running watch: detected, rebuilt, every TXID restores" {
  cd "$T"
  mkdb app.db
  writer app.db 5 0
  walsync watch app.db -b "file://$T/rep" 2>w.log &
  local pid=$!
  writer app.db 30 0.01 100
  restores_to app.db "file://$T/rep/app"
  : > app.db-walsync/pages
  writer app.db 30 0.01 200
  restores_to app.db "file://$T/rep/app"
  writer app.db 10 0.01 300
  restores_to app.db "file://$T/rep/app"
  stop_watch "$pid"
  cat w.log >&2
  grep -q "app: damaged state: .*rebuilding it from the database and the replica" w.log
  every_txid_restores "file://$T/rep/app" rep/app
  run s3-verify "file://$T/rep/app"
  assert_success
  assert_line --regexp "^defects	0	"
}

@test "state: page checksums damaged while the watch is down: the next watch rebuilds them" {
  cd "$T"
  mkdb app.db
  writer app.db 20 0
  walsync watch app.db -b "file://$T/rep" 2>w1.log &
  local pid=$!
  writer app.db 10 0.01 100
  restores_to app.db "file://$T/rep/app"
  stop_watch "$pid"
  # one flipped byte in the middle of the pages file: no length check sees it
  python3 - app.db-walsync/pages <<'PY'
import sys
f = open(sys.argv[1], "r+b"); f.seek(8 * 2 + 3); b = f.read(1); f.seek(8 * 2 + 3); f.write(bytes([b[0] ^ 0x10]))
PY
  writer app.db 10 0.01 200
  walsync watch app.db -b "file://$T/rep" 2>w2.log &
  pid=$!
  writer app.db 10 0.01 300
  restores_to app.db "file://$T/rep/app"
  stop_watch "$pid"
  cat w2.log >&2
  grep -q "app: damaged state: the page checksums of app.db-walsync/pages fold to [0-9a-f]\{16\}, not to the checksum" w2.log
  every_txid_restores "file://$T/rep/app" rep/app
}

@test "state: the state directory deleted under a running watch, and before a restart: recovered both times" {
  cd "$T"
  mkdb app.db
  writer app.db 5 0
  walsync watch app.db -b "file://$T/rep" 2>w1.log &
  local pid=$!
  writer app.db 20 0.01 100
  restores_to app.db "file://$T/rep/app"
  rm -rf app.db-walsync
  writer app.db 20 0.01 200
  restores_to app.db "file://$T/rep/app"
  stop_watch "$pid"
  ! grep -q "belongs to another replica" w1.log
  rm -rf app.db-walsync
  writer app.db 10 0.01 300
  walsync watch app.db -b "file://$T/rep" 2>w2.log &
  pid=$!
  writer app.db 10 0.01 400
  restores_to app.db "file://$T/rep/app"
  stop_watch "$pid"
  cat w1.log w2.log >&2
  grep -q "app: started at TXID [0-9a-f]\{16\}, no local state: full resync" w2.log
  ! grep -q "belongs to another replica" w2.log
  # one snapshot: the chain continued with every-page files, never restarted
  [ "$(ls rep/app/ltx/0 | grep -c '^0000000000000001-')" = 1 ]
  every_txid_restores "file://$T/rep/app" rep/app
  run s3-verify "file://$T/rep/app"
  assert_success
}

@test "state: the state directory deleted while the database did not change: the watch joins without a file" {
  cd "$T"
  mkdb app.db
  writer app.db 10 0
  walsync watch app.db -b "file://$T/rep" 2>w1.log &
  local pid=$!
  restores_to app.db "file://$T/rep/app"
  stop_watch "$pid"
  local before; before=$(latest rep/app)
  rm -rf app.db-walsync
  walsync watch app.db -b "file://$T/rep" 2>w2.log &
  pid=$!
  sleep 1
  writer app.db 5 0.01 100
  restores_to app.db "file://$T/rep/app"
  stop_watch "$pid"
  # the next file continues at the next TXID, as a delta
  [ -f "rep/app/ltx/0/$(printf %016x $((16#$before + 1)))-$(printf %016x $((16#$before + 1))).ltx" ]
  every_txid_restores "file://$T/rep/app" rep/app
}

@test "state: one watcher per database: a second watch, wal-tail --ack and ltx-encode --state refuse (exit 1)" {
  cd "$T"
  mkdb app.db
  writer app.db 5 0
  walsync watch app.db -b "file://$T/rep" 2>w1.log &
  local pid=$!
  writer app.db 20 0.01 100 &
  local wp=$!
  sleep 0.5
  run walsync watch app.db -b "file://$T/rep"
  [ "$status" -eq 1 ]
  assert_output "walsync: app.db-walsync/lock: in use by pid $pid (one walsync watch, wal-tail --ack or ltx-encode --state at a time)"
  run bash -c "ltx-encode --state app.db-walsync < /dev/null > /dev/null"
  [ "$status" -eq 1 ]
  assert_output "ltx-encode: app.db-walsync/lock: in use by pid $pid (one walsync watch, wal-tail --ack or ltx-encode --state at a time)"
  run bash -c "wal-tail --ack app.db-walsync/ack app.db > /dev/null"
  [ "$status" -eq 1 ]
  assert_output "wal-tail: app.db-walsync/ack.lock: in use by pid $pid (one walsync watch, wal-tail --ack or ltx-encode --state at a time)"
  wait "$wp"
  writer app.db 20 0.01 200
  restores_to app.db "file://$T/rep/app"
  stop_watch "$pid"
  every_txid_restores "file://$T/rep/app" rep/app
  # released with the process
  walsync watch app.db -b "file://$T/rep" 2>w2.log &
  pid=$!
  sleep 0.5
  stop_watch "$pid"
}

@test "s3-verify: checksums that agree with each other but not with the pages: replayed, named, not called restorable" {
  cd "$T"
  # a snapshot and one delta, the delta encoded on page checksums that were
  # permuted: their fold (what the state checks on open) still holds, so
  # the delta's post-apply checksum is wrong, and its chain consistent
  python3 - <<'PY'
import shutil, sqlite3
a = sqlite3.connect("a.db", isolation_level=None)
a.execute("pragma journal_mode=wal")
a.execute("pragma wal_autocheckpoint=0")
a.execute("create table t(id integer primary key, b blob)")
for i in range(12):
    a.execute("insert into t(b) values (randomblob(1500))")
a.execute("pragma wal_checkpoint(truncate)")
shutil.copy("a.db", "snap.db")
a.execute("update t set b = randomblob(1500) where id in (3, 9)")
shutil.copy("a.db-wal", "w1.wal")
PY
  ltx-encode --state st --db snap.db > 1.ltx
  python3 - st/pages <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
e = [b[i:i + 8] for i in range(0, len(b), 8)]
open(sys.argv[1], "wb").write(b"".join(e[1:] + e[:1]))
PY
  for j in st/journal.*; do : > "$j"; done  # or their replay would repair the pages
  ltx-encode --state st < w1.wal > 2.ltx
  local url="file://$T/rep"
  cat 1.ltx 2.ltx | s3-put "$url"
  # what the checksums claim: both restorable (all s3-verify said before)
  run s3-verify --shallow "$url"
  assert_success
  assert_line "$(printf 'restorable\t%016x-%016x\t2 TXIDs' 1 2)"
  assert_line "$(printf "proof\tclaimed by the files' checksums (--shallow)")"
  # proven: the replay applies the delta and finds the lie
  run s3-verify "$url"
  [ "$status" -eq 3 ]
  assert_line --regexp "^s3-verify: $url: replay: 0/$(printf %016x 2)-$(printf %016x 2)\\.ltx: post-apply checksum mismatch: database [0-9a-f]{16}, file [0-9a-f]{16}$"
  assert_line "$(printf 'restorable\t%016x-%016x\t1 TXIDs' 1 1)"
  assert_line "$(printf 'proof\treplayed')"
  run bash -c "s3-get --txid 2 '$url' | ltx-apply r.db"
  [ "$status" -eq 3 ]
  # no temporary database left behind
  [ -z "$(ls "${TMPDIR:-/tmp}" | grep "s3-verify-replay-")" ]
}
