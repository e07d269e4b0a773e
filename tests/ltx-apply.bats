#!/usr/bin/env bats
# ltx-apply: all-or-nothing application, chain checks, inputs.

load test_helper/common

setup() {
  V="$WALSYNC_VECTORS/ltx"
  C="$V/chain"
}

@test "apply: a TXID gap is refused and the database is unchanged" {
  ltx-apply "$T/db" "$C/0000000000000001-0000000000000001.ltx"
  before=$(sha "$T/db")
  run ltx-apply "$T/db" "$C/0000000000000002-0000000000000002.ltx" "$C/0000000000000004-0000000000000004.ltx"
  assert_failure 3
  assert_output --partial "TXID gap: expected 0000000000000003, got 0000000000000004"
  [ "$(sha "$T/db")" = "$before" ]
}

@test "apply: a pre-apply checksum mismatch is refused and the database is unchanged" {
  ltx-apply "$T/db" "$C/0000000000000001-0000000000000001.ltx"
  before=$(sha "$T/db")
  run ltx-apply "$T/db" "$C/0000000000000003-0000000000000003.ltx"
  assert_failure 3
  assert_output --partial "pre-apply checksum mismatch: database ce1be90e4a0a748d, file a800cead5fdf835a"
  [ "$(sha "$T/db")" = "$before" ]
}

@test "apply: a failure in a later file keeps the whole run out" {
  ltx-apply "$T/db" "$C/0000000000000001-0000000000000001.ltx"
  before=$(sha "$T/db")
  head -c 1000 "$C/0000000000000003-0000000000000003.ltx" > "$T/cut.ltx"
  run ltx-apply "$T/db" "$C/0000000000000002-0000000000000002.ltx" "$T/cut.ltx"
  assert_failure 3
  assert_output --partial "unexpected EOF"
  [ "$(sha "$T/db")" = "$before" ]
  [ -z "$(ls -A "$T" | grep tmp-)" ]
}

@test "apply: deltas continue a database applied in an earlier run" {
  ltx-apply "$T/db" "$C/0000000000000001-0000000000000001.ltx" "$C/0000000000000002-0000000000000002.ltx"
  ltx-apply "$T/db" "$C/0000000000000003-0000000000000003.ltx"
  cat "$C/0000000000000004-0000000000000004.ltx" | ltx-apply "$T/db"
  want=$(awk -F'\t' '$1=="ltx/chain/0000000000000004-0000000000000004.ltx" {print $22}' "$WALSYNC_VECTORS/MANIFEST.tsv")
  [ "$(sha "$T/db")" = "$want" ]
}

@test "apply: shrink truncates to Commit pages" {
  ltx-apply "$T/db" "$V/snap_freelist.ltx"
  [ "$(stat -c %s "$T/db")" -eq 519168 ]
  ltx-apply "$T/db" "$V/delta_shrink.ltx"
  [ "$(stat -c %s "$T/db")" -eq $((102 * 1024)) ]
}

@test "apply: bytes after a single file's trailer are refused" {
  cat "$V/snap_ps4096.ltx" > "$T/x.ltx"; printf 'junk' >> "$T/x.ltx"
  run ltx-apply "$T/db" "$T/x.ltx"
  assert_failure 3
  run ltx-verify "$T/x.ltx"
  assert_failure 3
  assert_output --partial "bytes after the trailer"
  [ ! -e "$T/db" ]
}

@test "apply: empty input, a non-LTX file, a missing file and no arguments are refused" {
  run bash -c "ltx-apply '$T/db' < /dev/null"
  assert_failure 3
  assert_output "ltx-apply: stdin: no LTX data"
  [ ! -e "$T/db" ]
  head -c 3000 /dev/urandom > "$T/junk"
  run ltx-apply "$T/db" "$T/junk"
  assert_failure 3
  assert_output --partial "decode header: invalid LTX file"
  [ ! -e "$T/db" ]
  run ltx-apply "$T/db" "$T/missing.ltx"
  assert_failure 1
  run ltx-apply
  assert_failure 2
}

@test "apply: refuses a database with a live -wal unless forced" {
  ltx-apply "$T/db" "$C/0000000000000001-0000000000000001.ltx"
  echo x > "$T/db-wal"
  run ltx-apply "$T/db" "$C/0000000000000002-0000000000000002.ltx"
  assert_failure 1
  assert_output --partial "db-wal exists"
  run ltx-apply -f "$T/db" "$C/0000000000000002-0000000000000002.ltx"
  assert_success
}

