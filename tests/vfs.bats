#!/usr/bin/env bats
# walsync_vfs: the read-only SQLite VFS over a replica (man/walsync_vfs.7),
# through the sqlite3 shell (.load) and Python's sqlite3 module, compared
# with `walsync restore` at the newest TXID, at older TXIDs and at a
# timestamp; damaged objects; readers while a primary writes and the
# replica is compacted and pruned.
load test_helper/common
load test_helper/s3

SO="$WALSYNC_BIN/../lib/walsync_vfs"
TOOLS="$REPO_ROOT/tests/tools"

teardown() {  # nothing outlives a failed test
  local j
  for j in $(jobs -p); do kill "$j" 2>/dev/null; done
  true
}

# chain DIR ROUNDS PAGE_SIZE URL: vfs-db.py's database, one LTX file a
# round (TXID 1 the snapshot of base.db), stored at level 0 of URL by
# s3-put $PUT_ARGS.
chain() {
  mkdir -p "$1"
  python3 "$TOOLS/vfs-db.py" "$1" "$2" "$3"
  ltx-encode --db "$1/base.db" --state "$1/S" | s3-put ${PUT_ARGS:-} "$4"
  local w
  for w in "$1"/wal.*; do ltx-encode --state "$1/S" < "$w" | s3-put ${PUT_ARGS:-} "$4"; done
}

# vcli URI COMMAND...: the sqlite3 shell with the extension loaded and URI
# opened through it; -bail: the first error ends it with status 1.
vcli() {
  local uri=$1; shift
  { printf '.load %s\n.open %s\n' "$SO" "$uri"; printf '%s\n' "$@"; } | sqlite3 -bail
}

# The queries both sides answer: point lookups, a range scan on the index,
# overflow pages (whole blobs hashed), counts, the WITHOUT ROWID table.
QUERIES=(
  "SELECT id, v, length(b) FROM t WHERE id IN (1, 7, 150, 199, 230)"
  "SELECT id, v, hex(substr(b, -6)) FROM t WHERE v BETWEEN 'r002' AND 'r004~' ORDER BY v"
  "SELECT count(*), sum(length(b)), max(id) FROM t"
  "SELECT k, n FROM kv"
)

# same_as_restore URL URI_TAIL [RESTORE_ARGS...]: the VFS at URL (with
# &URI_TAIL) answers as `walsync restore` does, in the shell and in Python.
same_as_restore() {
  local url=$1 tail=$2; shift 2
  rm -f "$T/r.db"
  walsync restore "$url" -o "$T/r.db" "$@"
  local uri="file:app.db?vfs=walsync&replica=$url$tail"
  [ "$(vcli "$uri" .sha3sum 'PRAGMA integrity_check')" = "$(sqlite3 "$T/r.db" .sha3sum)"$'\n'ok ]
  local want got
  want=$(python3 "$TOOLS/vfs-query.py" "$SO" "file:$T/r.db?mode=ro" "${QUERIES[@]}")
  got=$(python3 "$TOOLS/vfs-query.py" "$SO" "$uri" "${QUERIES[@]}")
  [ -n "$want" ] && [ "$got" = "$want" ]
}

every_txid() {  # PAGE_SIZE: the newest TXID and every older one
  chain "$T/c" 6 "$1" "file://$T/rep/app"
  same_as_restore "file://$T/rep/app" ""
  local x
  for x in 1 2 3 4 5 6 7; do
    same_as_restore "file://$T/rep/app" "&txid=$x" --txid "$x"
  done
  [ "$(vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app&txid=4" 'SELECT walsync_txid()')" = 4 ]
}

@test "vfs: page size 4096: the newest state and every TXID equal walsync restore (shell, python)" {
  every_txid 4096
}

@test "vfs: page size 512: the newest state and every TXID equal walsync restore" {
  every_txid 512
}

@test "vfs: page size 65536: the newest state and every TXID equal walsync restore" {
  every_txid 65536
}

