#!/usr/bin/env bats
# One writer per replica (issue 13): the lease, takeovers, and fencing of a
# paused or unaware writer, with walsync watch and with plain pipelines on
# file:// (link(2)/flock: fully fenced), and the refusal of a store without
# conditional writes (the local Swift server) unless --unfenced.
load test_helper/common
load test_helper/s3
load test_helper/watch

setup() {
  cd "$T"
  mkdir -p fa fb
  mkdb fa/app.db
  sqlite3 fa/app.db "INSERT INTO t(v) VALUES('base 1'), ('base 2')"
  cp fa/app.db fb/app.db  # a copy of one database (a standby, a cloned VM)
  URL="file://$T/rep"
  HOST=$(hostname)
}

# wait_for FILE PATTERN: until FILE has a line matching PATTERN (30 s).
wait_for() {
  local i
  for i in $(seq 1 300); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1: no line matching '$2'" >&2; cat "$1" >&2
  return 1
}

# exited PID: waits for PID (30 s); its exit status in EXIT.
exited() {
  local i
  for i in $(seq 1 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  EXIT=0
  wait "$1" || EXIT=$?
}

# restores_everywhere URL TAKEOVER: every TXID of the replica restores;
# up to TAKEOVER the rows are the first writer's (no 'B' row), after it
# the second's (no 'A' row): the chain switches writers once, there.
restores_everywhere() {
  local latest t
  latest=$(s3-ls "$1/app" | tail -n 1 | cut -f1)
  latest=$((16#${latest:19:16}))
  for t in $(seq 1 "$latest"); do
    rm -f r.db
    walsync restore app -b "$1" -o r.db --txid "$(printf %x "$t")" || { echo "TXID $t does not restore" >&2; return 1; }
    [ "$(sqlite3 r.db 'PRAGMA integrity_check')" = ok ]
    if [ "$t" -le "$((16#$2))" ]; then
      [ "$(sqlite3 r.db "SELECT count(*) FROM t WHERE v GLOB 'B*'")" = 0 ] || { echo "TXID $t has B rows" >&2; return 1; }
    else
      [ "$(sqlite3 r.db "SELECT count(*) FROM t WHERE v GLOB 'A*'")" = 0 ] || { echo "TXID $t has A rows" >&2; return 1; }
    fi
  done
}

takeover_txid() { sed -n 's/^takeover [0-9]* \([0-9a-f]*\) .*/\1/p' rep/app/lease | tail -n 1; }

@test "fence: a second walsync watch of a copy refuses the held replica: exit 3, the holder named, the chain unchanged" {
  walsync watch fa/app.db -b "$URL" 2>wa.log & local a=$!
  sqlite3 fa/app.db "INSERT INTO t(v) VALUES('A 1')"
  wait_for wa.log "started at"
  for _ in $(seq 1 100); do [ -n "$(ls rep/app/ltx/0 2>/dev/null)" ] && break; sleep 0.1; done
  before=$(ls rep/app/ltx/0)
  run walsync watch fb/app.db -b "$URL"
  assert_failure 3
  assert_line "walsync: app: failed: upload: $URL/app: the replica's lease is held by $HOST (pid $a, since $(sed -n 's/^start //p' rep/app/lease)); stop that writer, or take over with --takeover; not restarting"
  [ "$(ls rep/app/ltx/0)" = "$before" ]
  grep -q "^writer " rep/app/lease
  grep -q "^pid $a$" rep/app/lease
  stop_watch "$a"
}

@test "fence: walsync watch --takeover; the old writer exits 3 at its next write naming the new one; every TXID restores" {
  walsync watch fa/app.db -b "$URL" --sync-interval 0 2>wa.log & local a=$!
  writer fa/app.db 5 0.05 && sqlite3 fa/app.db "UPDATE t SET v = 'A' || v WHERE v LIKE 'row%'"
  wait_for wa.log "started at"
  sleep 1.5
  walsync watch fb/app.db -b "$URL" --sync-interval 0 --takeover 2>wb.log & local b=$!
  wait_for wb.log "took over the replica at TXID"
  sqlite3 fb/app.db "INSERT INTO t(v) VALUES('B 1')"
  sqlite3 fa/app.db "INSERT INTO t(v) VALUES('A 2')"
  exited "$a"
  [ "$EXIT" = 3 ]
  run grep -c "failed" wa.log
  [ "$output" = 1 ]
  grep -E "app: failed: upload: ($URL/app: taken over by $HOST \(pid $b, since [^)]*\) at TXID [0-9a-f]{16}|refusing .*)" wa.log ||
    grep "held by $HOST (pid $b" wa.log
  sqlite3 fb/app.db "INSERT INTO t(v) VALUES('B 2')"
  sleep 1.5
  stop_watch "$b"
  run s3-verify "$URL/app"
  assert_success
  restores_everywhere "$URL" "$(takeover_txid)"
  walsync restore app -b "$URL" -o last.db
  same fb/app.db last.db
}

@test "fence: SIGSTOP the writer, take over, SIGCONT: it stops at its next write; kill -9 and restart resumes without --takeover" {
  walsync watch fa/app.db -b "$URL" --sync-interval 0 --park-after 0 2>wa.log & local a=$!
  sqlite3 fa/app.db "INSERT INTO t(v) VALUES('A 1')"
  wait_for wa.log "started at"
  sleep 1.5
  kill -STOP "$a"
  sqlite3 fa/app.db "INSERT INTO t(v) VALUES('A 2')"
  walsync watch fb/app.db -b "$URL" --sync-interval 0 --takeover 2>wb.log & local b=$!
  wait_for wb.log "took over the replica at TXID"
  sqlite3 fb/app.db "INSERT INTO t(v) VALUES('B 1')"
  sleep 1.5
  kill -CONT "$a"
  sqlite3 fa/app.db "INSERT INTO t(v) VALUES('A 3')"
  exited "$a"
  [ "$EXIT" = 3 ]
  grep -E "failed: upload: .*(taken over by|held by) $HOST \(pid $b" wa.log || grep "failed: upload: refusing" wa.log
  # the holder killed and restarted: the same writer, no --takeover needed
  kill -9 "$b"; wait "$b" || true
  walsync watch fb/app.db -b "$URL" --sync-interval 0 2>wb2.log & b=$!
  wait_for wb2.log "checked in"
  sqlite3 fb/app.db "INSERT INTO t(v) VALUES('B 2')"
  sleep 1.5
  stop_watch "$b"
  grep -q "^pid $b$" rep/app/lease
  run s3-verify "$URL/app"
  assert_success
  restores_everywhere "$URL" "$(takeover_txid)"
  walsync restore app -b "$URL" -o last.db
  same fb/app.db last.db
}

# pipe DIR URL: wal-tail | ltx-encode | s3-put with acknowledgements in DIR, in its own group.
pipe() {
  setsid bash -c 'wal-tail --ack "$1/ack" "$1/app.db" | ltx-encode --state "$1/st" --ack "$1/ack" |
    s3-put --ack "$1/ack" --sync-interval 0 "$2"' _ "$1" "$2" >/dev/null 2>>"$1/pipe.log" 3>&- &
  echo $!
}

@test "fence: plain pipelines: a paused writer's stray file is removed and it exits 3; the taker continues the chain" {
  s3-put --sync-ack --ack fa/ack "$URL/app"
  a=$(pipe fa "$URL/app")
  sqlite3 fa/app.db "INSERT INTO t(v) VALUES('A 1')"
  for _ in $(seq 1 100); do [ -s fa/ack ] && break; sleep 0.1; done
  sleep 0.5
  # the second host takes the lease (and its acknowledgement) before its pipeline starts
  run s3-put --sync-ack --takeover --ack fb/ack "$URL/app"
  assert_success
  before=$(ls rep/app/ltx/0)
  sqlite3 fa/app.db "INSERT INTO t(v) VALUES('A 2')"
  for _ in $(seq 1 100); do grep -q "s3-put:" fa/pipe.log && break; sleep 0.1; done
  run cat fa/pipe.log
  assert_line --regexp "^s3-put: $URL/app: taken over by $HOST \(pid [0-9]+, since [^)]*\) at TXID [0-9a-f]{16}: .*\.ltx removed; stopping$"
  [ "$(ls rep/app/ltx/0)" = "$before" ]
  kill -- "-$a" 2>/dev/null || true
  b=$(pipe fb "$URL/app")
  sqlite3 fb/app.db "INSERT INTO t(v) VALUES('B 1')"
  for _ in $(seq 1 100); do [ "$(ls rep/app/ltx/0 | wc -l)" -gt 3 ] && break; sleep 0.1; done
  sleep 0.5
  kill -- "-$b"
  run s3-verify "$URL/app"
  assert_success
  restores_everywhere "$URL" "$(takeover_txid)"
}

@test "fence: a plain s3-put finding another writer's lease refuses (exit 3); --takeover needs --ack" {
  s3-put --sync-ack --takeover --ack fa/ack "$URL/app"
  wal-tail --snapshot fb/app.db | ltx-encode > snap.ltx
  run s3-put "$URL/app" < snap.ltx
  assert_failure 3
  assert_output --regexp "^s3-put: $URL/app: the replica's lease is held by $HOST \(pid [0-9]+, since .*\); stop that writer, or give --ack and --takeover to take over$"
  run s3-put --takeover "$URL/app" < snap.ltx
  assert_failure 2
  [ ! -e rep/app/ltx ]
}

@test "fence: Swift has no conditional PUT: refused with one line (exit 1) unless --unfenced, then a warning" {
  require_s3
  url=$(s3_url app)
  wal-tail --snapshot fa/app.db | ltx-encode > snap.ltx
  # the server's answer, as seen by curl
  run s3curl PUT "/$WALSYNC_TEST_BUCKET/probe-$$" -H 'If-None-Match: *' --data-binary @snap.ltx -w '%{http_code}'
  assert_output --partial "<Code>NotImplemented</Code>"
  assert_output --partial "501"
  run env -u WALSYNC_UNFENCED s3-put --ack a1 "$url" < snap.ltx
  assert_failure 1
  assert_output "s3-put: $url: the store does not support conditional writes (If-None-Match on PUT), so it cannot keep a second writer out; refusing (--unfenced to write anyway)"
  [ "$(cat a1.probe)" = "$url unconditional" ]
  run env -u WALSYNC_UNFENCED s3-put --ack a1 --unfenced "$url" < snap.ltx
  assert_success
  assert_output "s3-put: warning: $url: the store does not support conditional writes: writing unfenced (a takeover is noticed after each write; a same-key overwrite by another writer is not prevented)"
  run s3-verify "$url"
  assert_success
  # walsync watch the same way
  run env -u WALSYNC_UNFENCED walsync watch fb/app.db -b "$(dirname "$url")x" --state-dir st2
  assert_failure 1
  assert_output --partial "app: failed: upload: $(dirname "$url")x/app: the store does not support conditional writes"
}
