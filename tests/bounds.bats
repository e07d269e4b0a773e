#!/usr/bin/env bats
# Hostile input (issue 12, items 3-5): repeated stream headers, damaged WAL
# salts, and tiny LTX files or commit frames that claim 2^32-2 pages. Work
# and output stay bounded by what the input and the target justify; the
# target is left as it was. Each command runs under `timeout` only so that a
# regression fails instead of filling the disk; nothing here is timed.

load test_helper/common

setup() {
  V="$WALSYNC_VECTORS/ltx"
  FORGE="$REPO_ROOT/tests/tools/forge.py"
}

# wal_of_commits DIR N: DIR/pre.db (checkpointed) and DIR/w.wal, a WAL of N
# one-row transactions after it; with a blob of 2000 bytes in the second
# one (1024-byte pages), whose transaction spans several frames.
wal_of_commits() {
  python3 - "$1" "$2" <<'PY'
import os, shutil, sqlite3, sys
d, n = sys.argv[1], int(sys.argv[2])
a = sqlite3.connect(d + "/live.db", isolation_level=None)
a.execute("pragma page_size=1024")
a.execute("pragma journal_mode=wal")
a.execute("pragma wal_autocheckpoint=0")
a.execute("create table t(id integer primary key, v text, b blob)")
a.execute("pragma wal_checkpoint(truncate)")
shutil.copyfile(d + "/live.db", d + "/pre.db")
for i in range(n):
    a.execute("insert into t(v, b) values (?, ?)", ("r%d" % i, b"x" * (2000 if i == 1 else 10)))
shutil.copyfile(d + "/live.db-wal", d + "/w.wal")
PY
}

# frame_info WAL N: "OFFSET COMMIT NEXT_COMMIT_OFFSET" of frame N (1-based).
frame_info() {
  python3 - "$1" "$2" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read(); n = int(sys.argv[2])
ps = struct.unpack(">I", b[8:12])[0]; fs = 24 + ps
off = 32 + (n - 1) * fs
nxt = next(o for o in range(off + fs, len(b), fs) if struct.unpack(">I", b[o + 4:o + 8])[0])
print(off, struct.unpack(">I", b[off + 4:off + 8])[0], nxt)
PY
}

flip() {  # flip FILE OFFSET: xor one byte with 0x01
  python3 -c "
import sys; p, o = sys.argv[1], int(sys.argv[2]); b = bytearray(open(p, 'rb').read()); b[o] ^= 1; open(p, 'wb').write(b)" "$1" "$2"
}

# ---------------------------------------------------------------- item 3

@test "encode: 10,000 repeated stream headers before a stream are read in a loop, not recursion" {
  sqlite3 "$T/a.db" "pragma journal_mode=wal; create table t(x); insert into t values (randomblob(3000));" > /dev/null
  wal-tail --snapshot "$T/a.db" > "$T/s.ws"
  head -c 29 "$T/s.ws" > "$T/h"
  [ "$(head -c 1 "$T/h")" = H ]
  python3 -c "
import sys; h = open(sys.argv[1], 'rb').read(); s = open(sys.argv[2], 'rb').read()
open(sys.argv[3], 'wb').write(h * 10000 + s)" "$T/h" "$T/s.ws" "$T/rep.ws"
  ltx-encode --timestamp 2026-01-01T00:00:00Z < "$T/s.ws" > "$T/want.ltx"
  run bash -c "timeout 120 ltx-encode --timestamp 2026-01-01T00:00:00Z < '$T/rep.ws' > '$T/got.ltx'"
  assert_success
  cmp "$T/want.ltx" "$T/got.ltx"
  # Headers alone are a stream with no events.
  python3 -c "import sys; open(sys.argv[2], 'wb').write(open(sys.argv[1], 'rb').read() * 10000)" "$T/h" "$T/only.ws"
  run bash -c "timeout 120 ltx-encode --txid 2 < '$T/only.ws' > '$T/none.ltx'"
  assert_success
  [ ! -s "$T/none.ltx" ]
}

# ---------------------------------------------------------------- item 4

@test "encode -wal: a damaged salt in a mid-file frame before later commits exits 3 and writes nothing" {
  wal_of_commits "$T" 28
  read -r off commit next <<< "$(frame_info "$T/w.wal" 3)"
  [ "$commit" -eq 0 ]                     # frame 3 is inside the multi-frame transaction
  flip "$T/w.wal" $((off + 8))            # salt1
  run bash -c "timeout 120 ltx-encode --txid 2 < '$T/w.wal' > '$T/d.ltx'"
  assert_failure 3
  assert_output "ltx-encode: frame 3 at offset $off: salt mismatch before the commit frame at offset $next"
  [ ! -s "$T/d.ltx" ]
}