@test "apply: keeps the mode of an existing database" {
  ltx-apply "$T/db" "$C/0000000000000001-0000000000000001.ltx"
  chmod 600 "$T/db"
  ltx-apply "$T/db" "$C/0000000000000002-0000000000000002.ltx"
  [ "$(stat -c %a "$T/db")" = 600 ]
}

@test "apply: a hot journal of a removed database is refused; the target is not created" {
  hot_journal "$T/app.db"
  rm "$T/app.db"
  cp "$T/app.db-journal" "$T/journal.before"
  run ltx-apply "$T/app.db" "$V/snap_ps4096.ltx"
  assert_failure 1
  assert_output "ltx-apply: $T/app.db-journal: hot journal of an earlier $T/app.db that is gone; SQLite would roll it into the new database (move it away with its database, or remove it)"
  [ ! -e "$T/app.db" ]
  cmp "$T/journal.before" "$T/app.db-journal"
  # --live takes the same decision (SQLite would delete the journal of an empty file)
  run ltx-apply --live "$T/app.db" "$V/snap_ps4096.ltx"
  assert_failure 1
  assert_output --partial "$T/app.db-journal: hot journal of an earlier"
  [ ! -e "$T/app.db" ]
  # once the operator moved it away, the restore opens clean
  mv "$T/app.db-journal" "$T/elsewhere"
  ltx-apply "$T/app.db" "$V/snap_ps4096.ltx"
  [ "$(sqlite3 "$T/app.db" 'PRAGMA integrity_check')" = ok ]
}

@test "apply: a hot journal beside an existing database is rolled back first, as SQLite would" {
  hot_journal "$T/app.db"
  sqlite3 "$T/src.db" "CREATE TABLE a(x); INSERT INTO a SELECT randomblob(300) FROM generate_series(1, 100)"
  ltx-encode --db "$T/src.db" > "$T/big.ltx"
  ltx-apply "$T/app.db" "$T/big.ltx"
  [ ! -e "$T/app.db-journal" ]
  [ "$(sqlite3 "$T/app.db" 'PRAGMA integrity_check')" = ok ]
  [ "$(sqlite3 "$T/app.db" .sha3sum)" = "$(sqlite3 "$T/src.db" .sha3sum)" ]
  cmp "$T/app.db" "$T/src.db"
}

@test "apply: a new database gets 0666 less the umask" {
  (umask 077 && ltx-apply "$T/a.db" "$V/snap_ps4096.ltx")
  [ "$(stat -c %a "$T/a.db")" = 600 ]
  (umask 002 && ltx-apply "$T/b.db" "$V/snap_ps4096.ltx")
  [ "$(stat -c %a "$T/b.db")" = 664 ]
}

# wait_temps N: until N temp files of ours are in $T.
wait_temps() {
  local i
  for i in $(seq 1 100); do
    [ "$(ls -A "$T" | grep -c '\.tmp-')" -eq "$1" ] && return 0
    sleep 0.1
  done
  ls -A "$T" >&2
  return 1
}

@test "apply: temp files of a run killed with -9 are removed by the next run; a live run's are kept" {
  mkfifo "$T/fifo1" "$T/fifo2"
  ltx-apply "$T/db" < "$T/fifo1" & local p1=$!
  exec 7>"$T/fifo1"
  head -c 2000 "$V/snap_ps4096.ltx" >&7
  wait_temps 1
  kill -9 "$p1"; wait "$p1" || true
  exec 7>&-
  ls -A "$T" | grep -q "^\.db\.tmp-$p1-"
  # the next run removes it, and creates its own
  ltx-apply "$T/db" < "$T/fifo2" & local p2=$!
  exec 8>"$T/fifo2"
  local i
  for i in $(seq 1 100); do ls -A "$T" | grep -q "^\.db\.tmp-$p2-" && break; sleep 0.1; done
  run bash -c "ls -A '$T' | grep '\.tmp-'"
  assert_output --regexp "^\.db\.tmp-$p2-[0-9a-f]{8}\$"
  # a run beside a live one keeps the live one's
  ltx-apply "$T/db" "$V/snap_ps4096.ltx"
  run bash -c "ls -A '$T' | grep '\.tmp-'"
  assert_output --regexp "^\.db\.tmp-$p2-[0-9a-f]{8}\$"
  exec 8>&-
  wait "$p2" || true
  [ -z "$(ls -A "$T" | grep tmp-)" ]
  [ "$(sqlite3 "$T/db" 'PRAGMA integrity_check')" = ok ]
}
