#!/usr/bin/env bats
# ltx-encode: snapshots of database files, plain -wal files, bad input.

load test_helper/common

make_db() {  # make_db PATH PAGE_SIZE ROWS
  sqlite3 "$1" "pragma page_size=$2; create table t(id integer primary key, v text, b blob);
    with recursive c(x) as (select 1 union all select x+1 from c where x < $3)
    insert into t(v, b) select 'row ' || x, randomblob(150 + x % 400) from c;
    create index t_v on t(v);"
}

roundtrip() {  # roundtrip DB: snapshot, apply, byte equality, checksum equality
  ltx-encode --db "$1" > "$T/snap.ltx"
  ltx-verify "$T/snap.ltx"
  rm -f "$T/out.db"
  ltx-apply "$T/out.db" "$T/snap.ltx"
  cmp "$1" "$T/out.db"
  post=$(ltx-dump --json "$T/snap.ltx" | python3 -c 'import json,sys; print(json.load(sys.stdin)["trailer"]["post_apply_checksum"])')
  [ "$post" = "$(ltx-checksum "$1")" ]
}

@test "encode --db: page sizes 512, 4096 and 65536 round-trip byte for byte" {
  for ps in 512 4096 65536; do
    make_db "$T/p$ps.db" "$ps" 2000
    run roundtrip "$T/p$ps.db"
    assert_success
  done
}

@test "encode --db: freelist pages are carried and the checksum matches" {
  make_db "$T/f.db" 1024 3000
  sqlite3 "$T/f.db" "delete from t where id > 500"
  [ "$(sqlite3 "$T/f.db" 'pragma freelist_count')" -gt 100 ]
  run roundtrip "$T/f.db"
  assert_success
}

@test "encode --db: a database larger than 1 GiB skips the lock page and round-trips" {
  # Sparse: a real database whose file is grown past 1 GiB; the header's
  # page count says so (with a valid version-valid-for number).
  sqlite3 "$T/big.db" "pragma page_size=65536; create table t(x); insert into t values (randomblob(100000));"
  python3 - "$T/big.db" <<'PY'
import struct, sys
p = sys.argv[1]
pages = 17000                     # 17000 * 64 KiB = 1.11 GB > 1 GiB; lock page is 16385
with open(p, "r+b") as f:
    h = bytearray(f.read(100))
    h[28:32] = struct.pack(">I", pages)
    h[92:96] = h[24:28]
    f.seek(0); f.write(h)
    f.seek(pages * 65536 - 1); f.write(b"\x01")   # a last page that is not all zeros
PY
  ltx-encode --db "$T/big.db" > "$T/big.ltx"
  run ltx-dump --json "$T/big.ltx"
  frames=$(echo "$output" | python3 -c 'import json,sys; d=json.load(sys.stdin); p=[x["pgno"] for x in d["pages"]]; print(len(p), 16385 in p, d["header"]["commit"])')
  [ "$frames" = "16999 False 17000" ]
  ltx-apply "$T/out.db" "$T/big.ltx"
  cmp "$T/big.db" "$T/out.db"
  post=$(ltx-dump --json "$T/big.ltx" | python3 -c 'import json,sys; print(json.load(sys.stdin)["trailer"]["post_apply_checksum"])')
  [ "$post" = "$(ltx-checksum "$T/big.db")" ]
  rm -f "$T/big.db" "$T/out.db" "$T/big.ltx"
}

@test "encode --db: an empty database file is a Commit-0 snapshot" {
  : > "$T/empty.db"
  ltx-encode --db "$T/empty.db" > "$T/e.ltx"
  run ltx-dump --json "$T/e.ltx"
  assert_output --partial '"commit":0'
  assert_output --partial '"post_apply_checksum":"8000000000000000"'
  ltx-apply "$T/out.db" "$T/e.ltx"
  [ -e "$T/out.db" ] && [ ! -s "$T/out.db" ]
}

@test "encode -wal: real sqlite3 writes (rolled back, uncommitted tail) equal SQLite's own checkpoint" {
  python3 "$REPO_ROOT/tests/tools/capture-wal.py" "$T"
  cp "$T/cap.db" "$T/exp.db"; cp "$T/cap.db-wal" "$T/exp.db-wal"
  sqlite3 "$T/exp.db" "pragma wal_checkpoint(truncate)" > /dev/null
  [ ! -s "$T/exp.db-wal" ]
  # stateless: a no-checksum delta
  ltx-encode --db "$T/pre.db" > "$T/s.ltx"
  ltx-encode --txid 2 < "$T/cap.db-wal" > "$T/d.ltx"
  ltx-apply "$T/out.db" "$T/s.ltx" "$T/d.ltx"
  cmp "$T/out.db" "$T/exp.db"
  [ "$(sqlite3 "$T/out.db" .sha3sum)" = "$(sqlite3 "$T/exp.db" .sha3sum)" ]
  # with page state: a checksummed delta continuing the snapshot
  ltx-encode --db "$T/pre.db" --state "$T/st" > "$T/s2.ltx"
  ltx-encode --state "$T/st" < "$T/cap.db-wal" > "$T/d2.ltx"
  run ltx-dump --json "$T/d2.ltx"
  assert_output --partial '"min_txid":"0000000000000002"'
  assert_output --partial "\"pre_apply_checksum\":\"$(ltx-checksum "$T/pre.db")\""
  assert_output --partial "\"post_apply_checksum\":\"$(ltx-checksum "$T/exp.db")\""
  assert_output --partial '"wal_offset":32'
  ltx-apply "$T/out2.db" "$T/s2.ltx" "$T/d2.ltx"
  cmp "$T/out2.db" "$T/exp.db"
  [ "$(sqlite3 "$T/out2.db" 'pragma integrity_check')" = ok ]
  grep -q '^txid 0000000000000002$' "$T/st/position"
}

