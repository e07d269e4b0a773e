#!/usr/bin/env bats
# walsync watch with many databases (issue 16): a quiet database parks (no
# thread, connection or descriptor of its own) and a write to its -wal wakes
# it; the first check of a start parks what has nothing new; pipelines share
# a bounded number of slots.
load test_helper/common
load test_helper/watch
# appends alone: a wake-up test counts the pages each file carries
export WRITER_APPEND=1

# hold DB: the application keeps a connection open in the background (so
# the writers' last close does not checkpoint and delete the WAL).
hold() {
  python3 -c "import sqlite3, time; c = sqlite3.connect('$1'); c.execute('SELECT count(*) FROM t').fetchall()
open('$1.held', 'w').close(); time.sleep(300)" &
  local i
  for i in $(seq 1 300); do [ -f "$1.held" ] && return 0; sleep 0.1; done
  return 1
}


# parked_alone PID DB: the watch holds one thread and no descriptor of DB.
parked_alone() {
  [ "$(ls "/proc/$1/task" | wc -l)" -eq 1 ] || { ls -l "/proc/$1/task" >&2; return 1; }
  if ls -l "/proc/$1/fd" | grep -F "$2"; then return 1; fi
}

# pages FILE: the number of pages in an LTX file.
pages() { ltx-dump "$1" | grep -c '^Frame '; }

@test "parking: a quiet database parks with no thread or descriptor; a write wakes it, it resumes at the acknowledged WAL position" {
  cd "$T"
  mkdb app.db
  hold app.db
  writer app.db 10 0
  walsync watch -v --park-after 1s app.db -b "file://$T/rep" 2>w.log & local pid=$!
  wait_log "app: parked at TXID" w.log
  parked_alone "$pid" app.db
  writer app.db 20 0.01 100
  wait_log "app: woken: started at TXID [0-9a-f]*, WAL [0-9a-f]\{8\}:" w.log
  wait_count 2 "app: parked at TXID" w.log
  parked_alone "$pid" app.db
  writer app.db 5 0 200
  wait_count 3 "app: parked at TXID" w.log
  stop_watch "$pid"
  cat w.log >&2
  # the first start resynced (no acknowledged position); every wake-up
  # continued the WAL where the acknowledgement left it
  [ "$(grep -c "wal-tail: resync:" w.log)" -eq 1 ]
  [ "$(grep -c "wal-tail: resume at frame" w.log)" -ge 2 ]
  walsync restore app -b "file://$T/rep" -o r.db
  same app.db r.db
}

@test "parking: the application restarts the WAL while the database is parked: the wake-up resyncs, sends only changed pages, loses nothing" {
  cd "$T"
  mkdb app.db
  sqlite3 app.db "INSERT INTO t(v) SELECT hex(randomblob(500)) FROM generate_series(1, 400)"
  hold app.db
  writer app.db 5 0
  walsync watch -v --park-after 1s app.db -b "file://$T/rep" 2>w.log & local pid=$!
  wait_log "app: parked at TXID" w.log
  local before; before=$(ls rep/app/ltx/0 | wc -l)
  local total; total=$(sqlite3 app.db "PRAGMA page_count")
  [ "$total" -gt 100 ]
  # the wake-up comes too late: the application writes, checkpoints and
  # restarts the WAL, and writes again, all before walsync runs
  kill -STOP "$pid"
  python3 - <<'PY'
import sqlite3
c = sqlite3.connect("app.db", isolation_level=None)
c.execute("UPDATE t SET v = 'changed before the restart' WHERE id = 7")
busy, log, done = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
assert busy == 0 and log == done == 0, (busy, log, done)
c.execute("UPDATE t SET v = 'changed after the restart' WHERE id = 300")
c.execute("INSERT INTO t(v) VALUES('new row')")
PY
  kill -CONT "$pid"
  wait_count 2 "app: parked at TXID" w.log
  stop_watch "$pid"
  cat w.log >&2
  grep -q "app: wal-tail: resume: the WAL no longer holds the position" w.log
  [ "$(grep -c "wal-tail: resync:" w.log)" -eq 2 ]
  # only the changed pages went out: a few of the database's pages
  local f n=0
  for f in $(ls rep/app/ltx/0 | tail -n +$((before + 1))); do
    [ "$(pages "rep/app/ltx/0/$f")" -le 6 ]
    n=$((n + 1))
  done
  [ "$n" -ge 1 ]
  walsync restore app -b "file://$T/rep" -o r.db
  same app.db r.db
  [ "$(sqlite3 r.db "SELECT v FROM t WHERE id = 7")" = "changed before the restart" ]
}

