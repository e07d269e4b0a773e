#!/usr/bin/env bats
# ltx-merge: k-way streaming merge (compaction) of contiguous LTX files.

load test_helper/common

setup() {
  V="$WALSYNC_VECTORS/ltx"
  C="$V/chain"
  C1="$C/0000000000000001-0000000000000001.ltx"
  C2="$C/0000000000000002-0000000000000002.ltx"
  C3="$C/0000000000000003-0000000000000003.ltx"
  C4="$C/0000000000000004-0000000000000004.ltx"
}

manifest() {  # manifest FILE COLUMN
  awk -F'\t' -v f="$1" -v c="$2" '$1==f {print $c}' "$WALSYNC_VECTORS/MANIFEST.tsv"
}

# gen_chain DIR ROUNDS: DIR/NNN.ltx (000 the snapshot) and DIR/final.db.
gen_chain() {
  mkdir -p "$1"
  python3 "$REPO_ROOT/tests/tools/gen-chain.py" "$1" "$2"
  ltx-encode --db "$1/base.db" --state "$1/S" > "$1/000.ltx"
  for w in "$1"/wal.*; do
    ltx-encode --state "$1/S" < "$w" > "$1/${w##*/wal.}.ltx"
  done
}

@test "merge: the golden chain becomes a snapshot of the chain's final database" {
  ltx-merge -o "$T/m.ltx" "$C1" "$C2" "$C3" "$C4"
  ltx-verify "$T/m.ltx"
  run ltx-dump --json "$T/m.ltx"
  assert_output --partial '"min_txid":"0000000000000001"'
  assert_output --partial '"max_txid":"0000000000000004"'
  assert_output --partial '"commit":23'
  assert_output --partial "\"post_apply_checksum\":\"$(manifest ltx/chain/0000000000000004-0000000000000004.ltx 10)\""
  ltx-apply "$T/db" "$T/m.ltx"
  [ "$(sha "$T/db")" = "$(manifest ltx/chain/0000000000000004-0000000000000004.ltx 22)" ]
  [ "$(ltx-checksum "$T/db")" = "$(manifest ltx/chain/0000000000000004-0000000000000004.ltx 10)" ]
  # stdout gives the same bytes
  ltx-merge "$C1" "$C2" "$C3" "$C4" > "$T/s.ltx"
  cmp "$T/m.ltx" "$T/s.ltx"
}

@test "merge: deltas 2..4 become one delta that continues the snapshot" {
  ltx-merge "$C2" "$C3" "$C4" > "$T/d.ltx"
  run ltx-dump --json "$T/d.ltx"
  assert_output --partial '"min_txid":"0000000000000002"'
  assert_output --partial '"max_txid":"0000000000000004"'
  assert_output --partial "\"pre_apply_checksum\":\"$(manifest ltx/chain/0000000000000002-0000000000000002.ltx 9)\""
  ltx-apply "$T/db" "$C1" "$T/d.ltx"
  [ "$(sha "$T/db")" = "$(manifest ltx/chain/0000000000000004-0000000000000004.ltx 22)" ]
}

@test "merge: a shrinking delta is honoured" {
  ltx-merge "$V/snap_freelist.ltx" "$V/delta_shrink.ltx" > "$T/m.ltx"
  run ltx-dump --json "$T/m.ltx"
  assert_output --partial '"commit":102'
  ltx-apply "$T/db" "$T/m.ltx"
  [ "$(sha "$T/db")" = "$(manifest ltx/delta_shrink.ltx 22)" ]
}

@test "merge: non-contiguous TXIDs exit 3 with a clear message" {
  run bash -c "ltx-merge '$C1' '$C3' > '$T/m.ltx'"
  assert_failure 3
  assert_output "ltx-merge: $C3: non-contiguous transaction ids in input files: (0000000000000001,0000000000000001) -> (0000000000000003,0000000000000003)"
  run bash -c "ltx-merge '$C1' '$C2' '$C2' > '$T/m.ltx'"
  assert_failure 3
  assert_output --partial "non-contiguous transaction ids"
  run ltx-merge -o "$T/o.ltx" "$C2" "$C1"
  assert_failure 3
  [ ! -e "$T/o.ltx" ]
}

@test "merge: mismatched page sizes exit 3" {
  run ltx-merge -o "$T/m.ltx" "$V/snap_ps4096.ltx" "$V/delta_nochecksum.ltx"
  assert_failure 3
  assert_output "ltx-merge: $V/delta_nochecksum.ltx: input files have mismatched page sizes: 4096 != 512"
  [ ! -e "$T/m.ltx" ]
}

