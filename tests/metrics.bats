#!/usr/bin/env bats
# walsync watch --metrics-addr: GET /metrics (the text of --metrics-file)
# and /healthz over HTTP from the supervisor's loop; 404, 405, a silent
# client that does not hold up replication, a failed database, and
# addresses refused at start.
load test_helper/common
load test_helper/s3
load test_helper/watch

# start_watch ARGS...: walsync watch ARGS --metrics-addr 127.0.0.1:0 in the
# background; PID, and URL (http://127.0.0.1:PORT) from its log.
start_watch() {
  walsync watch "$@" --metrics-addr 127.0.0.1:0 2>"$T/watch.log" &
  PID=$!
  wait_log "metrics at http://127.0.0.1:" "$T/watch.log"
  URL=$(sed -n 's|^walsync: watch: metrics at \(http://127.0.0.1:[0-9]*\)/metrics.*|\1|p' "$T/watch.log")
  [ -n "$URL" ]
}

# get PATH [curl args]: "STATUS" on the first line, then the body.
get() {
  local p=$1; shift
  curl -s -m 10 -o "$T/body" -w '%{http_code}' "$@" "$URL$p"
  echo
  cat "$T/body"
}

txid() { get /metrics | sed -n "s/^walsync_position_txid{db=\"$1\"} //p"; }

@test "metrics: GET /metrics is the metrics file's text and follows the writes; /healthz ok; 404; 405" {
  cd "$T"
  mkdb app.db
  start_watch app.db -b "file://$T/rep" --metrics-file m.prom --metrics-interval 200ms
  run get /metrics
  assert_line --index 0 200
  assert_output --partial '# TYPE walsync_position_txid gauge'
  assert_output --partial 'walsync_requests_total{db="app",kind="put"}'
  [ "$(curl -s -m 10 -o /dev/null -w '%{content_type}' "$URL/metrics")" = "text/plain; version=0.0.4; charset=utf-8" ]
  wait_log "checked in" watch.log
  # the same text as the file, value for value once nothing changes
  local i
  for i in $(seq 1 100); do [ "$(txid app)" = 1 ] && break; sleep 0.1; done
  [ "$(txid app)" = 1 ]
  for i in $(seq 1 100); do [ "$(get /metrics | tail -n +2)" = "$(cat m.prom)" ] && break; sleep 0.1; done
  [ "$(get /metrics | tail -n +2)" = "$(cat m.prom)" ]
  writer app.db 5 0
  caught_up "file://$T/rep" app app.db
  [ "$(txid app)" -gt 1 ]
  local last; last=$(walsync ls app -b "file://$T/rep" | tail -n 1 | cut -f1 | cut -d- -f2 | cut -d. -f1)
  [ "$(txid app)" = "$((16#$last))" ]  # the replica's latest file
  run get /healthz
  assert_output $'200\nok'
  run get /nope
  assert_line --index 0 404
  run get /metrics -X POST -d x=1
  assert_line --index 0 405
  run curl -s -m 10 -D - -o /dev/null -X DELETE "$URL/metrics"
  assert_output --partial "Allow: GET"
  run get '/metrics?x=1'
  assert_line --index 0 200
  stop_watch "$PID"
}

@test "metrics: a client that connects and sends nothing, and one that sends too much, do not stop replication or the server" {
  cd "$T"
  mkdb app.db
  start_watch app.db -b "file://$T/rep"
  exec 8<>"/dev/tcp/127.0.0.1/${URL##*:}"  # silent, held open
  head -c 100000 /dev/zero | tr '\0' a > big
  run curl -s -m 10 -o /dev/null -w '%{http_code}' -H "X-Big: $(cat big)" "$URL/metrics"
  [ "$output" = 400 ]
  local before; before=$(txid app)
  writer app.db 5 0
  caught_up "file://$T/rep" app app.db
  [ "$(txid app)" -gt "$before" ]
  exec 8>&-
  stop_watch "$PID"
}

@test "metrics: /healthz is 503 with one line per failed database; a parked one is healthy" {
  cd "$T"
  mkdb a.db
  sqlite3 b.db 'CREATE TABLE t(x)'  # rollback journal: cannot be backed up
  start_watch a.db b.db -b "file://$T/rep" --park-after 500ms -v
  wait_log "a: parked at TXID" watch.log
  wait_log "b: failed: .*not in WAL mode" watch.log
  run get /healthz
  assert_line --index 0 503
  assert_line --index 1 --regexp '^b: failed: wal-tail: .*b.db: not in WAL mode'
  [ "${#lines[@]}" -eq 2 ]
  kill -TERM "$PID"
  local rc=0
  wait "$PID" || rc=$?
  [ "$rc" -eq 1 ]
  # one database, parked: healthy
  start_watch a.db -b "file://$T/rep" --park-after 500ms -v
  wait_log "a: parked at TXID\|1 parked" watch.log
  run get /healthz
  assert_output $'200\nok'
  stop_watch "$PID"
}

@test "metrics: /healthz flips to 503 (retrying, and why) when S3 is taken away under a write" {
  require_s3
  cd "$T"
  mkdb app.db
  start_proxy
  start_watch app.db -b "$(s3_url base)" --endpoint "$PROXY" --retries 0 --connect-timeout 1 --timeout 2
  local i
  for i in $(seq 1 100); do [ "$(txid app)" = 1 ] && break; sleep 0.1; done
  run get /healthz
  assert_output $'200\nok'
  stop_proxy
  writer app.db 3 0
  for i in $(seq 1 300); do [ "$(get /healthz | head -n 1)" = 503 ] && break; sleep 0.1; done
  run get /healthz
  assert_line --index 0 503
  assert_line --index 1 --regexp '^app: retrying: '
  [ "${#lines[@]}" -eq 2 ]
  stop_watch "$PID"
}

@test "metrics: a busy address is refused at start (exit 1), a malformed one is a usage error (exit 2); metrics-addr in the config" {
  cd "$T"
  mkdb app.db
  start_watch app.db -b "file://$T/rep"
  local addr=${URL#http://}
  run walsync watch app.db -b "file://$T/rep2" --state-dir "$T/st2" --metrics-addr "$addr"
  [ "$status" -eq 1 ]
  assert_output "walsync: --metrics-addr: $addr: Address already in use"
  [ ! -e "$T/st2" ]
  run walsync watch app.db -b "file://$T/rep2" --metrics-addr 9090
  [ "$status" -eq 2 ]
  assert_output "walsync: --metrics-addr: 9090: want HOST:PORT (127.0.0.1:9090, [::1]:9090)"
  run walsync watch app.db -b "file://$T/rep2" --metrics-addr 127.0.0.1:99999
  [ "$status" -eq 2 ]
  assert_output "walsync: --metrics-addr: 127.0.0.1:99999: bad port '99999'"
  stop_watch "$PID"
  printf 'url = file://%s/rep\nmetrics-addr = 127.0.0.1:0\n' "$T" > w.conf
  walsync watch -c w.conf app.db 2>"$T/watch.log" &
  PID=$!
  wait_log "metrics at http://127.0.0.1:" "$T/watch.log"
  stop_watch "$PID"
}