@test "encode -wal: an uncommitted transaction rewriting committed pages does not replace them" {
  # One committed UPDATE of every row, then an open one that spills frames
  # of the same pages into the WAL: the file keeps the committed pages.
  python3 - "$T" <<'PY'
import os, shutil, sqlite3, sys
d = sys.argv[1]
a = sqlite3.connect(d + "/u.db", isolation_level=None)
a.execute("pragma journal_mode=wal")
a.execute("pragma wal_autocheckpoint=0")
a.execute("create table t(id integer primary key, v blob)")
a.execute("with recursive s(i) as (select 1 union all select i + 1 from s where i < 50) "
          "insert into t select i, randomblob(3000) from s")
a.execute("pragma wal_checkpoint(truncate)")
shutil.copyfile(d + "/u.db", d + "/pre.db")
a.execute("update t set v = randomblob(3000)")
committed = os.path.getsize(d + "/u.db-wal")
a.execute("pragma cache_size=2")
a.execute("begin")
a.execute("update t set v = randomblob(3000)")
assert os.path.getsize(d + "/u.db-wal") > committed * 3 // 2, "no spill"
shutil.copyfile(d + "/u.db", d + "/cap.db")
shutil.copyfile(d + "/u.db-wal", d + "/cap.db-wal")
PY
  cp "$T/cap.db" "$T/exp.db"; cp "$T/cap.db-wal" "$T/exp.db-wal"
  sqlite3 "$T/exp.db" "pragma wal_checkpoint(truncate)" > /dev/null
  ltx-encode --db "$T/pre.db" > "$T/s.ltx"
  ltx-encode --txid 2 < "$T/cap.db-wal" > "$T/d.ltx"
  ltx-apply "$T/out.db" "$T/s.ltx" "$T/d.ltx"
  cmp "$T/out.db" "$T/exp.db"
  ltx-encode --per-txn --txid 2 < "$T/cap.db-wal" > "$T/p.ltx"
  ltx-apply "$T/out2.db" "$T/s.ltx" "$T/p.ltx"
  cmp "$T/out2.db" "$T/exp.db"
}

@test "encode -wal: a flipped byte in a committed frame exits 3 and writes nothing" {
  python3 "$REPO_ROOT/tests/tools/capture-wal.py" "$T"
  python3 -c "
import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[32+24+100]^=1; open(p,'wb').write(b)" "$T/cap.db-wal"
  run bash -c "ltx-encode --txid 2 < '$T/cap.db-wal' > '$T/d.ltx'"
  assert_failure 3
  assert_output --regexp "^ltx-encode: frame 1 at offset 32: checksum mismatch"
  [ ! -s "$T/d.ltx" ]
}

@test "encode: bad input gets one line, the documented status, and no output" {
  run bash -c "ltx-encode --txid 2 < /dev/null > '$T/o'"
  assert_failure 3
  [ "${#lines[@]}" -eq 1 ]
  [ ! -s "$T/o" ]
  head -c 5000 /dev/urandom > "$T/junk"
  run bash -c "ltx-encode --txid 2 < '$T/junk' > '$T/o'"
  assert_failure 3
  assert_output --partial "neither a SQLite WAL nor a WAL stream"
  [ ! -s "$T/o" ]
  run bash -c "ltx-encode --db '$T/junk' > '$T/o'"
  assert_failure 3
  assert_output "ltx-encode: $T/junk: not a SQLite database"
  [ ! -s "$T/o" ]
  run bash -c "ltx-encode --db '$T/missing.db' > '$T/o'"
  assert_failure 1
  assert_output --partial "No such file or directory"
  run ltx-encode --bogus
  assert_failure 2
  run ltx-encode --txid zz --db "$T/junk"
  assert_failure 2
}

@test "encode: a full disk on stdout is an error, and state does not advance" {
  make_db "$T/a.db" 4096 2000
  run bash -c "ltx-encode --db '$T/a.db' --state '$T/st' > /dev/full"
  assert_failure 1
  assert_output --partial "No space left on device"
  [ "${#lines[@]}" -eq 1 ]
  [ ! -e "$T/st/position" ]
}

@test "encode: --help and --version go to stdout with status 0" {
  run ltx-encode --help
  assert_success
  assert_output --partial "--db"
  run ltx-encode --version
  assert_success
  assert_output --regexp "^ltx-encode [0-9]"
}
