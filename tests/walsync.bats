#!/usr/bin/env bats
# walsync: the porcelain end to end - watch (in-process pipelines) with
# concurrent writers to file:// and the local S3 server, restore at the
# latest TXID and at a timestamp, supervisor restarts, SIGTERM drain,
# config errors, the shell examples, and walsync(1)'s EXAMPLES.
load test_helper/common
load test_helper/s3
load test_helper/watch

# metric NAME DB FILE: one value from the metrics file.
metric() { sed -n "s/^$1{db=\"$2\"} //p" "$3"; }

# The acceptance scenario on one backend: three databases, concurrent
# writers in two phases with a quiet point between them.
three_databases() {
  local base=$1 n
  cd "$T"
  for n in a b c; do mkdb "$n.db"; done
  walsync watch a.db b.db c.db -b "$base" --metrics-file "$T/m.prom" --metrics-interval 500ms 2>"$T/watch.log" &
  local pid=$!
  local w=()
  for n in a b c; do writer "$n.db" 40 0.01 & w+=($!); done
  wait "${w[@]}"
  for n in a b c; do caught_up "$base" "$n" "$n.db"; done
  sleep 1.2  # the next second: --timestamp has a second's resolution
  for n in a b c; do sqlite3 "$n.db" .sha3sum > "$n.mid"; done
  local mid; mid=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  sleep 1.2
  w=()
  for n in a b c; do writer "$n.db" 40 0.01 1000 & w+=($!); done
  wait "${w[@]}"
  stop_watch "$pid" 10
  grep -q "a: drained at TXID" "$T/watch.log"
  for n in a b c; do
    walsync restore "$n" -b "$base" -o "$n-latest.db"
    same "$n.db" "$n-latest.db"
    walsync restore "$n" -b "$base" -o "$n-mid.db" --timestamp "$mid"
    [ "$(sqlite3 "$n-mid.db" .sha3sum)" = "$(cat "$n.mid")" ]
    [ "$(sqlite3 "$n-mid.db" 'PRAGMA integrity_check')" = ok ]
  done
  [ "$(metric walsync_errors_total a "$T/m.prom")" = 0 ]
  [ "$(metric walsync_lag_seconds b "$T/m.prom")" = 0.000 ]
}

@test "walsync watch: three databases, concurrent writers, file:// replica; restore latest and at a timestamp" {
  three_databases "file://$T/rep"
}

@test "walsync watch: three databases, concurrent writers, S3 replica; restore latest and at a timestamp" {
  require_s3
  three_databases "$(s3_url base)"
}

@test "walsync watch: S3 failures kill the pipeline; the supervisor restarts it with backoff and it converges" {
  require_s3
  cd "$T"
  mkdb app.db
  writer app.db 5 0
  start_proxy --faults PUT:500,PUT:500
  local url; url=$(s3_url base)
  walsync watch app.db -b "$url" --endpoint "$PROXY" --retries 0 --connect-timeout 2 \
    --metrics-file m.prom --metrics-interval 200ms 2>watch.log &
  local pid=$!
  writer app.db 20 0.02 100
  for i in $(seq 1 300); do
    [ "$(metric walsync_restarts_total app m.prom)" = 2 ] && [ "$(metric walsync_lag_seconds app m.prom)" = 0.000 ] && break
    sleep 0.2
  done
  stop_watch "$pid" 10
  stop_proxy
  cat watch.log >&2
  grep -q "app: failed: upload: .*restarting in 1000 ms" watch.log
  grep -q "app: failed: upload: .*restarting in 2000 ms" watch.log
  [ "$(metric walsync_restarts_total app m.prom)" = 2 ]
  walsync restore app -b "$url" -o restored.db
  same app.db restored.db
}

