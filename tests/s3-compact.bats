#!/usr/bin/env bats
# s3-compact and s3-retain: a simulated week (injected clock) on file:// and
# on a real S3 server; windows, idempotence, crash safety, dry runs.
load test_helper/common
load test_helper/s3

T0=1704067200  # 2024-01-01T00:00:00Z, the fixture's first instant

setup_file() {
  load test_helper/common
  W="$BATS_FILE_TMPDIR/week"
  mkdir -p "$W/l0"
  python3 "$REPO_ROOT/tests/tools/gen-week.py" "$W" 7
  local n t s
  while read -r n t s; do
    if [ "$n" = 1 ]; then
      ltx-encode --db "$W/base.db" -s "$W/state" --txid 1 --timestamp "$(date -u -d "@$t" +%FT%TZ)" > "$W/l0/$n.ltx"
    else
      ltx-encode -s "$W/state" --timestamp "$(date -u -d "@$t" +%FT%TZ)" < "$W/wal/$n" > "$W/l0/$n.ltx"
    fi
  done < "$W/points"
}

setup() {
  require_s3
  W="$BATS_FILE_TMPDIR/week"
}

rfc() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
# An idle run's LISTs: level 9 lists the replica (one page here); level L
# lists L and up, then level L-1's snapshots and its files after the
# covered TXID, whatever level L-1 holds before it.
idle_lists() { if [ "$1" = 9 ]; then echo 1; else echo 3; fi; }

# upload_hour URL H: level-0 files stamped in hour H of the week.
upload_hour() {
  local url=$1 a=$((T0 + $2 * 3600)) files
  files=$(awk -v a="$a" -v b="$((a + 3600))" -v d="$W/l0" '$2 >= a && $2 < b { printf "%s/%d.ltx ", d, $1 }' "$W/points")
  [ -z "$files" ] || cat $files | s3-put --sync-interval 0 "$1"
}