@test "parking: the first check of a start parks a database with nothing new (no pipeline); one that changed while walsync was down starts" {
  cd "$T"
  mkdb a.db; mkdb b.db
  hold a.db; hold b.db
  writer a.db 5 0; writer b.db 5 0
  walsync watch a.db b.db -b "file://$T/rep" 2>w1.log & local pid=$!
  wait_log "watch: 2 databases checked in [0-9]* ms: 0 parked" w1.log
  for n in a b; do wait_log "$n: started at" w1.log; done
  stop_watch "$pid"
  writer b.db 5 0 100
  walsync watch -v a.db b.db -b "file://$T/rep" 2>w2.log & pid=$!
  wait_log "watch: 2 databases checked in [0-9]* ms: 1 parked (nothing new since their acknowledgement), 1 to start" w2.log
  wait_log "b: parked at TXID" w2.log
  parked_alone "$pid" .db
  writer a.db 5 0 200
  wait_log "a: woken: started at" w2.log
  wait_log "a: parked at TXID" w2.log
  stop_watch "$pid"
  ! grep -q "^walsync: a: started at" w2.log
  ! grep -q "wal-tail: resync" w2.log
  for n in a b; do
    walsync restore $n -b "file://$T/rep" -o r$n.db
    same $n.db r$n.db
  done
}

@test "parking: --max-active 1: three databases take turns in the one slot; all replicated" {
  cd "$T"
  for n in a b c; do mkdb $n.db; done
  walsync watch --max-active 1 --park-after 500ms a.db b.db c.db -b "file://$T/rep" 2>w.log & local pid=$!
  wait_log "watch: 3 databases checked in [0-9]* ms: 0 parked" w.log
  for n in a b c; do writer $n.db 20 0.01 100 & done
  wait $(jobs -p | grep -v "^$pid$")
  for n in a b c; do
    local i
    for i in $(seq 1 300); do
      rm -f probe.db
      walsync restore $n -b "file://$T/rep" -o probe.db 2>/dev/null && same $n.db probe.db 2>/dev/null && break
      sleep 0.2
    done
    same $n.db probe.db
  done
  stop_watch "$pid"
}

@test "walsync watch: --max-active and --park-after are checked: one line, exit 2, nothing started" {
  cd "$T"
  local v
  for v in -1 0 1001 abc 1.5; do
    run walsync watch --max-active "$v" x.db -b "file://$T/rep"
    [ "$status" -eq 2 ]
    [ "${#lines[@]}" -eq 1 ]
  done
  run walsync watch --max-active -1 x.db -b "file://$T/rep"
  assert_output "walsync: --max-active: Value -1 not in range 1 to 1000 (see --help)"
  run walsync watch --max-active 0 x.db -b "file://$T/rep"
  assert_output "walsync: --max-active: Value 0 not in range 1 to 1000 (see --help)"
  run walsync watch --max-active abc x.db -b "file://$T/rep"
  assert_output "walsync: --max-active: Value abc not in range 1 to 1000 (see --help)"
  run walsync watch --checkpoint-pages -1 x.db -b "file://$T/rep"
  [ "$status" -eq 2 ]
  assert_output "walsync: --checkpoint-pages: Value -1 not in range 0 to 4294967295 (see --help)"
  printf 'url = file://%s/rep\nmax-active = 0\n' "$T" > bad.conf
  run walsync watch -c bad.conf x.db
  [ "$status" -eq 2 ]
  assert_output "walsync: bad.conf:2: not a number from 1 to 1000: 0"
  run walsync watch --park-after 2d x.db -b "file://$T/rep"
  [ "$status" -eq 2 ]
  assert_output "walsync: --park-after: at most 1d"
  [ ! -e x.db-walsync ] && [ ! -e rep ]
}

# requests KIND DB FILE: walsync_requests_total of one database and kind.
requests() { sed -n "s/^walsync_requests_total{db=\"$2\",kind=\"$1\"} //p" "$3"; }

@test "parking: status shows a parked database as parked; a wake-up after a park sends no LIST or GET, only its PUT" {
  cd "$T"
  mkdb app.db
  hold app.db
  writer app.db 5 0
  walsync watch -v --park-after 500ms app.db -b "file://$T/rep" --metrics-file m.prom --metrics-interval 100ms \
    2>w.log & local pid=$!
  wait_log "app: parked at TXID" w.log
  wait_log 'walsync_parked{db="app"} 1' m.prom
  run walsync status --metrics-file m.prom
  assert_success
  assert_line --regexp '^app +[0-9a-f]{16} +0\.0s .* parked *$'
  cp m.prom parked1.prom
  local k
  [ "$(requests list app parked1.prom)" -ge 1 ]  # the first start checked the replica
  writer app.db 3 0 100
  wait_log "app: woken: started at" w.log
  wait_count 2 "app: parked at TXID" w.log
  # the metrics written after the second park: parked again, its PUT counted
  local i
  for i in $(seq 1 300); do
    cp m.prom parked2.prom
    grep -q 'walsync_parked{db="app"} 1' parked2.prom &&
      [ "$(requests put app parked2.prom)" -gt "$(requests put app parked1.prom)" ] && break
    sleep 0.1
  done
  for k in list get delete; do
    [ "$(requests $k app parked2.prom)" = "$(requests $k app parked1.prom)" ] || fail "$k: $(requests $k app parked1.prom) -> $(requests $k app parked2.prom)"
  done
  [ "$(requests put app parked2.prom)" -gt "$(requests put app parked1.prom)" ]
  stop_watch "$pid"
  walsync restore app -b "file://$T/rep" -o r.db
  same app.db r.db
}