@test "walsync watch: restart resumes from the acknowledged position (no second snapshot)" {
  cd "$T"
  mkdb app.db
  writer app.db 10 0
  walsync watch app.db -b "file://$T/rep" 2>w1.log & local pid=$!
  sleep 1; writer app.db 5 0 100; sleep 0.5
  stop_watch "$pid" 10
  writer app.db 5 0 200
  walsync watch app.db -b "file://$T/rep" 2>w2.log & pid=$!
  writer app.db 5 0 300; sleep 1
  stop_watch "$pid" 10
  grep -q "app: started at TXID 0000000000000000, no acknowledged position" w1.log
  grep -q "app: started at TXID 00000000000000.., WAL " w2.log
  # one snapshot only (TXID 1), the rest continue the chain
  [ "$(ls rep/app/ltx/0 | grep -c '^0000000000000001-')" = 1 ]
  walsync restore app -b "file://$T/rep" -o r.db
  same app.db r.db
  run walsync restore app -b "file://$T/rep" -o r.db
  [ "$status" -eq 1 ]
  run walsync restore app -b "file://$T/rep" -o r.db --if-not-exists
  assert_success
}

# billed KIND: the proxy log's requests of KIND as S3 bills them (put: PUT,
# POST of multipart uploads; get: GET and HEAD of objects; list: GET of the
# bucket itself; delete: DELETE, POST ?delete), as bench/cost counts them.
billed() {
  awk -v k="$1" '{ m = $1; p = $2
    if (m == "GET" && p ~ /^\/[^\/?]+\/?(\?|$)/) c = "list"
    else if (m == "GET" || m == "HEAD") c = "get"
    else if (m == "DELETE" || (m == "POST" && p ~ /[?&]delete([=&]|$)/)) c = "delete"
    else c = "put"
    if (c == k) n++ } END { print n + 0 }' "$PROXY_LOG"
}
# requests KIND DB FILE: walsync's own count of KIND from the metrics file.
requests() { sed -n "s/^walsync_requests_total{db=\"$2\",kind=\"$1\"} //p" "$3"; }

@test "walsync watch: status and metrics count the requests the server saw, by kind; an idle watch sends none" {
  require_s3
  cd "$T"
  mkdb app.db
  start_proxy
  local url; url=$(s3_url base)
  walsync watch app.db -b "$url" --endpoint "$PROXY" --sync-interval 0 \
    --metrics-file m.prom --metrics-interval 100ms 2>watch.log &
  local pid=$!
  wait_log "app: started at" watch.log
  writer app.db 20 0.05
  caught_up "$url" app app.db  # restores straight from the server, not through the proxy
  # idle: the counts and the proxy's log stand still
  local before; before=$(wc -l < "$PROXY_LOG")
  cp m.prom idle0.prom
  sleep 3
  [ "$(wc -l < "$PROXY_LOG")" = "$before" ] || fail "an idle watch sent: $(tail -n +$((before + 1)) "$PROXY_LOG")"
  local k
  for k in put get list delete; do [ "$(requests $k app m.prom)" = "$(requests $k app idle0.prom)" ]; done
  stop_watch "$pid" 10
  stop_proxy
  cat "$PROXY_LOG" >&2
  # 20 commits with --sync-interval 0: at least 20 PUTs, each one the server saw
  [ "$(requests put app m.prom)" -ge 20 ]
  for k in put get list delete; do
    [ "$(requests $k app m.prom)" = "$(billed $k)" ] || fail "$k: walsync counted $(requests $k app m.prom), the server saw $(billed $k)"
  done
  [ "$(requests list app m.prom)" -ge 1 ]  # the start's check of the replica
  run walsync status --metrics-file m.prom
  assert_success
  assert_line --index 0 "1 database: 0 active, 0 queued, 0 parked, 1 down, 0 failed; max lag 0.0s"
  assert_line --index 1 --regexp '^NAME +TXID +LAG +LAST-SUCCESS +ERRORS +PUT +GET +LIST +DELETE +STATE *$'
  assert_line --index 2 --regexp "^app +[0-9a-f]{16} +0\.0s +[-0-9T:.Z]+ +0 +$(requests put app m.prom) +$(requests get app m.prom) +$(requests list app m.prom) +0 +down *$"
}

