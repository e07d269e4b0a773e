#!/usr/bin/env bats
# The backup pipeline end to end (issue 5): crash-proof with acknowledged
# positions, restore-then-continue, and two writers on one prefix.

load test_helper/common

pipeline_start() {  # pipeline_start DB URL [S3-PUT-FLAG...]: wal-tail | ltx-encode | s3-put with acks, in its own group
  s3-put --sync-ack --ack "$T/ack" "$2"
  setsid bash -c 'wal-tail --ack "$3" "$1" | ltx-encode --state "$4" --ack "$3" | s3-put -v --ack "$3" "${@:5}" "$2"' \
    _ "$1" "$2" "$T/ack" "$T/st" "${@:3}" > /dev/null 2>> "$T/pipeline.log" 3>&- &
  PIPE=$!
}
pipeline_stop() {  # pipeline_stop [SIG]: signal the group (TERM) and wait until every member
  # is gone: bash may be reaped before wal-tail has exited, and wal-tail holds the state lock until then
  kill -"${1:-TERM}" -- "-$PIPE" 2>/dev/null; wait "$PIPE" 2>/dev/null || true
  local i; for i in $(seq 1 100); do kill -0 -- "-$PIPE" 2>/dev/null || return 0; sleep 0.1; done
  fail "pipeline group $PIPE still alive 10 s after SIG${1:-TERM}"
}

teardown() {  # nothing outlives a failed test
  [ -n "${PIPE:-}" ] && kill -9 -- "-$PIPE" 2>/dev/null
  [ -n "${holder:-}" ] && kill "$holder" 2>/dev/null
  true
}

