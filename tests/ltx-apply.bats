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