@test "walsync watch: a lone commit after 5 s of quiet is stored at once, whatever the interval; the next waits for it" {
  cd "$T"
  mkdb app.db
  writer app.db 3 0
  walsync watch app.db -b "file://$T/rep" 2>w1.log & local pid=$!
  caught_up "file://$T/rep" app app.db
  stop_watch "$pid" 10
  walsync watch app.db -b "file://$T/rep" --sync-interval 1h --metrics-file m.prom --metrics-interval 100ms \
    2>w2.log & pid=$!
  wait_log "app: started at" w2.log
  local n0; n0=$(ls rep/app/ltx/0 | wc -l)
  sleep 5
  writer app.db 1 0 100
  caught_up "file://$T/rep" app app.db  # within 60 s: not the hour
  [ "$(ls rep/app/ltx/0 | wc -l)" = $((n0 + 1)) ]
  wait_log 'walsync_requests_total{db="app",kind="put"} 1$' m.prom
  # a commit within the interval waits for its end (or the drain)
  writer app.db 1 0 200
  sleep 2
  [ "$(ls rep/app/ltx/0 | wc -l)" = $((n0 + 1)) ]
  [ "$(requests put app m.prom)" = 1 ]
  stop_watch "$pid" 10
  [ "$(requests put app m.prom)" = 2 ]
  walsync restore app -b "file://$T/rep" -o r.db
  same app.db r.db
}

@test "walsync watch: a burst of 1,000 transactions is a handful of PUTs (default interval), restorable at every object's end" {
  cd "$T"
  mkdb app.db
  walsync watch app.db -b "file://$T/rep" --metrics-file m.prom --metrics-interval 100ms 2>w.log & local pid=$!
  caught_up "file://$T/rep" app app.db
  wait_log 'walsync_requests_total{db="app",kind="put"} [1-9]' m.prom
  local before; before=$(requests put app m.prom)
  local n0; n0=$(ls rep/app/ltx/0 | wc -l)
  # the burst (about a second; on a loaded machine longer: whole seconds it took, rounded up)
  local secs; secs=$(python3 - app.db <<'PY'
import math, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
c.execute("PRAGMA synchronous=NORMAL")
t = time.monotonic()
for i in range(1000):
    c.execute("INSERT INTO t(v) VALUES (?)", ("burst %d" % i,))
print(math.ceil(time.monotonic() - t))
PY
)
  caught_up "file://$T/rep" app app.db
  stop_watch "$pid" 10
  local puts=$(($(requests put app m.prom) - before)) objects=$(($(ls rep/app/ltx/0 | wc -l) - n0))
  echo "# 1,000 transactions in ${secs} s: $puts PUTs, $objects objects" >&3
  [ "$puts" -eq "$objects" ]
  # one object at once, then at most one a second: a handful
  [ "$puts" -le $((secs + 2)) ] || fail "$puts PUTs for a burst of ${secs} s: $(ls rep/app/ltx/0)"
  # every object's MaxTXID restores, with the rows it had
  local k prev=-1 rows
  for k in $(ls rep/app/ltx/0); do
    rm -f r.db
    walsync restore app -b "file://$T/rep" -o r.db --txid "${k:17:16}"
    [ "$(sqlite3 r.db 'PRAGMA integrity_check')" = ok ]
    rows=$(sqlite3 r.db 'SELECT count(*) FROM t')
    [ "$rows" -ge "$prev" ] || fail "TXID ${k:17:16}: $rows rows after $prev"
    prev=$rows
  done
  [ "$prev" -eq 1000 ]
  same app.db r.db
}

@test "walsync watch: SIGTERM while idle exits 0 at once; SIGINT too" {
  cd "$T"
  mkdb app.db
  walsync watch app.db -b "file://$T/rep" 2>w.log & local pid=$!
  wait_log "app: started at" w.log
  stop_watch "$pid" 3
  walsync watch app.db -b "file://$T/rep" 2>w2.log & pid=$!
  wait_log "watch: 1 database checked" w2.log  # nothing new: parked, no pipeline
  kill -INT "$pid"; wait "$pid"
  grep -q "watch: SIGINT: draining" w2.log
}

