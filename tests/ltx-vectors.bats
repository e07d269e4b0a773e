#!/usr/bin/env bats
# The golden vectors made by the reference implementation (superfly/ltx):
# every valid file verifies with the recorded fields and checksums, applies
# to the recorded database, and every corrupt file is refused.

load test_helper/common

manifest_rows() {  # file, apply_sequence, applied_sha256 for valid rows
  awk -F'\t' 'NR>1 && $1 !~ /^corrupt/ {print $1 "\t" $18 "\t" $22}' "$WALSYNC_VECTORS/MANIFEST.tsv"
}

@test "vectors: every valid file verifies" {
  n=0
  while IFS=$'\t' read -r file _ _; do
    run ltx-verify "$WALSYNC_VECTORS/$file"
    assert_success
    assert_output ""
    n=$((n + 1))
  done < <(manifest_rows)
  [ "$n" -eq 15 ]
}

@test "vectors: header and trailer fields equal MANIFEST.tsv" {
  run python3 - "$WALSYNC_VECTORS" <<'PY'
import csv, datetime, json, subprocess, sys
root = sys.argv[1]
rows = [r for r in csv.DictReader(open(root + "/MANIFEST.tsv"), delimiter="\t")
        if not r["file"].startswith("corrupt")]
bad = []
for r in rows:
    d = json.loads(subprocess.run(["ltx-dump", "--json", root + "/" + r["file"]],
                                  check=True, capture_output=True, text=True).stdout)
    h, t = d["header"], d["trailer"]
    ms = int(r["timestamp"])
    ts = datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc)
    want_ts = ts.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)
    pgnos = ",".join(str(p["pgno"]) for p in d["pages"])
    checks = {"page_size": (h["page_size"], int(r["page_size"])),
              "commit": (h["commit"], int(r["commit"])),
              "min_txid": (h["min_txid"], r["min_txid"]), "max_txid": (h["max_txid"], r["max_txid"]),
              "flags": (h["flags"], int(r["flags"], 16)), "timestamp": (h["timestamp"], want_ts),
              "pre": (h["pre_apply_checksum"], r["pre_apply_checksum"]),
              "post": (t["post_apply_checksum"], r["post_apply_checksum"]),
              "file_checksum": (t["file_checksum"], r["file_checksum"]),
              "frames": (len(d["pages"]), int(r["page_frames"])),
              "size": (d["size"], int(r["file_size"])),
              "trailer": (t["post_apply_checksum"] + t["file_checksum"], r["trailer_raw_hex"])}
    if "..." not in r["pgnos"]:
        checks["pgnos"] = (pgnos, r["pgnos"])
    bad += ["%s %s: %r != %r" % (r["file"], k, g, w) for k, (g, w) in checks.items() if g != w]
print("\n".join(bad) if bad else "ok %d" % len(rows))
PY
  assert_success
  assert_output "ok 15"
}

@test "vectors: each apply_sequence gives exactly applied_sha256 (Commit-0 included)" {
  while IFS=$'\t' read -r file seq want; do
    rm -f "$T/out.db"
    files=()
    IFS=, read -ra parts <<< "$seq"
    for p in "${parts[@]}"; do files+=("$WALSYNC_VECTORS/$p"); done
    run ltx-apply "$T/out.db" "${files[@]}"
    assert_success
    [ "$(sha "$T/out.db")" = "$want" ] || fail "$file: applied database differs"
  done < <(manifest_rows)
}

@test "vectors: the deletion file (Commit 0) leaves an empty database with checksum 8000000000000000" {
  run ltx-apply -v "$T/out.db" "$WALSYNC_VECTORS/ltx/snap_ps4096.ltx" "$WALSYNC_VECTORS/ltx/delta_deletion.ltx"
  assert_success
  assert_output --partial "checksum 8000000000000000, 0 pages"
  [ ! -s "$T/out.db" ]
  run ltx-checksum "$T/out.db"
  assert_output "8000000000000000"
}

@test "vectors: the chain applies as one concatenated stream on stdin" {
  run bash -c "cat '$WALSYNC_VECTORS'/ltx/chain/*.ltx | ltx-apply '$T/out.db'"
  assert_success
  want=$(awk -F'\t' '$1=="ltx/chain/0000000000000004-0000000000000004.ltx" {print $22}' "$WALSYNC_VECTORS/MANIFEST.tsv")
  [ "$(sha "$T/out.db")" = "$want" ]
}

@test "vectors: every corrupt file exits 3 and leaves the target untouched" {
  ltx-apply "$T/target.db" "$WALSYNC_VECTORS/ltx/snap_ps4096.ltx"
  before=$(sha "$T/target.db")
  n=0
  for f in "$WALSYNC_VECTORS"/corrupt/*.ltx; do
    run ltx-verify "$f"
    assert_failure 3
    assert_output --regexp "^ltx-verify: .*$(basename "$f"): "
    [ "${#lines[@]}" -eq 1 ]
    run ltx-apply "$T/target.db" "$f"
    assert_failure 3
    [ "$(sha "$T/target.db")" = "$before" ] || fail "$f changed the target"
    run ltx-apply "$T/new.db" "$f"
    assert_failure 3
    [ ! -e "$T/new.db" ] || fail "$f left $T/new.db behind"
    n=$((n + 1))
  done
  [ "$n" -eq 7 ]
  [ -z "$(ls -A "$T" | grep tmp-)" ] || fail "temp files left: $(ls -A "$T")"
}

@test "vectors: corrupt file messages name the defect" {
  run ltx-verify "$WALSYNC_VECTORS/corrupt/bad_magic.ltx"
  assert_output --partial "decode header: invalid LTX file"
  run ltx-verify "$WALSYNC_VECTORS/corrupt/truncated_tail.ltx"
  assert_output --partial "read trailer: unexpected EOF"
  run ltx-verify "$WALSYNC_VECTORS/corrupt/flip_pagedata_token.ltx"
  assert_output --partial "decode page frame 2: lz4 block"
  run ltx-verify "$WALSYNC_VECTORS/corrupt/flip_header_timestamp.ltx"
  assert_output --partial "file checksum mismatch"
}
