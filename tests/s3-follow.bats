#!/usr/bin/env bats
# s3-get --follow: stream a restore, then each new file; cheap idle polling;
# --after resumes; gaps at level 0 bridged by higher levels or a snapshot.
load test_helper/common
load test_helper/s3

setup_file() {
  load test_helper/common
  load test_helper/s3
  build_compactor
  build_chain "$BATS_FILE_TMPDIR/chain"
}

setup() {
  require_s3
  CHAIN="$BATS_FILE_TMPDIR/chain"
}

teardown() {
  [ -n "${FPID:-}" ] && kill "$FPID" 2>/dev/null; [ -n "${APID:-}" ] && kill "$APID" 2>/dev/null; stop_proxy
  true
}

l0() { echo "$CHAIN/l0/$(hex16 "$1")-$(hex16 "$1").ltx"; }
# put_l0 URL FROM TO: level-0 files FROM..TO of the fixture
put_l0() {
  local i files=()
  for i in $(seq "$2" "$3"); do files+=("$(l0 "$i")"); done
  cat "${files[@]}" | s3-put --sync-interval 0 "$1"
}
# bytes FROM TO: size of the level-0 files FROM..TO
bytes() {
  local i n=0
  for i in $(seq "$1" "$2"); do n=$((n + $(stat -c %s "$(l0 "$i")"))); done
  echo "$n"
}
# wait_size FILE N SECONDS: until FILE holds N bytes
wait_size() {
  local end=$(( $(date +%s%N) + $3 * 1000000000 ))
  while [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" -lt "$2" ]; do
    [ "$(date +%s%N)" -lt "$end" ] || { echo "$1: $(stat -c %s "$1") bytes, want $2" >&2; return 1; }
    sleep 0.02
  done
}
ts_err() { cat "$T/err" >&3; }
# wait_restores CMD: until CMD's output followed by $T/out (what the follower
# streamed so far) restores the fixture's last state, db.100 (60 s).
wait_restores() {
  local i
  for i in $(seq 1 300); do
    rm -f "$T/w.db"
    bash -c "set -o pipefail; { $1; cat '$T/out'; } | ltx-apply '$T/w.db'" 2>/dev/null &&
      cmp -s "$T/w.db" "$CHAIN/db.100" && return 0
    sleep 0.2
  done
  echo "the follower's output never restored db.100" >&2
  cat "$T/err" >&2
  return 1
}
# stop_follower: SIGTERM, expect exit 0
stop_follower() {
  kill -TERM "$FPID"
  local rc=0
  wait "$FPID" || rc=$?
  FPID=
  [ "$rc" -eq 0 ] || { echo "follower exit $rc" >&2; cat "$T/err" >&2; return 1; }
}

@test "s3-follow: new files from s3-put are streamed in order as they arrive; SIGTERM exits 0" {
  # Behaviour only: each file arrives, in order, within a generous bound.
  # How soon (put to stdout, in intervals) is measured by bench/follow.
  for url in $(backends f); do
    put_l0 "$url" 1 50
    s3-get --follow --interval 1s --max-interval 0 -v "$url" > "$T/out" 2> "$T/err" &
    FPID=$!
    wait_size "$T/out" "$(bytes 1 50)" 60
    for i in 51 52 53; do
      put_l0 "$url" "$i" "$i"
      wait_size "$T/out" "$(bytes 1 "$i")" 60 || { ts_err; false; }
      files=(); for j in $(seq 1 "$i"); do files+=("$(l0 "$j")"); done
      cat "${files[@]}" | cmp - "$T/out"  # exactly the files so far, in order
    done
    put_l0 "$url" 54 60
    wait_size "$T/out" "$(bytes 1 60)" 60
    stop_follower
    grep -q "stopped at TXID $(hex16 60)" "$T/err"
    rm -f "$T/r.db"
    ltx-apply "$T/r.db" < "$T/out"
    cmp "$T/r.db" "$CHAIN/db.60"
    rm -f "$T/out"
  done
}

@test "s3-follow: idle polling is at most one small LIST per interval and nothing else" {
  url=$(s3_url idle)
  put_l0 "$url" 1 20
  start_proxy
  s3-get --follow --interval 250ms --max-interval 0 --endpoint "$PROXY" "$url" > "$T/out" 2> "$T/err" &
  FPID=$!
  wait_size "$T/out" "$(bytes 1 20)" 60
  sleep 0.5
  t0=$(date +%s%N)
  : > "$PROXY_LOG"
  sleep 3
  cp "$PROXY_LOG" "$T/idle.log"
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  stop_follower
  n=$(grep -c . "$T/idle.log" || true)
  echo "idle requests in $ms ms at 250ms: $n" >&3
  # at most one per interval of the window (a busy machine may delay polls,
  # never add them)
  [ "$n" -ge 1 ] && [ "$n" -le $((ms / 250 + 1)) ]
  # every idle request is a ListObjectsV2 of level 0 starting after TXID 20
  [ "$(grep -cE '^GET /[^ ]*list-type=2[^ ]*start-after=[^ ]*0014-0000000000000014\.ltx' "$T/idle.log")" -eq "$n" ]
  # file://: the -v summary counts polls
  furl="file://$T/idlef"
  put_l0 "$furl" 1 5
  t0=$(date +%s%N)
  s3-get --follow --interval 100ms --max-interval 0 -v "$furl" > "$T/out2" 2> "$T/err" &
  FPID=$!
  wait_size "$T/out2" "$(bytes 1 5)" 60
  sleep 1.5
  stop_follower
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  polls=$(sed -n 's/.* \([0-9]*\) polls.*/\1/p' "$T/err")
  echo "file:// polls in $ms ms at 100ms: $polls" >&3
  [ "$polls" -ge 1 ] && [ "$polls" -le $((ms / 100 + 1)) ]
}

@test "s3-follow: an idle follower backs off to --max-interval and is back at --interval after a change" {
  url=$(s3_url backoff)
  put_l0 "$url" 1 20
  start_proxy
  s3-get --follow --interval 100ms --max-interval 800ms -v --endpoint "$PROXY" "$url" > "$T/out" 2> "$T/err" &
  FPID=$!
  wait_size "$T/out" "$(bytes 1 20)" 60
  # the period doubles up to its bound while nothing changes
  for _ in $(seq 1 300); do grep -q "polling every 800 ms" "$T/err" && break; sleep 0.1; done
  t0=$(date +%s%N)
  : > "$PROXY_LOG"
  sleep 3
  n=$(grep -c . "$PROXY_LOG" || true)
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "idle requests in $ms ms at 100ms..800ms: $n" >&3
  [ "$n" -le $((ms / 800 + 1)) ] || fail "$n requests in $ms ms at 800 ms"
  # a new file is found, and the period is back at --interval
  put_l0 "$url" 21 21
  wait_size "$T/out" "$(bytes 1 21)" 60
  for _ in $(seq 1 300); do [ "$(grep -c "polling every" "$T/err")" -ge 4 ] && break; sleep 0.1; done
  stop_follower
  run bash -c "grep -o 'polling every [0-9]* ms' '$T/err' | head -n 4"
  assert_output "$(printf 'polling every %s ms\n' 200 400 800 100)"
}

@test "s3-follow: --after resumes without re-downloading" {
  for url in $(backends after); do
    put_l0 "$url" 1 60
    s3-get --follow --after "$(hex16 50)" --interval 100ms "$url" > "$T/out" 2> "$T/err" &
    FPID=$!
    wait_size "$T/out" "$(bytes 51 60)" 60
    sleep 0.3
    stop_follower
    files=(); for i in $(seq 51 60); do files+=("$(l0 "$i")"); done
    cat "${files[@]}" | cmp - "$T/out"
    # the TXID may be short hex; a position at the latest streams nothing
    s3-get --follow --after 3c --interval 100ms "$url" > "$T/out" 2> "$T/err" &
    FPID=$!
    sleep 1
    stop_follower
    [ ! -s "$T/out" ]
    # position 0 (ltx-apply --position of a new replica): restore first
    s3-get --follow --after 0000000000000000 --interval 100ms "$url" > "$T/out" 2> "$T/err" &
    FPID=$!
    wait_size "$T/out" "$(bytes 1 60)" 60
    stop_follower
  done
}

@test "s3-follow: into ltx-apply --live, restarted from the replica's position" {
  for url in $(backends live); do
    put_l0 "$url" 1 40
    rm -f "$T/r.db"; rm -rf "$T/r.db-ltx" "$T/p"; mkfifo "$T/p"
    ltx-apply --live "$T/r.db" < "$T/p" 2> "$T/err" &
    APID=$!
    s3-get --follow --after "$(ltx-apply --position "$T/r.db")" --interval 100ms "$url" > "$T/p" &
    FPID=$!
    want() { sqlite3 "$CHAIN/db.$1" "select count(*), sum(length(v)) from t"; }
    wait_q() {
      for _ in $(seq 1 600); do
        [ "$(sqlite3 "$T/r.db" "select count(*), sum(length(v)) from t" 2>/dev/null)" = "$(want "$1")" ] && return 0
        sleep 0.1
      done
      cat "$T/err" >&2; return 1
    }
    wait_q 40
    put_l0 "$url" 41 45
    wait_q 45
    stop_follower
    wait "$APID"
    [ "$(ltx-apply --position "$T/r.db")" = "$(hex16 45)" ]
    put_l0 "$url" 46 50
    rm -f "$T/p"; mkfifo "$T/p"
    ltx-apply --live "$T/r.db" < "$T/p" 2> "$T/err" &
    APID=$!
    s3-get --follow --after "$(ltx-apply --position "$T/r.db")" --interval 100ms -v "$url" > "$T/p" 2> "$T/err2" &
    FPID=$!
    wait_q 50
    stop_follower
    wait "$APID"
    grep -q "stopped at TXID $(hex16 50): 5 files" "$T/err2"
    [ "$(sqlite3 "$T/r.db" "select count(*), sum(length(v)) from t")" = "$(want 50)" ]
    run sqlite3 "$T/r.db" "pragma integrity_check"
    assert_output ok
  done
}

@test "s3-follow: a gap left by deleted level-0 files is bridged by level 1, or restarted from a snapshot" {
  for url in $(backends gap); do
    upload_chain "$CHAIN" "$url"
    for i in $(seq 51 70); do s3-rm "$url" "0/$(hex16 "$i")-$(hex16 "$i").ltx"; done
    # at TXID 50: levels 1 (51-60, 61-70, ...) bridge the missing level-0 files
    s3-get --follow --after 32 --interval 100ms -v "$url" > "$T/out" 2> "$T/err" &
    FPID=$!
    wait_restores "s3-get --txid 32 '$url'"
    stop_follower
    grep -q "continuing from TXID $(hex16 50)" "$T/err"
    # at TXID 32 with 33 and level 1's 31-40 gone: only the snapshot at 50 continues
    s3-rm "$url" "0/$(hex16 33)-$(hex16 33).ltx" "1/$(hex16 31)-$(hex16 40).ltx"
    s3-get --follow --after 20 --interval 100ms -v "$url" > "$T/out" 2> "$T/err" &
    FPID=$!
    wait_restores :
    stop_follower
    grep -q "restarting from snapshot 9/$(hex16 1)-$(hex16 50).ltx" "$T/err"
    # a gap nothing bridges: exit 3 naming it
    s3-rm "$url" "9/$(hex16 1)-$(hex16 50).ltx"
    run bash -c "s3-get --follow --after 20 '$url' > /dev/null"
    assert_failure 3
    assert_output --partial "gap after TXID $(hex16 32)"
  done
}

@test "s3-follow: the reader going away ends the follower quietly, killed by SIGPIPE" {
  url="file://$T/pipe"
  put_l0 "$url" 1 30
  run bash -c "s3-get --follow --interval 100ms '$url' 2>'$T/err' | head -c 10 > /dev/null; echo \${PIPESTATUS[0]}"
  assert_output 141
  [ ! -s "$T/err" ]
  # idle when the reader leaves: noticed within an interval
  put_l0 "file://$T/pipe2" 1 1
  run timeout 60 bash -c "s3-get --follow --interval 100ms 'file://$T/pipe2' 2>'$T/err' | { head -c 10 >/dev/null; sleep 0.5; }; echo \${PIPESTATUS[0]}"
  assert_output 141
  [ ! -s "$T/err" ]
}

@test "s3-follow: usage errors" {
  url="file://$T/u"
  run s3-get --interval 1s "$url"
  assert_failure 2
  run bash -c "s3-get --follow --interval 1y '$url' > /dev/null"
  assert_failure 2
  assert_output --partial "--interval 1y"
  run s3-get --follow --txid 3 "$url"
  assert_failure 2
  run s3-get --follow --after zz "$url"
  assert_failure 2
  # a position past the replica's end: a different or reset replica
  put_l0 "$url" 1 5
  run bash -c "s3-get --follow --after 9 '$url' > /dev/null"
  assert_failure 3
  assert_output --partial "latest TXID $(hex16 5) is behind position $(hex16 9)"
}