@test "walsync: config file: per-database overrides; unknown keys rejected with the line number" {
  cd "$T"
  mkdb one.db; mkdb two.db
  cat > ok.conf <<EOF
# replicas under file://$T/rep
url = file://$T/rep
metrics-file = $T/m.prom
metrics-interval = 200ms
[$T/one.db]
name = first
state-dir = $T/state-one
checkpoint-pages = 50
[$T/two.db]
EOF
  walsync watch -c ok.conf 2>w.log & local pid=$!
  writer one.db 5 0; writer two.db 5 0; sleep 1
  stop_watch "$pid" 5
  [ -f state-one/ack ]
  [ -d two.db-walsync ]
  walsync restore first -c ok.conf -o r1.db
  same one.db r1.db
  walsync restore two -c ok.conf -o r2.db
  same two.db r2.db
  run walsync status -c ok.conf
  assert_success
  assert_line --partial "first"
  printf 'url = file:///x\n\n# c\nretention = 3\n' > bad.conf
  run walsync watch -c bad.conf one.db
  [ "$status" -eq 2 ]
  assert_output --partial "bad.conf:4: unknown key 'retention'"
  printf '[%s]\nurl = file:///x\nfoo = 1\n' "$T/one.db" > bad2.conf
  run walsync watch -c bad2.conf
  [ "$status" -eq 2 ]
  assert_output --partial "bad2.conf:3: unknown key 'foo'"
  run walsync watch one.db
  [ "$status" -eq 2 ]
  assert_output --partial "no replica URL"
}

@test "walsync: a state directory refuses another replica: one line, not retried, exit 3" {
  cd "$T"
  mkdb app.db
  walsync watch app.db -b "file://$T/rep1" 2>w1.log & local pid=$!
  wait_log "app: started at" w1.log
  stop_watch "$pid" 5
  run timeout 60 walsync watch app.db -b "file://$T/rep2"
  [ "$status" -eq 3 ]
  assert_line --partial "walsync: app: failed: upload: app.db-walsync: state belongs to replica file://$T/rep1/app, not file://$T/rep2/app"
  [ "$(grep -c "app: failed: .*; not restarting$" <<< "$output")" -eq 1 ]
  refute_output --partial "restarting in"
}

@test "walsync watch: a database that cannot be backed up stops with one line; the others go on; SIGTERM then exits 1" {
  cd "$T"
  mkdb app.db
  sqlite3 plain.db "CREATE TABLE t(x)"  # rollback journal, not WAL
  mkdir dir.db
  walsync watch app.db plain.db missing.db dir.db -b "file://$T/rep" --metrics-file m.prom \
    --metrics-interval 100ms 2>w.log & local pid=$!
  for n in plain missing dir; do wait_log "$n: failed: .*; not restarting" w.log; done
  writer app.db 5 0
  caught_up "file://$T/rep" app app.db
  wait_log 'walsync_failed{db="dir"} 1' m.prom
  kill -0 "$pid"  # app is still backed up
  run walsync status --metrics-file m.prom
  assert_success
  assert_line --regexp '^app .* (active|parked) *$'
  assert_line --regexp '^plain .* failed *$'
  [ "$(metric walsync_failed app m.prom)" = 0 ]
  [ "$(metric walsync_failed plain m.prom)" = 1 ]
  [ "$(metric walsync_up plain m.prom)" = 0 ]
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  [ "$rc" -eq 1 ]
  # in the order the pipelines failed: any
  run bash -c 'grep -v -e "started at" -e "watch: " -e "drained at" w.log | sort'
  assert_output "walsync: dir: failed: wal-tail: dir.db: is a directory; not restarting
walsync: missing: failed: wal-tail: missing.db: No such file or directory; not restarting
walsync: plain: failed: wal-tail: plain.db: not in WAL mode (PRAGMA journal_mode=WAL); not restarting"
}

@test "walsync watch: when every database has failed for good, it exits 1 by itself" {
  cd "$T"
  sqlite3 plain.db "CREATE TABLE t(x)"
  run timeout 60 walsync watch plain.db missing.db -b "file://$T/rep"
  [ "$status" -eq 1 ]
  assert_line "walsync: plain: failed: wal-tail: plain.db: not in WAL mode (PRAGMA journal_mode=WAL); not restarting"
  assert_line "walsync: missing: failed: wal-tail: missing.db: No such file or directory; not restarting"
  refute_output --partial "restarting in"
}

