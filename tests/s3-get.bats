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

# big_replica DIR URL: a ~14 MB snapshot (four 4 MiB parts) and 20 one-row
# transactions after it, uploaded to URL; DIR/final.db is the database after them.
big_replica() {
  local d=$1 url=$2 i
  mkdir -p "$d"
  python3 - "$d" <<'PY' || return 1
import shutil, sqlite3, sys
d = sys.argv[1]
db = sqlite3.connect(d + "/work.db", isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)")
db.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4500) "
           "INSERT INTO t(v) SELECT randomblob(3000) FROM n")
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
shutil.copy(d + "/work.db", d + "/snap.db")
for i in range(20):
    db.execute("INSERT INTO t(v) VALUES(randomblob(5000))")
    shutil.copy(d + "/work.db-wal", "%s/wal.%d" % (d, i))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
shutil.copy(d + "/work.db", d + "/final.db")
PY
  ltx-encode --db "$d/snap.db" -s "$d/st" | s3-put "$url" || return 1
  for i in $(seq 0 19); do ltx-encode -s "$d/st" < "$d/wal.$i" || return 1; done | s3-put --sync-interval 0 "$url"
}

@test "s3-get --parallel: a snapshot in ranged 4 MiB parts and 20 files after it restore the same bytes at 1 and 8 connections" {
  for url in $(backends big); do
    rm -rf "$T/big"
    big_replica "$T/big" "$url"
    run s3-get -n "$url"
    assert_success
    [ "${#lines[@]}" -eq 21 ]
    [ "$(cut -f2 <<<"${lines[0]}")" -gt $((12 << 20)) ]
    for p in 1 8; do
      rm -f "$T/p$p.db"
      run bash -c "set -o pipefail; s3-get --parallel $p '$url' | ltx-apply '$T/p$p.db'"
      assert_success
      cmp "$T/p$p.db" "$T/big/final.db"
    done
    rm -f "$T/w.db"
    walsync restore --parallel 3 "$url" -o "$T/w.db"
    cmp "$T/w.db" "$T/big/final.db"
  done
  run s3-get --parallel 0 "$url"
  assert_failure 2
  run s3-get --parallel 65 "$url"
  assert_failure 2
}

@test "s3-get --parallel 8: a damaged part in the middle of the snapshot is exit 3, and walsync restore leaves no output" {
  for url in $(backends dmg); do
    rm -rf "$T/big"
    big_replica "$T/big" "$url"
    local name key; name=$(s3-get -n "$url" | head -1 | cut -f1)
    [[ $name == 0/0000000000000001-* ]]
    key=$url/0000/${name#0/}
    # 8 bytes in the third 4 MiB part: the snapshot's checksums no longer match
    if [[ $url == file://* ]]; then cp "$T/dmg/ltx/$name" "$T/snap.ltx"; else s3-get --raw "$key" > "$T/snap.ltx"; fi
    printf 'XXXXXXXX' | dd of="$T/snap.ltx" bs=1 seek=$((9 << 20)) conv=notrunc 2>/dev/null
    if [[ $url == file://* ]]; then cp "$T/snap.ltx" "$T/dmg/ltx/$name"; else s3-put --raw "$key" < "$T/snap.ltx"; fi
    rm -f "$T/out.db"
    run bash -c "set -o pipefail; s3-get --parallel 8 '$url' | ltx-apply '$T/out.db'"
    assert_failure 3
    [ ! -e "$T/out.db" ]
    run walsync restore --parallel 8 "$url" -o "$T/out.db"
    assert_failure 3
    [ ! -e "$T/out.db" ]
    run ls -A "$T"
    refute_output --partial ".tmp-"
  done
}

@test "s3-get: a file whose header disagrees with its name is named, its TXIDs as TXIDs (exit 3)" {
  G="$WALSYNC_VECTORS/ltx/chain"
  mkdir -p "$T/rep/ltx/0"
  cp "$G"/*.ltx "$T/rep/ltx/0/"
  mv "$T/rep/ltx/0/0000000000000002-0000000000000002.ltx" "$T/rep/ltx/0/0000000000000002-0000000000000003.ltx"
  rm "$T/rep/ltx/0/0000000000000003-0000000000000003.ltx"
  run bash -c "s3-get 'file://$T/rep' > '$T/out.ltx'"
  [ "$status" -eq 3 ]
  assert_output --regexp "^s3-get: .*/0000000000000002-0000000000000003\.ltx: header TXIDs 0000000000000002-0000000000000002 do not match the name$"
}