@test "encode -wal: a damaged salt in a commit frame whose checksum verifies exits 3" {
  wal_of_commits "$T" 28
  n=$(python3 - "$T/w.wal" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read(); ps = struct.unpack(">I", b[8:12])[0]; fs = 24 + ps
commits = [i + 1 for i in range((len(b) - 32) // fs) if struct.unpack(">I", b[32 + i * fs + 4:32 + i * fs + 8])[0]]
print(commits[-1])
PY
)
  off=$((32 + (n - 1) * (24 + 1024)))
  flip "$T/w.wal" $((off + 15))           # salt2 of the last commit frame
  run bash -c "timeout 120 ltx-encode --txid 2 < '$T/w.wal' > '$T/d.ltx'"
  assert_failure 3
  assert_output "ltx-encode: frame $n at offset $off: salt mismatch in a commit frame whose checksum verifies"
  [ ! -s "$T/d.ltx" ]
}

@test "encode -wal: stale frames of an earlier WAL generation still end the log quietly" {
  # A restart writes a shorter generation over a longer one: the frames
  # after it have the old salts, and none has the header's.
  python3 - "$T" <<'PY'
import shutil, sqlite3, sys
d = sys.argv[1]
a = sqlite3.connect(d + "/g.db", isolation_level=None)
a.execute("pragma journal_mode=wal"); a.execute("pragma wal_autocheckpoint=0")
a.execute("create table t(id integer primary key, b blob)")
for i in range(20):
    a.execute("insert into t(b) values (randomblob(500))")
a.execute("pragma wal_checkpoint(passive)")
shutil.copyfile(d + "/g.db", d + "/pre.db")
a.execute("insert into t(b) values (randomblob(500))")   # restarts the WAL: a new generation
shutil.copyfile(d + "/g.db", d + "/cap.db"); shutil.copyfile(d + "/g.db-wal", d + "/cap.db-wal")
PY
  cp "$T/cap.db" "$T/exp.db"; cp "$T/cap.db-wal" "$T/exp.db-wal"
  sqlite3 "$T/exp.db" "pragma wal_checkpoint(truncate)" > /dev/null
  ltx-encode --db "$T/pre.db" > "$T/s.ltx"
  ltx-encode --txid 2 < "$T/cap.db-wal" > "$T/d.ltx"
  ltx-apply "$T/out.db" "$T/s.ltx" "$T/d.ltx"
  cmp "$T/out.db" "$T/exp.db"
}

# ---------------------------------------------------------------- item 5

@test "verify and apply: Commit 0xffffffff is refused (exit 3) and the database is unchanged" {
  ltx-apply "$T/db" "$V/snap_ps512.ltx"
  before=$(sha "$T/db")
  python3 "$FORGE" ltx "$T/x.ltx" commit=0xffffffff pre="$(ltx-checksum "$T/db")"
  [ "$(stat -c %s "$T/x.ltx")" -eq 131 ]
  run ltx-verify "$T/x.ltx"
  assert_failure 3
  assert_output "ltx-verify: $T/x.ltx: decode header: commit 4294967295 exceeds SQLite's maximum page count 4294967294"
  run timeout 120 ltx-apply "$T/db" "$T/x.ltx"
  assert_failure 3
  assert_output "ltx-apply: $T/x.ltx: decode header: commit 4294967295 exceeds SQLite's maximum page count 4294967294"
  [ "$(sha "$T/db")" = "$before" ]
}

@test "apply: a 131-byte delta with Commit 0xfffffffe is refused before any work (exit 1), database unchanged" {
  ltx-apply "$T/db" "$V/snap_ps512.ltx"
  before=$(sha "$T/db")
  python3 "$FORGE" ltx "$T/x.ltx" commit=0xfffffffe pre="$(ltx-checksum "$T/db")"
  [ "$(stat -c %s "$T/x.ltx")" -eq 131 ]
  run ltx-verify "$T/x.ltx"                 # valid on its own: only a target can refuse it
  assert_success
  run timeout 120 ltx-apply "$T/db" "$T/x.ltx"
  assert_failure 1
  assert_output --regexp "^ltx-apply: $T/x.ltx: 0000000000000002-0000000000000002.ltx: commit 4294967294 grows the database to 2199023254528 bytes: needs 21990232[0-9]+ bytes, [0-9]+ free on its file system\$"
  [ "$(sha "$T/db")" = "$before" ]
  [ -z "$(ls -A "$T" | grep tmp-)" ]
  # --max-size refuses it as data (exit 3), and ltx-verify --max-size agrees.
  run timeout 120 ltx-apply --max-size 1G "$T/db" "$T/x.ltx"
  assert_failure 3
  assert_output "ltx-apply: $T/x.ltx: 0000000000000002-0000000000000002.ltx: commit 4294967294 makes a database of 2199023254528 bytes, more than the maximum size 1073741824"
  run ltx-verify --max-size 1G "$T/x.ltx"
  assert_failure 3
  assert_output "ltx-verify: $T/x.ltx: commit 4294967294 makes a database of 2199023254528 bytes, more than the maximum size 1073741824"
  [ "$(sha "$T/db")" = "$before" ]
}

@test "apply: a 160-byte NoChecksum delta does not make a 2 TB sparse database" {
  ltx-apply "$T/db" "$V/snap_ps512.ltx"
  before=$(sha "$T/db")
  python3 "$FORGE" ltx "$T/x.ltx" commit=0xfffffffe flags=2 pre=0 post=0 page=3:0
  ltx-verify "$T/x.ltx"
  run timeout 120 ltx-apply "$T/db" "$T/x.ltx"
  assert_failure 1
  assert_output --regexp "^ltx-apply: $T/x.ltx: 0000000000000002-0000000000000002.ltx: commit 4294967294 grows the database to 2199023254528 bytes: needs [0-9]+ bytes, [0-9]+ free on its file system\$"
  [ "$(sha "$T/db")" = "$before" ]
  [ "$(stat -c %s "$T/db")" -lt 1000000 ]
  # --live: the same refusal, and the replica is untouched.
  cp "$T/db" "$T/live.db"
  run timeout 120 ltx-apply --live "$T/live.db" "$T/x.ltx"
  assert_failure 1
  assert_output --regexp "^ltx-apply: $T/x.ltx: 0000000000000002-0000000000000002.ltx: commit 4294967294 grows the replica to 2199023254528 bytes: needs [0-9]+ bytes, [0-9]+ free on its file system\$"
  [ "$(sha "$T/live.db")" = "$before" ]
  run timeout 120 ltx-apply --live --max-size 100M "$T/live.db" "$T/x.ltx"
  assert_failure 3
  assert_output "ltx-apply: $T/x.ltx: 0000000000000002-0000000000000002.ltx: commit 4294967294 makes a database of 2199023254528 bytes, more than the maximum size 104857600"
  [ "$(sha "$T/live.db")" = "$before" ]
}

@test "apply: growth without writes still folds zero pages, and a delta that fits is applied" {
  # A checksummed delta that grows a small database to 100000 pages writes
  # page 100000 only: its post-apply checksum folds in the zero pages.
  ltx-apply "$T/db" "$V/snap_ps512.ltx"
  n=$(( $(stat -c %s "$T/db") / 512 ))
  truncate -s $((100000 * 512)) "$T/want.db"
  cp "$T/db" "$T/w.tmp"; dd if="$T/w.tmp" of="$T/want.db" conv=notrunc status=none
  python3 -c "import sys; f = open(sys.argv[1], 'r+b'); f.seek(99999 * 512); f.write(b'\x07' * 512)" "$T/want.db"
  python3 "$FORGE" ltx "$T/g.ltx" commit=100000 pre="$(ltx-checksum "$T/db")" post="$(ltx-checksum "$T/want.db")" page=100000:7
  run timeout 120 ltx-apply "$T/db" "$T/g.ltx"
  assert_success
  cmp "$T/db" "$T/want.db"
  [ "$n" -lt 100000 ]
}

@test "merge: two tiny inputs claiming 2^32-2 pages are refused before any zero page (exit 1), no output" {
  python3 "$FORGE" ltx "$T/a.ltx" commit=1 min=2 max=2 flags=2 pre=0 post=0 page=1:1
  python3 "$FORGE" ltx "$T/b.ltx" commit=0xfffffffe min=3 max=3 flags=2 pre=0 post=0 page=2:2
  run timeout 120 ltx-merge -o "$T/m.ltx" "$T/a.ltx" "$T/b.ltx"
  assert_failure 1
  assert_output --regexp "^ltx-merge: up to 4294967292 zero pages to commit 4294967294: needs [0-9]+ bytes, [0-9]+ free on its file system\$"
  [ ! -e "$T/m.ltx" ]
  [ -z "$(ls -A "$T" | grep tmp-)" ]
  run timeout 120 ltx-merge --max-size 1M -o "$T/m.ltx" "$T/a.ltx" "$T/b.ltx"
  assert_failure 3
  assert_output "ltx-merge: commit 4294967294 makes a database of 2199023254528 bytes, more than the maximum size 1048576"
  [ ! -e "$T/m.ltx" ]
}

# A state at the checkpointed database, and a WAL whose last commit frame
# says the database has 0xfffffffe pages (checksums re-chained).
huge_commit_wal() {
  wal_of_commits "$T" 5
  ltx-encode --db "$T/pre.db" --state "$T/st" > /dev/null
  last=$(python3 -c "
import struct, sys; b = open(sys.argv[1], 'rb').read(); print((len(b) - 32) // (24 + 1024))" "$T/w.wal")
  python3 "$FORGE" wal-commit "$T/w.wal" "$T/huge.wal" "$last" 0xfffffffe
}

@test "encode --state: a commit frame growing the database past the pages written exits 3, state unchanged" {
  huge_commit_wal
  before=$(cat "$T/st/position"; sha "$T/st/pages")
  run bash -c "timeout 120 ltx-encode --state '$T/st' < '$T/huge.wal' > '$T/o.ltx'"
  assert_failure 3
  assert_output --regexp "^ltx-encode: transaction grows the database from [0-9]+ to 4294967294 pages without page [0-9]+, more than its pages can name as free\$"
  [ ! -s "$T/o.ltx" ]
  [ "$(cat "$T/st/position"; sha "$T/st/pages")" = "$before" ]
  [ "$(du -sk "$T/st" | cut -f1)" -lt 1024 ]
}

@test "encode --state: the same commit frame in a WAL stream exits 3 after the transactions before it" {
  huge_commit_wal
  python3 "$FORGE" walstream "$T/huge.wal" "$T/huge.ws"
  run bash -c "timeout 120 ltx-encode --state '$T/st' < '$T/huge.ws' > '$T/o.ltx'"
  assert_failure 3
  assert_output --regexp "^ltx-encode: transaction grows the database from [0-9]+ to 4294967294 pages without page [0-9]+, more than its pages can name as free\$"
  ! grep -q "^commit 4294967294" "$T/st/position"
  [ "$(du -sk "$T/st" | cut -f1)" -lt 1024 ]
  # Files that went out before the forged transaction (group commit may
  # have put none, or several transactions in one) are whole, and the state
  # is at the last of them.
  n=0
  if [ -s "$T/o.ltx" ]; then n=$(ltx-verify -v - < "$T/o.ltx" 2>&1 | grep -c ' ok '); fi
  grep -q "^txid $(printf %016x $((n + 1)))\$" "$T/st/position"
  ltx-encode --db "$T/pre.db" > "$T/s.ltx"
  cat "$T/s.ltx" "$T/o.ltx" | ltx-apply "$T/out.db"
  [ "$(sqlite3 "$T/out.db" 'select count(*) from t')" -lt 5 ]
}

@test "encode: a commit size or resync above 0xfffffffe pages exits 3" {
  wal_of_commits "$T" 3
  python3 "$FORGE" wal-commit "$T/w.wal" "$T/x.wal" 1 0xffffffff
  run bash -c "ltx-encode --txid 2 < '$T/x.wal' > '$T/o.ltx'"
  assert_failure 3
  assert_output "ltx-encode: frame 1 at offset 32: commit size 4294967295 exceeds SQLite's maximum page count 4294967294"
  [ ! -s "$T/o.ltx" ]
  python3 "$FORGE" walstream "$T/x.wal" "$T/x.ws"
  run bash -c "ltx-encode --txid 2 < '$T/x.ws' > '$T/o.ltx'"
  assert_failure 3
  assert_output "ltx-encode: record 3 at offset 70: frame 1: commit size 4294967295 exceeds SQLite's maximum page count 4294967294"
  [ ! -s "$T/o.ltx" ]
}

@test "apply, merge, verify: --max-size takes a size, or exits 2" {
  run ltx-apply --max-size lots "$T/db" "$V/snap_ps512.ltx"
  assert_failure 2
  assert_output "ltx-apply: --max-size: not a size: lots"
  run ltx-verify --max-size 99999999999999999999 "$V/snap_ps512.ltx"
  assert_failure 2
  run ltx-merge --max-size 0 -o "$T/m.ltx" "$V/snap_ps512.ltx"
  assert_failure 2
  run ltx-verify --max-size 1T "$V/snap_ps512.ltx"
  assert_success
}