@test "walsync replicate: a usage or integrity error is not retried: one line, its status" {
  cd "$T"
  mkdb app.db
  writer app.db 5 0
  walsync watch app.db -b "file://$T/rep" 2>w.log & local pid=$!
  caught_up "file://$T/rep" app app.db
  stop_watch "$pid" 10
  head -c 8192 /dev/urandom > junk.db
  run timeout 60 walsync replicate app -b "file://$T/rep" --local junk.db --interval 100ms
  [ "$status" -eq 3 ]
  assert_line "walsync: junk.db: pipeline exited with status 3; not restarting"
  refute_output --partial "restarting in"
  # an interval s3-get refuses (1d is the most it takes): exit 2, and no empty replica left behind
  run timeout 60 walsync replicate app -b "file://$T/rep" --local new.db --interval 2d
  [ "$status" -eq 2 ]
  refute_output --partial "restarting in"
  [ ! -e new.db ]
}

@test "walsync snapshot, ls, verify" {
  cd "$T"
  mkdb app.db
  writer app.db 10 0
  walsync watch app.db -b "file://$T/rep" 2>w.log & local pid=$!
  sleep 1; writer app.db 10 0 100; sleep 0.5
  stop_watch "$pid" 5
  walsync snapshot app.db -b "file://$T/rep"
  ls rep/app/ltx/9 | grep -q '^0000000000000001-'
  run walsync ls app -b "file://$T/rep"
  assert_success
  assert_output --partial "9/0000000000000001-"
  walsync verify app -b "file://$T/rep"
  walsync restore app -b "file://$T/rep" -o r.db
  same app.db r.db
}

@test "walsync replicate: a live replica follows the primary" {
  cd "$T"
  mkdb app.db
  writer app.db 10 0
  walsync watch app.db -b "file://$T/rep" 2>w.log & local pid=$!
  sleep 1
  walsync replicate app -b "file://$T/rep" --local replica.db --interval 200ms 2>r.log & local rpid=$!
  writer app.db 20 0.02 100
  local i
  for i in $(seq 1 300); do
    [ "$(sqlite3 replica.db 'SELECT count(*) FROM t' 2>/dev/null)" = 30 ] && break
    sleep 0.2
  done
  stop_watch "$pid" 5
  kill -TERM "$rpid"; wait "$rpid"
  same app.db replica.db
}

@test "examples/tee-two-replicas.sh: one pipeline, two file:// replicas, both restore" {
  cd "$T"
  mkdb app.db
  writer app.db 10 0
  setsid "$REPO_ROOT/examples/tee-two-replicas.sh" app.db "file://$T/r1" "file://$T/r2" 2>tee.log & local pid=$!
  sleep 1
  writer app.db 10 0.02 100
  local i
  for i in $(seq 1 300); do
    [ "$(ls r1/ltx/0 2>/dev/null | wc -l)" -ge 11 ] && [ "$(ls r2/ltx/0 2>/dev/null | wc -l)" -ge 11 ] && break
    sleep 0.2
  done
  sleep 0.5
  kill -TERM -- -"$pid"; wait "$pid" || true
  for r in r1 r2; do
    s3-get "file://$T/$r" | ltx-apply "$r.db"
    same app.db "$r.db"
  done
}

@test "walsync: usage errors exit 2; --help exits 0" {
  run walsync
  [ "$status" -eq 2 ]
  run walsync restore app
  [ "$status" -eq 2 ]
  run walsync watch --help
  assert_success
  assert_output --partial "--metrics-file"
}

@test "man: walsync.1 is lint-clean and its examples run" {
  mandoc -Tlint -W warning "$REPO_ROOT/man/walsync.1"
  awk '
    /^\.Sh / { ex = ($2 == "EXAMPLES"); next }
    ex && /^\.Bd -literal/ { lit = 1; next }
    ex && /^\.Ed/ { lit = 0; next }
    ex && lit && /^\$ / { sub(/^\$ /, ""); gsub(/\\-/, "-"); gsub(/\\e/, "\\"); print }
  ' "$REPO_ROOT/man/walsync.1" > "$T/ex.sh"
  [ -s "$T/ex.sh" ]
  mkdir "$T/ex" && cd "$T/ex"
  sqlite3 app.db >/dev/null <<'SQL'
PRAGMA journal_mode=WAL;
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
INSERT INTO t(v) SELECT printf('row %d', value) FROM generate_series(1, 500);
SQL
  run bash -e -o pipefail "$T/ex.sh" </dev/null
  [ "$status" -eq 0 ] || { cat "$T/ex.sh" >&2; echo "$output" >&2; return 1; }
}