@test "merge: a checksum chain break between contiguous inputs exits 3" {
  # delta_2page continues snap_ps4096, not snap_wal (same page size, TXIDs 1 and 2)
  run ltx-merge -o "$T/m.ltx" "$V/snap_wal.ltx" "$V/delta_2page.ltx"
  assert_failure 3
  assert_output "ltx-merge: $V/delta_2page.ltx: pre-apply checksum e1bc43ea14df7abf does not match the previous file's post-apply checksum b830679b5b9a3b02"
  [ ! -e "$T/m.ltx" ]
  ltx-merge -o "$T/m.ltx" "$V/snap_ps4096.ltx" "$V/delta_2page.ltx"
  ltx-apply "$T/db" "$T/m.ltx"
  [ "$(sha "$T/db")" = "$(manifest ltx/delta_2page.ltx 22)" ]
}

@test "merge: overlapping TXID ranges only with --allow-overlap" {
  ltx-merge -o "$T/d23.ltx" "$C2" "$C3"
  run ltx-merge -o "$T/m.ltx" "$C1" "$T/d23.ltx" "$C3" "$C4"
  assert_failure 3
  run ltx-merge -o "$T/m.ltx" "$C1" "$C2" "$T/d23.ltx" "$C4"
  assert_failure 3
  assert_output --partial "(overlapping: allowed only with overlap enabled)"
  ltx-merge --allow-overlap -o "$T/m.ltx" "$C1" "$C2" "$T/d23.ltx" "$C4"
  ltx-apply "$T/db" "$T/m.ltx"
  [ "$(sha "$T/db")" = "$(manifest ltx/chain/0000000000000004-0000000000000004.ltx 22)" ]
}

@test "merge: a corrupt input exits 3 and -o leaves no output file" {
  python3 -c "
import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[-20]^=1; open(sys.argv[2],'wb').write(b)" "$C3" "$T/bad3.ltx"
  run ltx-merge -o "$T/m.ltx" "$C1" "$C2" "$T/bad3.ltx" "$C4"
  assert_failure 3
  assert_output --partial "$T/bad3.ltx: "
  [ ! -e "$T/m.ltx" ]
  [ -z "$(ls -A "$T" | grep tmp-)" ]
  head -c 1000 "$C4" > "$T/cut4.ltx"
  run ltx-merge -o "$T/m.ltx" "$C1" "$C2" "$C3" "$T/cut4.ltx"
  assert_failure 3
  assert_output --partial "unexpected EOF"
  [ ! -e "$T/m.ltx" ]
  cat "$C4" > "$T/junk4.ltx"; printf x >> "$T/junk4.ltx"
  run ltx-merge -o "$T/m.ltx" "$C1" "$C2" "$C3" "$T/junk4.ltx"
  assert_failure 3
  assert_output --partial "bytes after the trailer"
  [ ! -e "$T/m.ltx" ]
  # on stdout the status is the signal: partial output must be discarded
  run bash -c "set -o pipefail; ltx-merge '$C1' '$C2' '$T/bad3.ltx' | cat > '$T/p.ltx'"
  assert_failure 3
}

@test "merge: usage, missing files, a terminal and a full disk" {
  run ltx-merge
  assert_failure 2
  run ltx-merge -
  assert_failure 2
  run ltx-merge --bogus "$C1"
  assert_failure 2
  run ltx-merge -o "$T/m.ltx" "$T/missing.ltx"
  assert_failure 1
  assert_output --partial "No such file or directory"
  if command -v script >/dev/null; then
    run script -qec "ltx-merge '$C1' '$C2'" /dev/null
    assert_failure 2
  fi
  run bash -c "ltx-merge '$C1' '$C2' '$C3' '$C4' > /dev/full"
  assert_failure 1
}

@test "merge: a generated 51-file chain with shrinks equals sequential application" {
  gen_chain "$T/g" 50
  cd "$T/g"
  ltx-apply seq.db ???.ltx
  cmp seq.db final.db
  # everything into one snapshot
  ltx-merge -o all.ltx ???.ltx
  ltx-apply a.db all.ltx
  cmp a.db final.db
  # the snapshot, then the deltas merged in uneven runs
  ltx-merge -o d1.ltx 00[1-9].ltx 01?.ltx
  ltx-merge -o d2.ltx 02?.ltx 03?.ltx
  ltx-merge -o d3.ltx 04?.ltx 050.ltx
  ltx-apply b.db 000.ltx d1.ltx d2.ltx d3.ltx
  cmp b.db final.db
  # merged deltas merge again
  ltx-merge -o d12.ltx d1.ltx d2.ltx
  ltx-merge -o all2.ltx 000.ltx d12.ltx d3.ltx
  ltx-apply c.db all2.ltx
  cmp c.db final.db
  [ "$(sqlite3 c.db 'pragma integrity_check')" = ok ]
}

@test "merge: peak RSS on 51 inputs stays small" {
  gen_chain "$T/g" 50
  /usr/bin/time -f %M -o "$T/rss" ltx-merge -o "$T/m.ltx" "$T"/g/???.ltx
  echo "# peak RSS: $(cat "$T/rss") KiB" >&3
  limit=20000  # KiB; sanitizer runtimes (make asan) add their own overhead
  grep -q __asan_init "$(command -v ltx-merge)" && limit=80000
  [ "$(cat "$T/rss")" -lt "$limit" ]
}
