#!/usr/bin/env bats
# s3-verify: every file fully verified; gaps, corrupt objects, checksum
# breaks and orphans reported one a line on stderr, exit 3; clean exits 0.
load test_helper/common
load test_helper/s3

setup_file() {
  load test_helper/common
  load test_helper/s3
  build_compactor
  build_chain "$BATS_FILE_TMPDIR/chain"
}

setup() {
  require_s3
  CHAIN="$BATS_FILE_TMPDIR/chain"
}

name() { echo "$(hex16 "$1")-$(hex16 "$2").ltx"; }
# key URL LEVEL MIN MAX: the object's URL (file:// or s3://) for s3-put --raw
objurl() {
  case $1 in
    file://*) echo "$1/ltx/$2/$(name "$3" "$4")" ;;
    *) echo "$1/$(printf %04x "$2")/$(name "$3" "$4")" ;;
  esac
}

@test "s3-verify: a clean replica over levels 0, 1 and 9 exits 0 with its restorable range" {
  for url in $(backends clean); do
    upload_chain "$CHAIN" "$url"
    run s3-verify "$url"
    assert_success
    assert_line --partial "level 0: 100, level 1: 10, level 9: 1"
    assert_line "$(printf 'latest\t%s' "$(hex16 100)")"
    assert_line "$(printf 'restorable\t%s-%s\t100 TXIDs' "$(hex16 1)" "$(hex16 100)")"
    assert_line --partial "defects	0"
  done
}

@test "s3-verify: an injected gap is named (exit 3)" {
  for url in $(backends gap); do
    cat "$CHAIN"/l0/*.ltx | s3-put --sync-interval 0 "$url"
    s3-rm "$url" "0/$(name 7 7)" "0/$(name 8 8)"
    run bash -c "s3-verify '$url' 2>&1 >/dev/null"
    assert_failure 3
    assert_line "s3-verify: $url: gap: TXIDs $(hex16 7)-$(hex16 8): no file holds them (restores cannot pass TXID $(hex16 6))"
    assert_line "s3-verify: $url: unreachable: 92 files after the gap at TXID $(hex16 7)"
    [ "${#lines[@]}" -eq 2 ]
    run s3-verify "$url"
    assert_line "$(printf 'restorable\t%s-%s\t6 TXIDs' "$(hex16 1)" "$(hex16 6)")"
  done
}

@test "s3-verify: a corrupted object is found (exit 3)" {
  for url in $(backends corrupt); do
    cat "$CHAIN"/l0/*.ltx | s3-put --sync-interval 0 "$url"
    f="$CHAIN/l0/$(name 10 10)"
    python3 -c 'import sys; b=bytearray(open(sys.argv[1],"rb").read()); b[len(b)//2]^=1; sys.stdout.buffer.write(b)' "$f" |
      s3-put --raw "$(objurl "$url" 0 10 10)"
    run bash -c "s3-verify '$url' 2>&1 >/dev/null"
    assert_failure 3
    assert_line --index 0 --regexp "^s3-verify: $url: corrupt: 0/$(name 10 10): .*(checksum|lz4|decode)"
  done
}

@test "s3-verify: a wrong pre-apply checksum is found (exit 3)" {
  # a valid LTX for TXID 20 encoded on top of the state of TXID 17 (claimed as 19)
  ltx-encode --db "$CHAIN/db.17" -s "$T/st" --txid 13 > /dev/null
  ltx-encode -s "$T/st" --timestamp "$(ts 20)" < "$CHAIN/wal/20" > "$T/bad.ltx"
  run ltx-verify "$T/bad.ltx"
  assert_success
  for url in $(backends pre); do
    upload_chain "$CHAIN" "$url"
    s3-put --raw "$(objurl "$url" 0 20 20)" < "$T/bad.ltx"
    run bash -c "s3-verify '$url' 2>&1 >/dev/null"
    assert_failure 3
    assert_line --regexp "^s3-verify: $url: checksum: 0/$(name 20 20): pre-apply checksum [0-9a-f]{16} does not match the post-apply [0-9a-f]{16} of (0/$(name 19 19)|1/$(name 11 19)) \\(TXID $(hex16 19)\\)$"
    # and the compacted file ending at 20 disagrees with it
    assert_line --regexp "^s3-verify: $url: checksum: 1/$(name 11 20): post-apply checksum [0-9a-f]{16} differs from 0/$(name 20 20)'s [0-9a-f]{16} at TXID $(hex16 20)$"
  done
}

@test "s3-verify: orphans: files no snapshot reaches" {
  for url in $(backends orphan); do
    upload_chain "$CHAIN" "$url"
    s3-rm "$url" "0/$(name 1 1)"
    run bash -c "s3-verify '$url' 2>&1 >/dev/null"
    assert_failure 3
    assert_line "s3-verify: $url: orphan: 0/$(name 2 2): no restore reaches TXID $(hex16 1), so nothing can use it"
    assert_line "s3-verify: $url: orphan: 1/$(name 2 10): no restore reaches TXID $(hex16 1), so nothing can use it"
    assert_line "s3-verify: $url: orphan: 0/$(name 50 50): no restore reaches TXID $(hex16 49), so nothing can use it"
    refute_line --partial "0/$(name 51 51)"
  done
}

@test "s3-verify: usage and runtime errors" {
  run s3-verify
  assert_failure 2
  run s3-verify "file://$T/empty"
  assert_failure 3
  assert_output --partial "no replica files"
  run s3-verify --endpoint http://127.0.0.1:9 --retries 0 --connect-timeout 2 "s3://b/p"
  assert_failure 1
}