@test "examples/ssh-between-hosts.sh: backup and restore through a local 'ssh'" {
  cd "$T"
  mkdb app.db
  writer app.db 10 0
  SSH="bash -c" STATE="$T/st" setsid "$REPO_ROOT/examples/ssh-between-hosts.sh" backup "" "$T/app.db" "file://$T/rep" 2>ssh.log & local pid=$!
  local i
  for i in $(seq 1 300); do [ -n "$(ls rep/ltx/0 2>/dev/null)" ] && break; sleep 0.2; done
  kill -TERM -- -"$pid"; wait "$pid" || true
  SSH="bash -c" "$REPO_ROOT/examples/ssh-between-hosts.sh" restore "file://$T/rep" "" "$T/out.db"
  same app.db out.db
}

# small_replica: app.db (WAL, 20 rows) backed up to file://$T/rep/app.
small_replica() {
  mkdb app.db
  writer app.db 20 0
  ltx-encode --db app.db | s3-put "file://$T/rep/app"
}

@test "walsync restore: a hot journal beside the output is refused before anything is fetched" {
  cd "$T"
  small_replica
  hot_journal out.db
  rm out.db
  cp out.db-journal journal.before
  run walsync restore app -b "file://$T/rep" -o out.db
  assert_failure 1
  assert_output "walsync: out.db-journal: hot journal of an earlier out.db that is gone; SQLite would roll it into the new database (move it away with its database, or remove it)"
  [ ! -e out.db ]
  cmp journal.before out.db-journal
  rm out.db-journal
  walsync restore app -b "file://$T/rep" -o out.db
  same app.db out.db
}

@test "walsync restore: the output gets 0666 less the umask" {
  cd "$T"
  small_replica
  (umask 027 && walsync restore app -b "file://$T/rep" -o out.db)
  [ "$(stat -c %a out.db)" = 640 ]
}

@test "walsync restore: an integrity error of ltx-apply is status 3 although s3-get then lost its reader" {
  cd "$T"
  mkdir -p rep/app/ltx/0
  cp "$WALSYNC_VECTORS/ltx/snap_big.ltx" rep/app/ltx/0/0000000000000001-0000000000000001.ltx
  printf '\377\377\377\377' | dd of=rep/app/ltx/0/0000000000000001-0000000000000001.ltx bs=1 seek=100 conv=notrunc 2>/dev/null
  run walsync restore app -b "file://$T/rep" -o out.db
  assert_failure 3
  assert_output "ltx-apply: stdin: 0000000000000001-0000000000000001.ltx: decode page frame 1: page 4294967295 out of bounds for commit size 684"
  [ ! -e out.db ]
}

@test "walsync restore: a plan that fails after its first file leaves no output (ltx-apply had committed the snapshot)" {
  cd "$T"
  mkdir -p rep/app/ltx/0
  cp "$WALSYNC_VECTORS/ltx/snap_big.ltx" rep/app/ltx/0/0000000000000001-0000000000000001.ltx
  cp "$WALSYNC_VECTORS/ltx/snap_big.ltx" rep/app/ltx/0/0000000000000002-0000000000000002.ltx
  run walsync restore app -b "file://$T/rep" -o out.db
  assert_failure 3
  assert_output --partial "0000000000000002-0000000000000002.ltx: header TXIDs"
  [ ! -e out.db ]
  run ls -A
  assert_output "rep"
}

@test "walsync restore: a replica that is not there is one line from s3-get, not a second from ltx-apply" {
  cd "$T"
  mkdir rep
  run walsync restore nothere -b "file://$T/rep" -o out.db
  assert_failure 3
  assert_output "s3-get: file://$T/rep/nothere: no replica files"
  [ ! -e out.db ]
}