wait_for_count() {  # wait_for_count URL N: until a restore has N rows in t (60 s)
  for _ in $(seq 1 600); do
    rm -f "$T/probe.db"
    s3-get "$1" 2>/dev/null | ltx-apply "$T/probe.db" 2>/dev/null || true
    [ "$(sqlite3 "$T/probe.db" 'select count(*) from t' 2>/dev/null)" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

@test "pipeline: chaos on file:// — random SIGKILLs of any stage lose nothing (short run)" {
  run "$REPO_ROOT/tests/chaos.sh" "file://$T/work/rep" 15 "$T/work"
  echo "$output" | grep '^chaos:' >&3 || true
  assert_success
  assert_output --partial "missing 0, integrity ok"
  assert_output --partial "chaos: ok"
}

@test "pipeline: restore, then replication continues the restored TXID sequence" {
  url="file://$T/rep"
  sqlite3 "$T/a.db" "pragma journal_mode=wal; create table t(x);" > /dev/null
  python3 -c "import sqlite3,time,sys; c=sqlite3.connect(sys.argv[1]); time.sleep(3600)" "$T/a.db" > /dev/null 2>&1 3>&- &
  holder=$!
  pipeline_start "$T/a.db" "$url"
  for i in $(seq 1 20); do sqlite3 "$T/a.db" "insert into t values ($i)"; done
  wait_for_count "$url" 20
  pipeline_stop
  kill "$holder"
  last=$(s3-ls "$url" | tail -n 1 | cut -f1)
  # the original host is gone: restore on a new host and replicate again
  s3-get "$url" | ltx-apply "$T/b.db"
  rm -rf "$T/st" "$T/ack"
  # the restored database joins the replica's chain before anyone writes
  s3-put --sync-ack --ack "$T/ack" "$url"
  run ltx-encode -v --db "$T/b.db" --state "$T/st" --ack "$T/ack"
  assert_success
  assert_output --partial "joins the replica at TXID ${last:19:16}"
  pipeline_start "$T/b.db" "$url"
  for i in $(seq 21 30); do sqlite3 "$T/b.db" "insert into t values ($i)"; done
  wait_for_count "$url" 30
  pipeline_stop
  run s3-ls "$url"
  # no reset to TXID 1, no gap: the new files continue where the restore was
  first_new=$(s3-ls "$url" | awk -F'\t' -v l="$last" '$1 > l {print $1; exit}')
  [ "${first_new:2:16}" = "$(printf '%016x' $((16#${last:19:16} + 1)))" ] || fail "chain restarted: after $last came $first_new"
  run s3-verify "$url"
  assert_success
  rm -f "$T/r.db"; s3-get "$url" | ltx-apply "$T/r.db"
  sqlite3 "$T/b.db" "pragma wal_checkpoint(truncate)" > /dev/null
  [ "$(sqlite3 "$T/r.db" .sha3sum)" = "$(sqlite3 "$T/b.db" .sha3sum)" ]
}

@test "pipeline: a second database writing the same prefix is refused and the chain is unchanged" {
  url="file://$T/rep"
  sqlite3 "$T/a.db" "pragma journal_mode=wal; create table t(x); insert into t values (1);" > /dev/null
  wal-tail --snapshot "$T/a.db" | ltx-encode --state "$T/st" | s3-put "$url"
  before=$(s3-ls "$url")
  sqlite3 "$T/other.db" "pragma journal_mode=wal; create table t(y); insert into t values (2);" > /dev/null
  s3-put --sync-ack --ack "$T/ack2" "$url"
  run bash -c "set -o pipefail; wal-tail --snapshot '$T/other.db' | ltx-encode --state '$T/st2' --ack '$T/ack2' | s3-put --ack '$T/ack2' '$url'"
  assert_failure 3
  assert_output --partial "is not the replica's TXID 0000000000000001"
  [ "$(s3-ls "$url")" = "$before" ]
}

@test "pipeline: an unacknowledged file is redone after a crash, never skipped or duplicated" {
  url="file://$T/rep"
  sqlite3 "$T/a.db" "pragma journal_mode=wal; create table t(x);" > /dev/null
  python3 -c "import sqlite3,time,sys; c=sqlite3.connect(sys.argv[1]); time.sleep(3600)" "$T/a.db" > /dev/null 2>&1 3>&- &
  holder=$!
  pipeline_start "$T/a.db" "$url"
  sqlite3 "$T/a.db" "insert into t values (1)"
  wait_for_count "$url" 1
  pipeline_stop
  # the encoder emits TXIDs that never reach the destination (lost in a crash)
  sqlite3 "$T/a.db" "insert into t values (2); insert into t values (3);"
  timeout 2 wal-tail --ack "$T/ack" "$T/a.db" | ltx-encode --state "$T/st" --ack "$T/ack" > "$T/lost.ltx" || true
  [ -s "$T/lost.ltx" ]
  # restart: the state rolls back to the acknowledgement and the WAL still holds the frames
  pipeline_start "$T/a.db" "$url"
  wait_for_count "$url" 3
  pipeline_stop
  kill "$holder"
  run grep -c "resync" "$T/pipeline.log"
  [ "$output" = 0 ] || [ "$output" = 1 ]
  run s3-verify "$url"
  assert_success
  # TXIDs 1..last, each in exactly one object (a file may hold several)
  prev=0
  for k in $(s3-ls "$url" | cut -f1); do
    [ "$((16#${k:2:16}))" -eq "$((prev + 1))" ] || fail "TXIDs are not contiguous from 1: $(s3-ls "$url")"
    prev=$((16#${k:19:16}))
  done
}

@test "pipeline: a burst of 1,000 transactions is a handful of objects, restorable at every file boundary" {
  url="file://$T/rep"
  sqlite3 "$T/a.db" "pragma journal_mode=wal; create table t(x);" > /dev/null
  python3 -c "import sqlite3,time,sys; c=sqlite3.connect(sys.argv[1]); time.sleep(3600)" "$T/a.db" > /dev/null 2>&1 3>&- &
  holder=$!
  pipeline_start "$T/a.db" "$url"  # the default --sync-interval 1s
  sqlite3 "$T/a.db" "insert into t values (0)"
  wait_for_count "$url" 1
  before=$(s3-ls "$url" | wc -l)
  python3 -c "
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
for i in range(1, 1001):
    c.execute('insert into t values (?)', (i,))
" "$T/a.db"
  wait_for_count "$url" 1001
  pipeline_stop
  kill "$holder"
  after=$(s3-ls "$url" | wc -l)
  echo "# 1,000 transactions: $((after - before)) objects" >&3
  [ $((after - before)) -le 5 ] || fail "$((after - before)) objects for the burst: $(s3-ls "$url")"
  grep -q "files merged" "$T/pipeline.log"
  run s3-verify "$url"
  assert_success
  # every MaxTXID is a restore point: the rows grow with it, the last has them all
  prev=-1
  for k in $(s3-ls "$url" | cut -f1); do
    rm -f "$T/r.db"
    s3-get --txid "${k:19:16}" "$url" | ltx-apply "$T/r.db"
    [ "$(sqlite3 "$T/r.db" 'pragma integrity_check')" = ok ]
    n=$(sqlite3 "$T/r.db" 'select count(*) from t')
    [ "$n" -gt "$prev" ] || [ "$n" -eq 0 ] || fail "TXID ${k:19:16}: $n rows after $prev"
    prev=$n
  done
  [ "$prev" -eq 1001 ]
  sqlite3 "$T/a.db" "pragma wal_checkpoint(truncate)" > /dev/null
  [ "$(sqlite3 "$T/r.db" .sha3sum)" = "$(sqlite3 "$T/a.db" .sha3sum)" ]
}

@test "pipeline: a lone commit after quiet is stored at once; the next waits for the interval; a crash redoes it" {
  url="file://$T/rep"
  sqlite3 "$T/a.db" "pragma journal_mode=wal; create table t(x);" > /dev/null
  python3 -c "import sqlite3,time,sys; c=sqlite3.connect(sys.argv[1]); time.sleep(3600)" "$T/a.db" > /dev/null 2>&1 3>&- &
  holder=$!
  pipeline_start "$T/a.db" "$url" --sync-interval 0
  sqlite3 "$T/a.db" "insert into t values (1)"
  wait_for_count "$url" 1
  pipeline_stop
  # nothing new at the start: the first commit is the first object of a 60 s interval
  pipeline_start "$T/a.db" "$url" --sync-interval 60s
  sleep 0.5
  sqlite3 "$T/a.db" "insert into t values (2)"
  wait_for_count "$url" 2  # polls for up to ~10 s or more, far inside the 60 s
  # the commits after it wait for the interval's end (about 60 s away)
  sqlite3 "$T/a.db" "insert into t values (3)"
  sleep 2
  rm -f "$T/probe.db"; s3-get "$url" | ltx-apply "$T/probe.db"
  [ "$(sqlite3 "$T/probe.db" 'select count(*) from t')" = 2 ]
  # killed with a pending file: it was never acknowledged, so it is redone
  pipeline_stop KILL
  pipeline_start "$T/a.db" "$url" --sync-interval 0
  wait_for_count "$url" 3
  pipeline_stop
  kill "$holder"
  run s3-verify "$url"
  assert_success
}
