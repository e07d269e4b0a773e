#!/usr/bin/env bats
# s3-put: LTX streams into replica files, the chain guard, raw objects.
load test_helper/common
load test_helper/s3

setup() {
  require_s3
  GOLD="$WALSYNC_VECTORS/ltx/chain"
}

@test "s3-put: layout is Litestream v0.5's (S3 0000/, 0009/; file ltx/0/) with timestamps" {
  url=$(s3_url lay)
  cat "$GOLD"/*.ltx | s3-put --sync-interval 0 "$url"
  prefix=${url#s3://$WALSYNC_TEST_BUCKET/}
  run s3-ls --raw "s3://$WALSYNC_TEST_BUCKET/$prefix"
  assert_success
  assert_line --index 0 --partial "0000/0000000000000001-0000000000000001.ltx"
  assert_line --index 3 --partial "0000/0000000000000004-0000000000000004.ltx"
  # litestream-timestamp metadata: the LTX header time (1700000100000 ms)
  run bash -c "curl -s -I --aws-sigv4 'aws:amz:us-east-1:s3' -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
    'http://test%3Atester:testing@127.0.0.1:$(s3_port)/$WALSYNC_TEST_BUCKET/$prefix/0000/0000000000000001-0000000000000001.ltx'"
  assert_output --partial "2023-11-14T22:15:00.000Z"
  cat "$GOLD"/0000000000000001-0000000000000001.ltx | s3-put --level 9 "$url"
  run s3-ls --raw "$url"
  assert_line --partial "0009/0000000000000001-0000000000000001.ltx"

  cat "$GOLD"/*.ltx | s3-put --sync-interval 0 "file://$T/rep"
  [ -f "$T/rep/ltx/0/0000000000000001-0000000000000001.ltx" ]
  [ -f "$T/rep/ltx/0/0000000000000004-0000000000000004.ltx" ]
  cmp "$T/rep/ltx/0/0000000000000003-0000000000000003.ltx" "$GOLD/0000000000000003-0000000000000003.ltx"
  [ "$(stat -c %Y "$T/rep/ltx/0/0000000000000002-0000000000000002.ltx")" = 1700000101 ]
  cat "$GOLD"/0000000000000001-0000000000000001.ltx | s3-put --level 9 "file://$T/rep"
  [ -f "$T/rep/ltx/9/0000000000000001-0000000000000001.ltx" ]
}

@test "s3-put: objects are the LTX files byte for byte" {
  for url in $(backends bytes); do
    cat "$GOLD"/*.ltx | s3-put --sync-interval 0 "$url"
    for f in "$GOLD"/*.ltx; do
      n=$(basename "$f")
      s3-get --raw "${url/#file:\/\//file://}$( [[ $url == s3://* ]] && echo /0000/$n || echo /ltx/0/$n)" > "$T/o"
      cmp "$T/o" "$f"
    done
  done
}

@test "s3-put: a second database writing the same prefix is refused (exit 3), remote unchanged" {
  mkdir -p "$T/other"
  sqlite3 "$T/other/o.db" "PRAGMA page_size=1024; CREATE TABLE z(a); INSERT INTO z VALUES(1);"
  ltx-encode --db "$T/other/o.db" --txid 1 > "$T/other/snap1.ltx"
  # a delta at TXID 5 from another chain: continues by TXID, not by checksum
  python3 - "$T/other" <<'PY'
import sqlite3, shutil, sys
d = sys.argv[1]
db = sqlite3.connect(d + "/w.db", isolation_level=None)
db.execute("PRAGMA page_size=1024"); db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("CREATE TABLE q(x)"); db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
shutil.copy(d + "/w.db", d + "/w.base")
db.execute("INSERT INTO q VALUES(randomblob(500))")
shutil.copy(d + "/w.db-wal", d + "/w.wal")
PY
  ltx-encode --db "$T/other/w.base" -s "$T/other/st" --txid 4 > /dev/null
  ltx-encode -s "$T/other/st" < "$T/other/w.wal" > "$T/other/delta5.ltx"
  ltx-dump "$T/other/delta5.ltx" | grep -q "Min TXID:   0000000000000005"
  for url in $(backends two); do
    cat "$GOLD"/*.ltx | s3-put --sync-interval 0 "$url"
    s3-ls "$url" > "$T/before"
    run s3-put "$url" < "$T/other/snap1.ltx"
    assert_failure 3
    assert_output --partial "different file with this name"
    run s3-put "$url" < "$T/other/delta5.ltx"
    assert_failure 3
    assert_output --partial "pre-apply checksum"
    s3-ls "$url" > "$T/after"
    cmp "$T/before" "$T/after"
  done
}

@test "s3-put: the chain continues across runs; a restarted upload skips what is stored" {
  for url in $(backends cont); do
    cat "$GOLD"/0000000000000001-0000000000000001.ltx "$GOLD"/0000000000000002-0000000000000002.ltx | s3-put --sync-interval 0 "$url"
    cat "$GOLD"/0000000000000003-0000000000000003.ltx | s3-put "$url"
    # replaying from the start (a restarted pipeline) converges
    cat "$GOLD"/*.ltx | s3-put --sync-interval 0 -v "$url" 2> "$T/err"
    grep -q "already stored, skipped" "$T/err"
    run s3-ls "$url"
    [ "${#lines[@]}" -eq 4 ]
    # a gap is refused
    run s3-put "$url" < "$WALSYNC_VECTORS/ltx/delta_2page.ltx"
    assert_failure 3
  done
}

@test "s3-put: an empty replica takes only a snapshot first" {
  for url in $(backends empty); do
    run s3-put "$url" < "$GOLD"/0000000000000002-0000000000000002.ltx
    assert_failure 3
    assert_output --partial "does not start with a snapshot"
    run s3-put --level 9 "$url" < "$GOLD"/0000000000000002-0000000000000002.ltx
    assert_failure 3
    run s3-ls "$url"
    assert_output ""
  done
}

@test "s3-put: a stream cut mid-file uploads nothing partial (exit 3)" {
  for url in $(backends cut); do
    head -c 700 "$GOLD"/0000000000000001-0000000000000001.ltx > "$T/cut1"
    run s3-put "$url" < "$T/cut1"
    assert_failure 3
    run s3-ls "$url"
    assert_output ""
    cat "$GOLD"/0000000000000001-0000000000000001.ltx "$GOLD"/0000000000000002-0000000000000002.ltx > "$T/two"
    head -c 3000 "$GOLD"/0000000000000003-0000000000000003.ltx >> "$T/two"
    run s3-put "$url" < "$T/two"
    assert_failure 3
    run s3-ls "$url"
    [ "${#lines[@]}" -eq 2 ]
    run s3-put "$url" < /dev/null
    assert_failure 3
    run s3-put "$url" < "$WALSYNC_VECTORS/corrupt/$(ls "$WALSYNC_VECTORS/corrupt" | grep -m1 '\.ltx$')"
    assert_failure 3
  done
}

@test "s3-put: raw objects with spaces and unicode in the key; empty object" {
  for url in $(backends raw); do
    key="dir with space/ünï cødé+%=&.bin"
    head -c 10000 /dev/urandom > "$T/blob"
    s3-put --raw "$url/$key" < "$T/blob"
    s3-get --raw "$url/$key" > "$T/back"
    cmp "$T/blob" "$T/back"
    run s3-ls --raw "$url"
    assert_output --partial "ünï cødé+%=&.bin"
    s3-put --raw "$url/empty" < /dev/null
    s3-get --raw "$url/empty" > "$T/e"
    [ ! -s "$T/e" ]
    s3-rm --raw "$url" "$key" empty
    run s3-ls --raw "$url"
    assert_output ""
  done
}

@test "s3-put: usage errors exit 2" {
  run s3-put
  assert_failure 2
  run s3-put "http://x/y" < /dev/null
  assert_failure 2
  assert_output --partial "malformed URL"
  run s3-put "s3:///nobucket" < /dev/null
  assert_failure 2
  run s3-put "file://relative/dir" < /dev/null
  assert_failure 2
  run s3-put --level 10 "file://$T/x" < /dev/null
  assert_failure 2
  run s3-put --raw --part-size 1M "$(s3_url p)/k" < /dev/null
  assert_failure 2
  run s3-put --help
  assert_success
}