@test "walsync restore: kill -9 takes its children with it" {
  cd "$T"
  mkdir bin
  cp "$WALSYNC_BIN/walsync" bin/
  ln -s "$WALSYNC_BIN/ltx-apply" bin/ltx-apply
  printf '#!/bin/sh\necho $$ > "%s"\nexec sleep 300\n' "$T/child.pid" > bin/s3-get
  chmod +x bin/s3-get
  bin/walsync restore app -b "file://$T/rep" -o out.db & local pid=$!
  local i
  for i in $(seq 1 100); do [ -s child.pid ] && break; sleep 0.1; done
  local child; child=$(cat child.pid)
  kill -0 "$child"
  kill -9 "$pid"; wait "$pid" || true
  for i in $(seq 1 100); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$child" 2>/dev/null
}

@test "walsync restore, ls: -v, --retries and the other S3 options reach the tools they run" {
  cd "$T"
  small_replica
  run walsync restore app -b "file://$T/rep" -o out.db -v
  assert_success
  assert_output --regexp "s3-get: [^ ]*app/ltx/0/0000000000000001-0000000000000001.ltx: sent [0-9]+ bytes"
  assert_output --partial "ltx-apply: out.db: 1 files, txid "
  # nothing listens on this port: one retry, said on stderr
  AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s run walsync ls app -b s3://bucket --endpoint http://127.0.0.1:18199 \
    --retries 1 --connect-timeout 1 -v
  assert_failure 1
  assert_output --partial "retry 1/1"
  refute_output --partial "retry 2/"
}

@test "walsync ls: a replica that does not exist is an error" {
  cd "$T"
  small_replica
  run walsync ls nothere -b "file://$T/rep"
  assert_failure 1
  assert_output "walsync: file://$T/rep/nothere: no replica files"
  run walsync ls app -b "file://$T/rep"
  assert_success
  assert_output --partial "0/0000000000000001-"
}

@test "walsync: an unknown subcommand is named" {
  run walsync wacth app.db
  assert_failure 2
  assert_output "walsync: unknown subcommand 'wacth' (watch, restore, replicate, snapshot, verify, ls, compact, retain, status; see --help)"
}

@test "walsync replicate: --interval in the grammar s3-get takes (1d), and out of its range refused at once" {
  cd "$T"
  small_replica
  run timeout 20 walsync replicate app -b "file://$T/rep" --local r.db --interval 2d
  assert_failure 2
  assert_output "walsync: --interval 2d: want a duration from 10ms to 1d (500ms, 30s, 5m, 1h30m, 7d, ...)"
  walsync replicate app -b "file://$T/rep" --local r.db --interval 1d 2>r.log & local pid=$!
  local i
  for i in $(seq 1 100); do
    [ "$(sqlite3 r.db 'SELECT count(*) FROM t' 2>/dev/null)" = 20 ] && break
    sleep 0.1
  done
  kill -TERM "$pid"; wait "$pid"
  same app.db r.db
  ! grep -q "pipeline exited" r.log
}

@test "walsync restore: a damaged newest snapshot falls back to an older one and the files after it, and says so" {
  cd "$T"
  local C="$WALSYNC_VECTORS/ltx/chain"
  cat "$C"/*.ltx | s3-put "file://$T/rep/app"
  walsync snapshot app -b "file://$T/rep"
  local snap; snap=$(cd rep/app/ltx && ls 9/)
  [ "$snap" = 0000000000000001-0000000000000004.ltx ]
  printf '\377\377\377\377' | dd of="rep/app/ltx/9/$snap" bs=1 seek=100 conv=notrunc 2>/dev/null
  run walsync restore app -b "file://$T/rep" -o out.db
  assert_success
  assert_line --index 0 --partial "ltx-apply: stdin: 0000000000000001-0000000000000004.ltx: decode page frame 1: page 4294967295 out of bounds"
  assert_line --index 1 "walsync: file://$T/rep/app: restore from snapshot 9/$snap failed; trying an older snapshot"
  [ "${#lines[@]}" -eq 2 ]
  ltx-apply ref.db "$C"/*.ltx
  cmp ref.db out.db
  # no older snapshot: the status of the failure
  rm rep/app/ltx/0/0000000000000001-0000000000000001.ltx
  rm out.db
  run walsync restore app -b "file://$T/rep" -o out.db
  assert_failure 3
  [ ! -e out.db ]
}
