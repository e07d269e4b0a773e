#!/usr/bin/env bats
# s3-get: restore planning and streaming, on file:// and on a real S3 server.
load test_helper/common
load test_helper/s3

setup_file() {
  load test_helper/common
  load test_helper/s3
  build_compactor
  CHAIN="$BATS_FILE_TMPDIR/chain"
  build_chain "$CHAIN"
}

setup() {
  require_s3
  CHAIN="$BATS_FILE_TMPDIR/chain"
  LTX_COMPACT="$BATS_FILE_TMPDIR/ltx-compact"
}

# restore_eq URL N [s3-get args]: restore and compare with the database at N.
restore_eq() {
  local url=$1 n=$2; shift 2
  rm -f "$T/out.db"
  run bash -c "set -o pipefail; s3-get $* '$url' | ltx-apply '$T/out.db'"
  assert_success
  cmp "$T/out.db" "$CHAIN/db.$n"
  run sqlite3 "$T/out.db" "PRAGMA integrity_check"
  assert_output ok
}

@test "s3-get: point-in-time restores over levels 0, 1 and 9 (5 TXIDs, 3 timestamps)" {
  for url in $(backends pit); do
    upload_chain "$CHAIN" "$url"
    for n in 1 42 50 55 100; do
      restore_eq "$url" "$n" --txid "$(printf %x "$n")"
    done
    restore_eq "$url" 100
    restore_eq "$url" 30 --timestamp "$(date -u -d "@$((1704067200 + 30))" +%Y-%m-%dT%H:%M:%S).500Z"
    restore_eq "$url" 77 --timestamp "$(ts 77)"
    restore_eq "$url" 100 --timestamp "$(ts 200)"
  done
}

@test "s3-get: the plan takes the snapshot and the highest levels" {
  for url in $(backends plan); do
    upload_chain "$CHAIN" "$url"
    run s3-get --dry-run "$url"
    assert_success
    assert_line --index 0 --partial "9/0000000000000001-0000000000000032.ltx"
    assert_line --index 1 --partial "1/0000000000000033-000000000000003c.ltx"
    [ "${#lines[@]}" -eq 6 ]
    run s3-get -n --txid 37 "$url"
    assert_success
    assert_line --index 0 --partial "9/0000000000000001-0000000000000032.ltx"
    assert_line --index 1 --partial "0/0000000000000033-0000000000000033.ltx"
    [ "${#lines[@]}" -eq 6 ]
    run s3-get -n --txid 2a "$url"
    assert_line --index 0 --partial "0/0000000000000001-0000000000000001.ltx"
    assert_line --index 1 --partial "1/0000000000000002-000000000000000a.ltx"
  done
}

@test "s3-get: a gap is an integrity error naming it; nothing is written" {
  for url in $(backends gap); do
    cat "$CHAIN"/l0/*.ltx | s3-put --sync-interval 0 "$url"
    run s3-rm "$url" 0/0000000000000007-0000000000000007.ltx
    assert_success
    run bash -c "s3-get '$url' > '$T/out'"
    assert_failure 3
    assert_output --partial "gap after TXID 0000000000000006"
    [ ! -s "$T/out" ]
    run s3-get --txid 6 -n "$url"
    assert_success
  done
}

@test "s3-get: target before the first snapshot, empty replica: exit 3" {
  for url in $(backends early); do
    run bash -c "s3-get '$url' > /dev/null"
    assert_failure 3
    assert_output --partial "no replica files"
    cat "$CHAIN"/l0/*.ltx | s3-put --sync-interval 0 "$url"
    run bash -c "s3-get --timestamp 2020-01-01T00:00:00Z '$url' > /dev/null"
    assert_failure 3
    assert_output --partial "no file at or before"
  done
}

@test "s3-get: refuses a terminal; bad flags are usage errors" {
  url="file://$T/x"
  cat "$CHAIN"/l0/0000000000000001-0000000000000001.ltx | s3-put "$url"
  run script -qec "s3-get '$url'" /dev/null
  assert_failure 2
  assert_output --partial "terminal"
  run s3-get --txid zz "$url"
  assert_failure 2
  run s3-get --timestamp yesterday "$url"
  assert_failure 2
  run s3-get --txid 1 --timestamp 2024-01-01T00:00:00Z "$url"
  assert_failure 2
}

@test "s3-get: output write errors fail (exit 1)" {
  url="file://$T/full"
  cat "$CHAIN"/l0/*.ltx | s3-put --sync-interval 0 "$url"
  run bash -c "s3-get '$url' > /dev/full"
  assert_failure 1
}

@test "s3-get: golden chain from tests/data restores to the recorded database" {
  for url in $(backends golden); do
    cat "$WALSYNC_VECTORS"/ltx/chain/*.ltx | s3-put --sync-interval 0 "$url"
    rm -f "$T/g.db"
    run bash -c "set -o pipefail; s3-get '$url' | ltx-apply '$T/g.db'"
    assert_success
    [ "$(sha "$T/g.db")" = 1ad4624281610353b066ca8296870b64cefc58d3a98c27305e7bb13da596626c ]
  done
}