@test "discovery: --dir/--pattern: tenants present at start and created later are backed up to BASE/REL and restore exactly; others ignored with one line, once" {
  cd "$T"
  mkdir -p app/t1 app/t2 app/t1/deep/x
  mkdb app/t1/app.db; mkdb app/t2/app.db
  writer app/t1/app.db 5 0; writer app/t2/app.db 5 0
  sqlite3 app/t2/old.db "CREATE TABLE x(a)"  # rollback journal
  echo hello > app/t2/notes.db
  mkdb elsewhere.db; ln -s "$T/elsewhere.db" app/t2/link.db
  mkdb app/t1/deep/x/app.db  # deeper than the pattern
  walsync watch -v --park-after 500ms --dir app --pattern '*/*.db' -b "file://$T/rep" \
    --metrics-file m.prom --metrics-interval 100ms 2>w.log & local pid=$!
  wait_log "watch: 2 databases checked in [0-9]* ms" w.log
  # a tenant that arrives later (and one more in an existing directory)
  mkdir app/t3
  mkdb app/t3/app.db; writer app/t3/app.db 5 0
  mkdb app/t1/extra.db; writer app/t1/extra.db 3 0
  wait_log "t3/app: found app/t3/app.db" w.log
  wait_log "t1/extra: found app/t1/extra.db" w.log
  writer app/t1/app.db 5 0 100
  for n in t1/app t2/app t3/app t1/extra; do wait_log "$n: parked at TXID" w.log; done
  # the application touches the ignored files again: still one line each
  sqlite3 app/t2/old.db "INSERT INTO x VALUES(1)"; echo more >> app/t2/notes.db
  writer app/t3/app.db 2 0 100
  wait_count 2 "t3/app: parked at TXID" w.log
  stop_watch "$pid"
  cat w.log >&2
  [ "$(grep -c "app/t2/old.db: not in WAL mode (PRAGMA journal_mode=WAL): ignored" w.log)" -eq 1 ]
  [ "$(grep -c "app/t2/notes.db: not a SQLite database: ignored" w.log)" -eq 1 ]
  [ "$(grep -c "app/t2/link.db: a symbolic link (not followed: watch its target's directory): ignored" w.log)" -eq 1 ]
  ! grep -q "deep" w.log
  [ ! -e rep/t1/deep ] && [ ! -e rep/t2/old ] && [ ! -e rep/t2/notes ] && [ ! -e rep/t2/link ]
  for n in t1/app t2/app t3/app t1/extra; do
    walsync restore "$n" -b "file://$T/rep" -o "r-${n//\//-}.db"
    same "app/$n.db" "r-${n//\//-}.db"
  done
}

@test "discovery: a tenant whose database is deleted is stopped and forgotten; its replica stays; one created again under the name is picked up" {
  cd "$T"
  mkdir -p app/a app/b
  mkdb app/a/app.db; mkdb app/b/app.db
  writer app/a/app.db 5 0; writer app/b/app.db 5 0
  walsync watch -v --park-after 500ms --dir app --pattern '*/app.db' -b "file://$T/rep" \
    --metrics-file m.prom --metrics-interval 100ms 2>w.log & local pid=$!
  for n in a b; do wait_log "$n/app: parked at TXID" w.log; done
  cp app/b/app.db saved.db
  rm -r app/b
  wait_log "b/app: app/b/app.db is gone: stopped; its replica stays" w.log
  local i
  for i in $(seq 1 100); do ! grep -q 'db="b/app"' m.prom && break; sleep 0.1; done
  ! grep -q 'db="b/app"' m.prom
  grep -q 'walsync_parked{db="a/app"} 1' m.prom
  # a running tenant removed mid-write: stopped too
  writer app/a/app.db 50 0.02 100 &
  local wp=$!
  wait_log "a/app: woken: started at" w.log
  wait "$wp"
  rm app/a/app.db app/a/app.db-wal app/a/app.db-shm 2>/dev/null || true
  wait_log "a/app: app/a/app.db is gone: stopped; its replica stays" w.log
  # b comes back: a new database under the old name
  mkdir app/b
  mkdb app/b/app.db; writer app/b/app.db 3 0 500
  wait_count 1 "b/app: found app/b/app.db" w.log
  wait_count 2 "b/app: parked at TXID" w.log
  kill -0 "$pid"
  stop_watch "$pid"
  cat w.log >&2
  ! grep -q "failed" w.log
  walsync restore b/app -b "file://$T/rep" -o rb.db
  same app/b/app.db rb.db
  walsync restore a/app -b "file://$T/rep" -o ra.db
  [ "$(sqlite3 ra.db 'PRAGMA integrity_check')" = ok ]
}

@test "discovery: --pattern and --dir are checked" {
  cd "$T"
  mkdir d
  run walsync watch --dir d --pattern '/abs/*.db' -b "file://$T/rep"
  [ "$status" -eq 2 ]
  assert_output "walsync: --pattern /abs/*.db: must be relative to the directory"
  run walsync watch --dir d --pattern '../*.db' -b "file://$T/rep"
  [ "$status" -eq 2 ]
  assert_output "walsync: --pattern ../*.db: a '..' component"
  run walsync watch --dir d --pattern 'a/b/c/d/e/f/g/h/i.db' -b "file://$T/rep"
  [ "$status" -eq 2 ]
  assert_output "walsync: --pattern a/b/c/d/e/f/g/h/i.db: more than 8 levels"
  run walsync watch --pattern '*.db' -b "file://$T/rep" x.db
  [ "$status" -eq 2 ]
  assert_output "walsync: --pattern needs --dir"
  run walsync watch --dir missing -b "file://$T/rep"
  [ "$status" -eq 1 ]
  assert_output "walsync: missing: No such file or directory"
  [ ! -e rep ]
}

@test "status at scale: a summary line first, the worst first, --json one object per database; --metrics-databases bounds the per-database series, the totals count all" {
  cd "$T"
  mkdir app
  local i
  for i in 1 2 3 4 5; do mkdb app/t$i.db; writer app/t$i.db 2 0; done
  walsync watch --park-after 500ms --dir app -b "file://$T/rep" --metrics-file m.prom --metrics-interval 100ms \
    --metrics-databases 2 2>w.log & local pid=$!
  for i in $(seq 1 600); do grep -q 'walsync_databases{state="parked"} 5' m.prom 2>/dev/null && break; sleep 0.1; done
  # bounded: the totals count all five, per-database series for two
  grep -q 'walsync_databases{state="parked"} 5' m.prom
  grep -q '^walsync_databases_with_series 2$' m.prom
  [ "$(grep -c '^walsync_up{' m.prom)" -eq 2 ]
  run walsync status --metrics-file m.prom
  assert_success
  assert_line --index 0 "5 databases: 0 active, 0 queued, 5 parked, 0 down, 0 failed; max lag 0.0s; the worst 2 below"
  assert_line --index 1 --regexp '^NAME +TXID'
  assert_line --index 2 --regexp '^t1 +[0-9a-f]{16} +0\.0s .* parked *$'
  assert_line --index 3 --regexp '^t2 +[0-9a-f]{16} +0\.0s .* parked *$'
  [ "${#lines[@]}" -eq 4 ]
  stop_watch "$pid"
  walsync watch --park-after 500ms --dir app -b "file://$T/rep" --metrics-file m.prom --metrics-interval 100ms 2>w2.log & pid=$!
  for i in $(seq 1 600); do grep -q '^walsync_databases_with_series 5$' m.prom 2>/dev/null && break; sleep 0.1; done
  grep -q 'walsync_databases{state="parked"} 5' m.prom
  run walsync status --metrics-file m.prom --json
  assert_success
  [ "${#lines[@]}" -eq 7 ]
  assert_line --index 0 "["
  assert_line --index 1 --regexp '^\{"name":"t1","state":"parked","txid":"[0-9a-f]{16}","lag_seconds":0\.000,"last_success":("[-0-9T:.Z]+"|null),"errors":0,"restarts":0,"files":[0-9]+,"bytes":[0-9]+,"requests":\{"put":[0-9]+,"get":[0-9]+,"list":[0-9]+,"delete":0\}\},$'
  assert_line --index 5 --regexp '^\{"name":"t5",.*\}$'
  assert_line --index 6 "]"
  stop_watch "$pid"
  python3 -c 'import json, sys; d = json.loads(sys.stdin.read()); assert [x["name"] for x in d] == ["t1", "t2", "t3", "t4", "t5"], d' <<< "$output"
}