# simulate URL HOURS [s3-retain args]: upload hour by hour; at the end of
# every hour compact levels 1, 2, 3; at midnight snapshot (level 9) and, with
# args, run s3-retain. Object counts at each midnight go to $T/counts.
simulate() {
  local url=$1 hours=$2 h now l; shift 2
  : > "$T/counts"
  for h in $(seq 0 $((hours - 1))); do
    upload_hour "$url" "$h" || return 1
    now=$(rfc $((T0 + (h + 1) * 3600)))
    for l in 1 2 3; do s3-compact -l $l --now "$now" "$url" || return 1; done
    if [ $(((h + 1) % 24)) -eq 0 ]; then
      s3-compact -l 9 --now "$now" "$url" || return 1
      if [ $# -gt 0 ]; then s3-retain --now "$now" "$@" "$url" || return 1; fi
      echo "$now $(s3-ls "$url" | wc -l) $(s3-ls "$url" | awk '{ s += $2 } END { print s + 0 }')" >> "$T/counts"
    fi
  done
}

# expect_at EPOCH [ENDS]: the database digest a restore to EPOCH must give:
# that of the last TXID stamped at or before it (among the TXIDs in the
# file ENDS, one a line, if given: the retained restore points).
expect_at() {
  if [ -n "${2:-}" ]; then
    awk -v t="$1" 'NR == FNR { ok[$1] = 1; next } ($1 in ok) && $2 <= t { s = $3 } END { print s }' "$2" "$W/points"
  else
    awk -v t="$1" '$2 <= t { s = $3 } END { print s }' "$W/points"
  fi
}

# restore_at URL EPOCH [ENDS]: restore to that time and compare.
restore_at() {
  local want
  want=$(expect_at "$2" "${3:-}")
  rm -f "$T/o.db"
  s3-get --timestamp "$(rfc "$2")" "$1" | ltx-apply "$T/o.db" || return 1
  [ "$(sha "$T/o.db")" = "$want" ] || { echo "restore to $(rfc "$2") differs" >&2; return 1; }
}

# ends URL: the TXIDs (decimal) at which a replica file ends, one a line.
ends() { s3-ls "$1" | sed -E 's,^[0-9]/[0-9a-f]{16}-([0-9a-f]{16})\.ltx.*,\1,' | while read -r x; do echo $((16#$x)); done | sort -un; }

# levels URL: "L:count ..." for each level present.
levels() { s3-ls "$1" | cut -d/ -f1 | sort | uniq -c | awk '{ printf "%s:%s ", $2, $1 }'; }

@test "s3-compact: one file per ended window, Litestream names, the last input's time" {
  url="file://$T/win"
  for h in $(seq 0 9); do upload_hour "$url" "$h"; done
  # 06:00-09:59: 6 files an hour at :00:00 :00:10 :02:00 :02:10 :30:00 :30:10
  run s3-compact -v -l 1 --now 2024-01-01T09:30:05Z "$url"
  assert_success
  assert_output --partial "12 outputs (12 stored"
  assert_output --partial "2 files wait for their window to end"
  run s3-ls -l 1 "$url"
  assert_line --index 0 --partial "1/0000000000000001-0000000000000001.ltx"
  assert_line --index 1 --regexp "^1/0000000000000002-0000000000000003.ltx	[0-9]+	2024-01-01T06:00:10.000Z$"
  assert_line --index 2 --regexp "^1/0000000000000004-0000000000000005.ltx	[0-9]+	2024-01-01T06:02:10.000Z$"
  [ "${#lines[@]}" -eq 12 ]
  run s3-compact -l 1 --now 2024-01-01T10:00:00Z "$url"
  assert_success
  [ "$(s3-ls -l 1 "$url" | wc -l)" -eq 13 ]
  s3-compact -l 2 --now 2024-01-01T10:00:00Z "$url"
  s3-compact -l 3 --now 2024-01-01T10:00:00Z "$url"
  run s3-ls -l 2 "$url"
  assert_line --index 1 --regexp "^2/0000000000000002-0000000000000005.ltx	[0-9]+	2024-01-01T06:02:10.000Z$"
  [ "${#lines[@]}" -eq 9 ]
  run s3-ls -l 3 "$url"
  assert_line --index 1 --regexp "^3/0000000000000002-0000000000000007.ltx	[0-9]+	2024-01-01T06:30:10.000Z$"
  [ "${#lines[@]}" -eq 5 ]
  # a snapshot at the end of the last ended day: none yet; --interval 0: now
  run s3-compact -v -l 9 --now 2024-01-01T10:00:00Z "$url"
  assert_output --partial "no file before 2024-01-01T00:00:00.000Z"
  run s3-compact -v -l 9 --interval 0 "$url"
  assert_output --partial "1 stored"
  run s3-ls -l 9 "$url"
  assert_output --regexp "^9/0000000000000001-0000000000000019.ltx	[0-9]+	2024-01-01T09:30:10.000Z$"
  for n in 1 7 25; do
    rm -f "$T/o.db"
    s3-get --txid "$(printf %x $n)" "$url" | ltx-apply "$T/o.db"
    [ "$(sha "$T/o.db")" = "$(awk -v n=$n '$1 == n { print $3 }' "$W/points")" ]
  done
  # the merged snapshot is what ltx-merge makes of the same files
  s3-get -n "$url" | grep -q "^9/"
  s3-get "$url" > "$T/all.ltx"
  run ltx-verify "$T/all.ltx"
  assert_success
}

@test "s3-compact: a rerun is a no-op (a few LISTs, nothing else); a failed window stores nothing and resumes" {
  url="file://$T/idem"
  for h in $(seq 0 11); do upload_hour "$url" "$h"; done
  # a corrupt input in the window of 09:30: windows before it are stored whole, it and later ones not
  victim="$T/idem/ltx/0/$(printf %016x 24)-$(printf %016x 24).ltx"
  cp "$victim" "$T/good"
  printf 'XXXX' | dd of="$victim" bs=1 seek=300 conv=notrunc 2>/dev/null
  run s3-compact -l 1 --now 2024-01-01T12:00:00Z "$url"
  assert_failure 3
  assert_output --partial "0000000000000018"
  [ "$(s3-ls -l 1 "$url" | tail -1 | cut -f1)" = "1/0000000000000016-0000000000000017.ltx" ]
  [ -z "$(find "$T/idem" -name '*.tmp*' -o -name '.*' -type f)" ]
  cp "$T/good" "$victim"
  run s3-compact -v -l 1 --now 2024-01-01T12:00:00Z "$url"
  assert_success
  assert_output --partial "(7 stored, 0 already there)"
  for l in 1 2 3 9; do
    s3-compact -l $l --now 2024-01-02T00:00:00Z "$url"
    run s3-compact -v -l $l --now 2024-01-02T00:00:00Z "$url"
    assert_success
    assert_output --partial "(0 stored"
    assert_output --partial "requests: $(idle_lists $l) LIST, 0 GET, 0 PUT, 0 HEAD, 0 DELETE"
  done
}

@test "s3-compact: a simulated week with 2-day retention: bounded objects, exact restores across the window" {
  url="file://$T/week"
  simulate "$url" 168 --retention 2d
  # after the third day the count stays flat (within a day's files)
  max=$(awk 'NR >= 3 { if ($2 > m) m = $2 } END { print m }' "$T/counts")
  third=$(awk 'NR == 3 { print $2 }' "$T/counts")
  echo "# week, --retention 2d: objects at each midnight: $(awk '{ printf "%s ", $2 }' "$T/counts")(levels $(levels "$url"))" >&3
  [ "$max" -le $((third + 10)) ]
  # the base: the newest snapshot stamped before 2024-01-06T00:00Z (day 5's)
  run s3-ls -l 9 "$url"
  [ "${#lines[@]}" -eq 3 ]
  assert_line --index 0 --partial "9/0000000000000001-$(printf %016x $((1 + 5 * 108)))"
  # nothing at levels 0-8 ends at or before it
  [ "$(ends "$url" | head -1)" -eq $((1 + 5 * 108)) ]
  # every point from the base to the end restores exactly: every 37 minutes, and each file's own time
  for t in $(seq $((T0 + 4 * 86400 + 23 * 3600 + 1860)) 2220 $((T0 + 7 * 86400))); do
    restore_at "$url" "$t"
  done
  for n in $(seq $((1 + 5 * 108)) 7 757) 757; do
    restore_at "$url" "$(awk -v n=$n '$1 == n { print $2 }' "$W/points")"
  done
  run s3-verify -q "$url"
  assert_success
  # before the base: refused, not wrong
  run bash -c "s3-get --timestamp 2024-01-03T12:00:00Z '$url' > /dev/null"
  assert_failure 3
  for l in 1 2 3 9; do
    run s3-compact -v -l $l --now 2024-01-08T00:00:00Z "$url"
    assert_output --partial "requests: $(idle_lists $l) LIST, 0 GET, 0 PUT"
  done
}

@test "s3-retain: GFS and compacted retention over a week: fewer objects, every kept restore point restores" {
  url="file://$T/gfs"
  simulate "$url" 168 --retention 1d --daily 4 --weekly 2 --compacted-retention 3h
  echo "# week, --retention 1d --daily 4 --weekly 2 --compacted-retention 3h: objects at each midnight: $(awk '{ printf "%s ", $2 }' "$T/counts")(levels $(levels "$url"))" >&3
  max=$(awk 'NR >= 4 { if ($2 > m) m = $2 } END { print m }' "$T/counts")
  [ "$max" -le 120 ]
  # snapshots: days 7 and 6 (the window and its base), 5 and 4 (daily 4); the week's newest is one of them
  run s3-ls -l 9 "$url"
  [ "${#lines[@]}" -eq 4 ]
  for d in 4 5 6 7; do assert_line --partial "-$(printf %016x $((1 + d * 108))).ltx"; done
  ends "$url" > "$T/ends"
  # every kept restore point, by time and by TXID
  while read -r n; do
    t=$(awk -v n="$n" '$1 == n { print $2 }' "$W/points")
    restore_at "$url" "$t" "$T/ends"
  done < "$T/ends"
  # times between kept points land on the last kept point before them
  for t in $(seq $((T0 + 3 * 86400 + 23 * 3600 + 1900)) 3989 $((T0 + 7 * 86400))); do
    restore_at "$url" "$t" "$T/ends"
  done
  run s3-verify -q "$url"
  assert_success
  # the last 3 hours keep every transaction
  for n in $(seq 740 757); do grep -qx "$n" "$T/ends"; done
}

@test "s3-retain: --dry-run lists exactly what a run deletes and deletes nothing" {
  url="file://$T/dry"
  simulate "$url" 72
  s3-ls "$url" | cut -f1 | sort > "$T/before"
  run s3-retain -n --retention 12h --now 2024-01-04T00:00:00Z "$url"
  assert_success
  echo "$output" | cut -f1 | sort > "$T/would"
  [ -s "$T/would" ]
  [ "$(echo "$output" | head -1 | cut -f2)" -gt 0 ]
  s3-ls "$url" | cut -f1 | sort | cmp - "$T/before"
  run s3-retain -v --retention 12h --now 2024-01-04T00:00:00Z "$url"
  assert_success
  assert_output --partial "deleted $(wc -l < "$T/would") of $(wc -l < "$T/before") objects"
  assert_output --partial "1 DELETE"
  s3-ls "$url" | cut -f1 | sort > "$T/after"
  comm -23 "$T/before" "$T/after" | cmp - "$T/would"
  # a second run finds nothing: no DeleteObjects request
  run s3-retain -v --retention 12h --now 2024-01-04T00:00:00Z "$url"
  assert_output --partial "deleted 0 of"
  assert_output --partial "0 DELETE"
  # the replica still restores its latest state
  restore_at "$url" $((T0 + 3 * 86400))
}

@test "s3-retain, s3-compact: usage errors exit 2; no snapshot means nothing goes" {
  url="file://$T/use"
  for h in 0 6; do upload_hour "$url" "$h"; done
  run s3-retain "$url"
  assert_failure 2
  assert_output --partial "--retention"
  run s3-retain --retention soon "$url"
  assert_failure 2
  run s3-retain --retention 1d --now yesterday "$url"
  assert_failure 2
  run s3-compact -l 4 "$url"
  assert_failure 2
  assert_output --partial "no default interval"
  run s3-compact -l 0 "$url"
  assert_failure 2
  run s3-compact -l 1 --interval 0 "$url"
  assert_failure 2
  run s3-compact "$url"
  assert_failure 2
  run s3-retain -n --retention 0 --now 2030-01-01T00:00:00Z "$url"
  assert_success
  assert_output ""
  [ "$(s3-ls "$url" | wc -l)" -eq 7 ]
}

@test "s3-compact: a simulated two days on S3 with 1-day retention; restores exact; idle runs cost a few LISTs" {
  url=$(s3_url week)
  simulate "$url" 48 --retention 1d
  echo "# S3, two days, --retention 1d: objects at each midnight: $(awk '{ printf "%s ", $2 }' "$T/counts")(levels $(levels "$url"))" >&3
  run s3-ls -l 9 "$url"
  [ "${#lines[@]}" -eq 2 ]
  for t in $(seq $((T0 + 23 * 3600 + 1900)) 5400 $((T0 + 2 * 86400))); do
    restore_at "$url" "$t"
  done
  run s3-verify -q "$url"
  assert_success
  for l in 1 2 3 9; do
    run s3-compact -v -l $l --now 2024-01-03T00:00:00Z "$url"
    assert_success
    assert_output --partial "requests: $(idle_lists $l) LIST, 0 GET, 0 PUT"
  done
  # levels 1-3 never list what lies below the covered TXID: with 218 objects
  # held (108 at level 0), a listing bound of 150 keys is enough for them,
  # not for level 9, which lists the replica
  for l in 1 2 3; do
    WALSYNC_S3_MAX_LIST_KEYS=150 run s3-compact -v -l $l --now 2024-01-03T00:00:00Z "$url"
    assert_success
    assert_output --partial "requests: $(idle_lists $l) LIST, 0 GET, 0 PUT"
  done
  WALSYNC_S3_MAX_LIST_KEYS=150 run s3-compact -l 9 --now 2024-01-03T00:00:00Z "$url"
  assert_failure
  assert_output --partial "more than 150 keys"
  run s3-retain -v --retention 1d --now 2024-01-03T00:00:00Z "$url"
  assert_output --partial "deleted 0 of"
  assert_output --partial "0 DELETE"
}

@test "s3-compact: objects and bytes after a simulated day, with and without compaction and retention" {
  for h in $(seq 0 23); do upload_hour "file://$T/raw" "$h"; done
  raw="$(s3-ls "file://$T/raw" | wc -l) objects, $(s3-ls "file://$T/raw" | awk '{ s += $2 } END { print s }') bytes"
  simulate "file://$T/exact" 24 --retention 1d
  exact="$(awk '{ print $2 " objects, " $3 " bytes" }' "$T/counts")"
  simulate "file://$T/coarse" 24 --retention 1d --compacted-retention 1h
  coarse="$(awk '{ print $2 " objects, " $3 " bytes" }' "$T/counts")"
  s3-get "file://$T/raw" | ltx-apply "$T/day.db"
  {
    echo "# one simulated day (108 level-0 files in 18 active hours; the database is $(stat -c %s "$T/day.db") bytes at its end):"
    echo "#   level 0 only:                                          $raw"
    echo "#   compaction 1-3 + daily snapshot, --retention 1d:       $exact"
    echo "#   ... and --compacted-retention 1h:                      $coarse"
  } >&3
  [ "${coarse%% *}" -lt "${raw%% *}" ]
}

@test "man: s3-compact.1 and s3-retain.1 examples run" {
  for page in s3-compact.1 s3-retain.1; do
    dir="$T/${page%.1}"
    mkdir -p "$dir"
    awk '/^\.Sh / { ex = ($2 == "EXAMPLES"); next }
      ex && /^\.Bd -literal/ { lit = 1; next }
      ex && /^\.Ed/ { lit = 0; next }
      ex && lit && /^\$ / { sub(/^\$ /, ""); gsub(/\\-/, "-"); gsub(/\\e/, "\\"); print }' "$REPO_ROOT/man/$page" > "$T/$page.sh"
    sqlite3 "$dir/app.db" "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);" > /dev/null
    run bash -c "cd '$dir' && bash -e -o pipefail '$T/$page.sh' < /dev/null"
    assert_success
  done
  run mandoc -Tlint -W warning "$REPO_ROOT/man/s3-compact.1" "$REPO_ROOT/man/s3-retain.1"
  assert_output ""
}

@test "s3-compact on S3: a failed PUT stores nothing of its window and a rerun completes; an idle run is three ListObjectsV2" {
  url=$(s3_url crash)
  for h in 0 6 7; do upload_hour "$url" "$h"; done
  start_proxy --faults "PUT:ok,PUT:ok,PUT:500"
  run s3-compact --retries 0 --endpoint "$PROXY" -l 1 --now 2024-01-01T08:00:00Z "$url"
  assert_failure 1
  assert_output --partial "InternalError"
  run s3-ls -l 1 "$url"
  [ "${#lines[@]}" -eq 2 ]
  assert_line --index 1 --partial "1/0000000000000002-0000000000000003.ltx"
  # the rerun goes on after what is stored (a reset GET is retried)
  stop_proxy
  start_proxy --faults "GET:ok,GET:ok,GET:ok,GET:ok,GET:ok,GET:ok,GET:reset"
  run s3-compact -v --endpoint "$PROXY" -l 1 --now 2024-01-01T08:00:00Z "$url"
  assert_success
  assert_output --partial "5 outputs (5 stored, 0 already there)"
  grep -q " reset$" "$PROXY_LOG"
  [ "$(s3-ls -l 1 "$url" | wc -l)" -eq 7 ]
  for n in 5 13; do
    rm -f "$T/o.db"
    s3-get --txid "$(printf %x $n)" "$url" | ltx-apply "$T/o.db"
    [ "$(sha "$T/o.db")" = "$(awk -v n=$n '$1 == n { print $3 }' "$W/points")" ]
  done
  : > "$PROXY_LOG"
  run s3-compact --endpoint "$PROXY" -l 1 --now 2024-01-01T08:00:00Z "$url"
  assert_success
  stop_proxy
  # levels 1 and up; level 0's snapshots; level 0 after the covered TXID
  [ "$(grep -c . "$PROXY_LOG")" -eq 3 ]
  [ "$(grep -cE '^GET /[^ ]*list-type=2' "$PROXY_LOG")" -eq 3 ]
  grep -qE '^GET /[^ ]*list-type=2[^ ]*start-after=[^ ]*%2F0001' "$PROXY_LOG"
}

@test "s3-compact: a snapshot of a 100 MB database merges in bounded memory" {
  cd "$T"
  python3 - <<'PY'
import sqlite3, shutil
a = sqlite3.connect("big.db", isolation_level=None)
for p in ("page_size=4096", "journal_mode=wal", "wal_autocheckpoint=0", "synchronous=off"):
    a.execute("pragma " + p)
a.execute("create table t(id integer primary key, b blob)")
a.execute("begin")
for i in range(25000):
    a.execute("insert into t(b) values (randomblob(4000))")
a.execute("commit")
a.execute("pragma wal_checkpoint(truncate)")
shutil.copy("big.db", "base.db")
for r in range(1, 4):
    a.execute("update t set b = randomblob(4000) where id % 40 = ?", (r,))
    shutil.copy("big.db-wal", "w%d" % r)
    a.execute("pragma wal_checkpoint(truncate)")
PY
  url="file://$T/r"
  ltx-encode --db base.db -s st --timestamp 2024-01-01T00:00:00Z | s3-put "$url"
  for r in 1 2 3; do ltx-encode -s st --timestamp "2024-01-01T0$r:00:00Z" < "w$r" | s3-put --sync-interval 0 "$url"; done
  /usr/bin/time -f %M -o rss s3-compact -l 9 --interval 0 "$url"
  echo "# s3-compact -l 9 of a $(stat -c %s base.db)-byte database: peak RSS $(cat rss) KiB" >&3
  limit=40000  # KiB: 16 MiB of read buffers, a page per input, the upload
  grep -q __asan_init "$(command -v s3-compact)" && limit=120000
  [ "$(cat rss)" -lt "$limit" ]
  s3-get "$url" | ltx-apply out.db
  cmp out.db big.db
  s3-get -n "$url" | grep -q '^9/0000000000000001-0000000000000004.ltx'
}