@test "vfs: timestamp= reads the state walsync restore --timestamp restores; the SQL functions say which" {
  chain "$T/c" 6 4096 "file://$T/rep/app"
  local f ts
  f=$(ls "$T"/rep/app/ltx/0/0000000000000004-*.ltx)
  ts=$(ltx-dump --json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["timestamp"])')
  same_as_restore "file://$T/rep/app" "&timestamp=$ts" --timestamp "$ts"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app&timestamp=$ts" \
    "SELECT walsync_txid(), walsync_time(), walsync_lag() >= 0, count(*) > 0 FROM t"
  assert_success
  assert_output "4|$ts|1|1"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app" "SELECT walsync_txid(), walsync_lag() FROM t LIMIT 1"
  assert_output "7|0.0"
  # a database not opened through the VFS
  run vcli "file:$T/c/base.db" "SELECT walsync_txid()"
  assert_failure
  assert_output --partial "not a database opened with vfs=walsync"
}

@test "vfs: an s3:// replica, the newest state and an older TXID; the file one GET, a page read one ranged GET" {
  require_s3
  local url; url=$(s3_url app)
  chain "$T/c" 4 4096 "$url"
  same_as_restore "$url" ""
  same_as_restore "$url" "&txid=3" --txid 3
  # one point lookup after the plan: a handful of GETs, not the files
  run vcli "file:app.db?vfs=walsync&replica=$url&cachesize=64K&txid=1" \
    "SELECT json_extract(walsync_stats(), '\$.lists', '\$.gets') FROM t WHERE id = 1;" \
    "SELECT json_extract(walsync_stats(), '\$.files', '\$.verified_files')"
  assert_success
  # the plan: 1 LIST, the snapshot streamed (1 GET); the lookup: the root
  # pages and the row's leaf and overflow pages, one GET each at most.
  local gets; gets=$(echo "${lines[0]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)[1])')
  [ "$(echo "${lines[0]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')" = 1 ]
  [ "$gets" -ge 3 ] && [ "$gets" -le 11 ]
  assert_line --index 1 "[1,1]"
  # verify=structure: the snapshot's head and tail (2 GETs), no verified file
  run vcli "file:app.db?vfs=walsync&replica=$url&cachesize=64K&txid=1&verify=structure" \
    "SELECT json_extract(walsync_stats(), '\$.lists', '\$.gets') FROM t WHERE id = 1;" \
    "SELECT json_extract(walsync_stats(), '\$.files', '\$.verified_files')"
  assert_success
  gets=$(echo "${lines[0]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)[1])')
  [ "$gets" -ge 4 ] && [ "$gets" -le 12 ]
  assert_line --index 1 "[1,0]"
}

@test "vfs: an age-encrypted replica is read in ranges of its 64 KiB chunks, with the identity of the environment" {
  age-keygen -o "$T/key.txt" 2>/dev/null
  PUT_ARGS="--age-identity $T/key.txt" chain "$T/c" 3 4096 "file://$T/rep/app"
  export WALSYNC_AGE_IDENTITY_FILE="$T/key.txt"
  same_as_restore "file://$T/rep/app" ""
  same_as_restore "file://$T/rep/app" "&txid=2" --txid 2
  unset WALSYNC_AGE_IDENTITY_FILE
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app" "SELECT count(*) FROM t"
  assert_failure
  assert_output --partial "walsync_vfs: file://$T/rep/app: "
  assert_output --partial "age"
}

@test "vfs: usage errors: no replica, a bad option, txid and timestamp together; each named on stderr" {
  chain "$T/c" 1 4096 "file://$T/rep/app"
  run vcli "file:app.db?vfs=walsync" "SELECT count(*) FROM kv"
  assert_failure
  assert_output --partial "walsync_vfs: walsync: no replica: open file:NAME?vfs=walsync&replica=URL"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app&txid=2&timestamp=2026-01-01T00:00:00Z" "SELECT count(*) FROM kv"
  assert_output --partial "walsync_vfs: file://$T/rep/app: txid and timestamp: give one"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app&cachesize=lots" "SELECT count(*) FROM kv"
  assert_output --partial "cachesize=lots: want a size from 64K to 1T"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app&verify=maybe" "SELECT count(*) FROM kv"
  assert_output --partial "verify=maybe: want file (the default) or structure"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app&txid=0" "SELECT count(*) FROM kv"
  assert_failure
  assert_output --partial "walsync_vfs: file://$T/rep/app: txid=0: TXIDs start at 1"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app&txid=12g" "SELECT count(*) FROM kv"
  assert_output --partial "walsync_vfs: file://$T/rep/app: txid=12g: want a TXID of 1 to 16 hex digits (txid=2a)"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app&txid=99" "SELECT count(*) FROM kv"
  assert_failure
  assert_output --partial "walsync_vfs: file://$T/rep/app: gap after TXID 0000000000000002: no file starts at TXID 0000000000000003 (restoring to TXID 0000000000000099"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/nothing/app" "SELECT count(*) FROM kv"
  assert_failure
  assert_output --partial "no replica files"
  # read-only: a write is refused, the replica untouched
  local before; before=$(find "$T/rep" -type f | sort | xargs sha256sum)
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app" "INSERT INTO kv VALUES('x', 1)"
  assert_failure
  assert_output --partial "readonly"
  [ "$(find "$T/rep" -type f | sort | xargs sha256sum)" = "$before" ]
}

@test "vfs: examples/vfs-query.sh queries a replica, at a TXID too" {
  chain "$T/c" 3 4096 "file://$T/rep/app"
  export WALSYNC_VFS="$SO"
  run "$REPO_ROOT/examples/vfs-query.sh" "file://$T/rep/app" "SELECT walsync_txid(), count(*) > 200 FROM t"
  assert_success
  assert_output "4|1"
  VFS_PARAMS="txid=2&cachesize=1M" run "$REPO_ROOT/examples/vfs-query.sh" "file://$T/rep/app" "SELECT walsync_txid()"
  assert_output 2
  run "$REPO_ROOT/examples/vfs-query.sh"
  assert_failure 2
}

# frame FILE PGNO: the byte offset of page PGNO's frame in LTX FILE.
frame() {
  ltx-dump --json "$1" | python3 -c 'import json,sys; print([p["offset"] for p in json.load(sys.stdin)["pages"] if p["pgno"] == int(sys.argv[1])][0])' "$2"
}

# poke FILE OFFSET HEX: overwrite bytes in place.
poke() { printf "$(echo "$3" | sed 's/../\\x&/g')" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null; }

# ALL: one statement that reads every page of t (leaves, overflow pages),
# its index and kv: the error of any page, or one number.
ALL="SELECT (SELECT sum(length(hex(b))) FROM t) + (SELECT count(*) FROM t INDEXED BY t_v WHERE v > '') + (SELECT count(*) FROM kv)"

@test "vfs: verify=structure: a damaged frame is an error for the query (SQLITE_CORRUPT) naming the object, never rows" {
  chain "$T/c" 2 4096 "file://$T/rep/app"
  local snap="$T/rep/app/ltx/0/0000000000000001-0000000000000001.ltx" uri="file:app.db?vfs=walsync&replica=file://$T/rep/app&txid=1&verify=structure"
  [ "$(stat -c %s "$snap")" -gt $((256 * 1024)) ]  # read in ranges, not whole
  cp "$snap" "$T/good.ltx"
  local last; last=$(ltx-dump --json "$snap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["commit"])')
  local at; at=$(frame "$snap" "$last")
  [ "$at" -gt $((64 * 1024)) ]  # beyond the head read: a ranged read when the query needs it
  run vcli "$uri" "$ALL"
  assert_success
  assert_output --regexp '^[0-9]+$'
  # the frame of the page names another page
  poke "$snap" "$at" 00000003
  run vcli "$uri" "$ALL"
  assert_failure
  assert_output --partial "walsync_vfs: file://$T/rep/app: TXID 0000000000000001: ${snap#/}: page $last at offset $at: decode page frame 1: out-of-order page numbers: $((last - 1)),3"
  assert_output --partial "database disk image is malformed"
  refute_line --regexp '^[0-9]+$'
  # its compressed bytes are garbage: the first sequence copies a match from
  # 65535 bytes before the page (0xff bytes could leave a one-run literal
  # block's meaning unchanged: the last token's match nibble is ignored)
  cp "$T/good.ltx" "$snap"
  poke "$snap" $((at + 10)) 00ffff
  run vcli "$uri" "$ALL"
  assert_failure
  assert_output --partial "${snap#/}: page $last at offset $at: decode page frame 1: lz4"
  refute_line --regexp '^[0-9]+$'
  # truncated: the index is gone
  cp "$T/good.ltx" "$snap"
  truncate -s 200000 "$snap"
  run vcli "$uri" "$ALL"
  assert_failure
  assert_output --partial "walsync_vfs: file://$T/rep/app: ${snap#/}:"
  refute_line --regexp '^[0-9]+$'
  # the default streams it first: a byte changed anywhere is caught (a
  # frame check or the file checksum) and the open fails, SQLITE_CORRUPT
  cp "$T/good.ltx" "$snap"
  local mid=$((at + 200))
  poke "$snap" "$mid" "$(dd if="$snap" bs=1 skip="$mid" count=1 2>/dev/null | od -An -tx1 | tr -d ' \n' | tr '0-9a-f' '1-9a-f0')"
  for v in "" "&verify=file"; do
    run vcli "${uri%&verify=structure}$v" "$ALL"
    assert_failure
    assert_output --regexp "walsync_vfs: file://$T/rep/app: ${snap#/}: (decode page frame|read trailer: file checksum mismatch)"
    assert_output --partial "database disk image is malformed"
    refute_line --regexp '^[0-9]+$'
  done
  # a file of the plan gone: the open fails with the chain's gap, SQLITE_CORRUPT
  cp "$T/good.ltx" "$snap"
  rm "$T/rep/app/ltx/0/0000000000000002-0000000000000002.ltx"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app&txid=3" "$ALL"
  assert_failure
  assert_output --partial "walsync_vfs: file://$T/rep/app: gap after TXID 0000000000000001: no file starts at TXID 0000000000000002"
  assert_output --partial "database disk image is malformed"
}

# silent_page DB: the highest page of DB whose last byte, changed, still
# makes a sound database whose rows differ (a byte of a row's data, not of
# SQLite's structure): where a changed byte is a wrong answer, not an error.
silent_page() {
  python3 - "$1" "$T/flip.db" <<'PY'
import sqlite3, sys
src, tmp = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
ps = int.from_bytes(data[16:18], "big") or 65536
def rows(path):
    c = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        if c.execute("PRAGMA integrity_check").fetchone()[0] != "ok": return None
        return c.execute("SELECT id, v, b FROM t ORDER BY id").fetchall() + c.execute("SELECT * FROM kv").fetchall()
    except sqlite3.DatabaseError:
        return None
    finally:
        c.close()
good = rows(src)
for pgno in range(len(data) // ps, 1, -1):
    b = bytearray(data)
    b[pgno * ps - 1] ^= 0x01
    open(tmp, "wb").write(b)
    got = rows(tmp)
    if got is not None and got != good:
        print(pgno); break
PY
}

@test "vfs: a byte changed inside a frame's compressed data (it decodes to a whole page) is an error by default, never other rows" {
  chain "$T/c" 2 4096 "file://$T/rep/app"
  local snap="$T/rep/app/ltx/0/0000000000000001-0000000000000001.ltx" uri="file:app.db?vfs=walsync&replica=file://$T/rep/app&txid=1"
  [ "$(stat -c %s "$snap")" -gt $((256 * 1024)) ]  # read in ranges, not whole
  walsync restore "file://$T/rep/app" --txid 1 -o "$T/r.db"
  local good; good=$(sqlite3 "$T/r.db" .sha3sum)
  local pg; pg=$(silent_page "$T/r.db")
  [ -n "$pg" ]
  # The frame's last byte is the page's last byte: an LZ4 block ends with
  # at least 5 literal bytes. The file checksum covers the decoded page,
  # not these bytes; the frame still decodes to a whole page.
  local at csize; at=$(frame "$snap" "$pg")
  [ "$at" -gt $((64 * 1024)) ]  # beyond the head read
  csize=$((16#$(dd if="$snap" bs=1 skip=$((at + 6)) count=4 2>/dev/null | od -An -tx1 | tr -d ' \n')))
  local last=$((at + 10 + csize - 1))
  poke "$snap" "$last" "$(printf '%02x' $((16#$(dd if="$snap" bs=1 skip="$last" count=1 2>/dev/null | od -An -tx1 | tr -d ' \n') ^ 1)))"
  run vcli "$uri" .sha3sum "SELECT count(*) FROM t"  # the shell goes on after a failed .open
  assert_failure
  refute_output --partial "$good"
  refute_line --regexp '^[0-9a-f]{40,}$'
  assert_output --partial "walsync_vfs: file://$T/rep/app: ${snap#/}: "
  assert_output --partial "file checksum mismatch"
  # verify=structure (alias page) checks only what a frame shows: it serves
  # the changed page, as walsync_vfs(7) says
  run vcli "$uri&verify=structure" .sha3sum
  assert_success
  [ -n "$output" ] && [ "$output" != "$good" ]
  # and without the change, the same as walsync restore
  poke "$snap" "$last" "$(printf '%02x' $((16#$(dd if="$snap" bs=1 skip="$last" count=1 2>/dev/null | od -An -tx1 | tr -d ' \n') ^ 1)))"
  [ "$(vcli "$uri" .sha3sum)" = "$good" ]
}

@test "vfs: a small object is read whole and verified: a flipped byte fails the open" {
  local C="$WALSYNC_VECTORS/ltx/chain"
  cat "$C"/*.ltx | s3-put "file://$T/rep/app"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app" "SELECT json_extract(walsync_stats(), '\$.verified_files') = json_extract(walsync_stats(), '\$.files')"
  assert_success
  assert_output 1
  local f; f=$(ls "$T"/rep/app/ltx/0/* | tail -1)
  local at=$(($(stat -c %s "$f") / 2))
  poke "$f" "$at" "$(dd if="$f" bs=1 skip="$at" count=1 2>/dev/null | od -An -tx1 | tr -d ' \n' | tr '0-9a-f' '1-9a-f0')"
  run vcli "file:app.db?vfs=walsync&replica=file://$T/rep/app" "SELECT count(*) FROM kv"
  assert_failure
  assert_output --partial "walsync_vfs: file://$T/rep/app: ${f#/}:"
  assert_output --partial "database disk image is malformed"
}

@test "vfs: readers through the VFS see only committed states while a primary writes and the replica is compacted and pruned" {
  local url="file://$T/rep" ntx=600
  python3 "$TOOLS/live-writer.py" "$T/P.db" 0
  walsync watch "$T/P.db" -b "$url" 2>"$T/watch.log" & local wp=$!
  local i
  for i in $(seq 1 300); do  # the replica has the first TXIDs
    ls "$T"/rep/P/ltx/0/*.ltx >/dev/null 2>&1 && break
    sleep 0.2
  done
  python3 "$TOOLS/live-writer.py" "$T/P.db" "$ntx" 60 & local writer=$!
  # compaction, snapshots and retention in a loop, as a cron job would
  ( while [ ! -e "$T/stop" ]; do
      s3-compact -l 1 --interval 1s "$url/P" 2>>"$T/maint.log"
      s3-compact -l 9 --interval 0 "$url/P" 2>>"$T/maint.log"
      s3-retain --retention 3s --compacted-retention 3s "$url/P" 2>>"$T/maint.log"
      sleep 0.5
    done ) & local maint=$!
  local rp=""
  for r in 1 2; do
    python3 "$TOOLS/live-reader.py" "file:P.db?vfs=walsync&replica=$url/P&poll=100ms&cachesize=256K&log=none" \
      "$ntx" "$T/stop" "$SO" > "$T/reader$r.out" & rp="$rp $!"
  done
  wait "$writer"
  for i in $(seq 1 300); do  # the newest TXID reaches the replica
    [ "$(vcli "file:P.db?vfs=walsync&replica=$url/P" 'SELECT n FROM counter')" = "$ntx" ] && break
    sleep 0.2
  done
  sleep 1
  touch "$T/stop"
  for p in $rp; do wait "$p"; done
  wait "$maint"
  kill -TERM "$wp"; wait "$wp"
  cat "$T"/reader*.out >&3
  grep -q "^rounds=.* errors=0 max_n=$ntx$" "$T/reader1.out"
  grep -q "^rounds=.* errors=0 max_n=$ntx$" "$T/reader2.out"
  # compaction and retention did run under the readers
  ls "$T"/rep/P/ltx/1/*.ltx "$T"/rep/P/ltx/9/*.ltx >/dev/null
  [ ! -e "$T/rep/P/ltx/0/0000000000000001-0000000000000001.ltx" ]
  walsync restore P -b "$url" -o "$T/r.db"
  [ "$(vcli "file:P.db?vfs=walsync&replica=$url/P" .sha3sum)" = "$(sqlite3 "$T/r.db" .sha3sum)" ]
}
