#!/usr/bin/env bats
# s3-ls and s3-rm on file:// and S3; the EXAMPLES of the s3-* man pages.
load test_helper/common
load test_helper/s3

setup() {
  require_s3
  GOLD="$WALSYNC_VECTORS/ltx/chain"
}

@test "s3-ls: replica files with level, TXID range, size and time" {
  for url in $(backends ls); do
    cat "$GOLD"/*.ltx | s3-put --sync-interval 0 "$url"
    cat "$GOLD"/0000000000000001-0000000000000001.ltx | s3-put --level 9 "$url"
    run s3-ls "$url"
    assert_success
    [ "${#lines[@]}" -eq 5 ]
    assert_line --index 0 --regexp "^0/0000000000000001-0000000000000001.ltx	1264	20[0-9-]+T[0-9:.]+Z$"
    assert_line --index 4 --partial "9/0000000000000001-0000000000000001.ltx	1264	"
    run s3-ls --level 9 "$url"
    [ "${#lines[@]}" -eq 1 ]
    run s3-ls --json "$url"
    assert_success
    echo "$output" | python3 -c '
import json, sys
a = json.load(sys.stdin)
assert len(a) == 5, a
assert a[1]["level"] == 0 and a[1]["min_txid"] == "0000000000000002" and a[1]["size"] == 896, a[1]
assert a[4]["level"] == 9
'
  done
  # file:// times are the LTX header times
  run s3-ls "file://$T/ls"
  assert_line --index 0 --partial "2023-11-14T22:15:00.000Z"
}

@test "s3-ls: empty and missing replicas list nothing; foreign keys are ignored" {
  for url in $(backends none); do
    run s3-ls "$url"
    assert_success
    assert_output ""
    run s3-ls --json "$url"
    assert_output "[]"
    echo x | s3-put --raw "$url/0000/not-an-ltx-name"
    echo x | s3-put --raw "$url/ltx/0/zz.ltx"
    run s3-ls "$url"
    assert_output ""
  done
}

@test "s3-ls | head: quiet, killed by SIGPIPE as ls is" {
  mkdir -p "$T/r/ltx/0"
  python3 - "$T/r/ltx/0" <<'PY'
import os, sys
for i in range(1, 5001):
    open(os.path.join(sys.argv[1], "%016x-%016x.ltx" % (i, i)), "w").close()
PY
  run bash -c "s3-ls 'file://$T/r' 2>'$T/err' | head -1; echo \${PIPESTATUS[0]}"
  assert_line --index 0 --partial "0/0000000000000001-0000000000000001.ltx	0	"
  assert_line --index 1 141
  [ ! -s "$T/err" ]
}

@test "s3-rm: deletes named files and names read from s3-ls" {
  for url in $(backends rm); do
    cat "$GOLD"/*.ltx | s3-put --sync-interval 0 "$url"
    s3-rm "$url" 0/0000000000000004-0000000000000004.ltx
    run s3-ls "$url"
    [ "${#lines[@]}" -eq 3 ]
    s3-ls "$url" | grep '^0/000000000000000[23]' | s3-rm "$url" -
    run s3-ls "$url"
    [ "${#lines[@]}" -eq 1 ]
    run s3-rm "$url" 0/0000000000000009-0000000000000009.ltx
    assert_success
    run s3-rm "$url" bogus-name
    assert_failure 2
  done
}

# The s3-* man pages: lint, sections, and every "$ " EXAMPLES line runs
# (same convention as tests/man.bats), in a directory with app.db.
man_examples() {
  awk '
    /^\.Sh / { ex = ($2 == "EXAMPLES"); next }
    ex && /^\.Bd -literal/ { lit = 1; next }
    ex && /^\.Ed/ { lit = 0; next }
    ex && lit && /^\$ / { sub(/^\$ /, ""); gsub(/\\-/, "-"); gsub(/\\e/, "\\"); print }
  ' "$1"
}

@test "s3 man pages: lint clean, required sections, examples run" {
  run bash -c "mandoc -Tlint -W warning '$REPO_ROOT'/man/s3-*.1 '$REPO_ROOT'/man/ls3-get.1"
  assert_success
  assert_output ""
  for sec in NAME SYNOPSIS DESCRIPTION OPTIONS ENVIRONMENT "EXIT STATUS" EXAMPLES "SEE ALSO"; do
    grep -qx ".Sh $sec" "$REPO_ROOT/man/ls3-get.1" || { echo "ls3-get.1: no $sec" >&2; return 1; }
  done
  for tool in s3-put s3-get s3-ls s3-rm s3-verify; do
    page="$REPO_ROOT/man/$tool.1"
    for sec in NAME SYNOPSIS DESCRIPTION OPTIONS ENVIRONMENT "EXIT STATUS" EXAMPLES "SEE ALSO"; do
      grep -qx ".Sh $sec" "$page" || { echo "$tool.1: no $sec" >&2; return 1; }
    done
    dir="$T/$tool"
    mkdir -p "$dir"
    sqlite3 "$dir/app.db" "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
      INSERT INTO t(v) SELECT hex(randomblob(30)) FROM generate_series(1, 200);" > /dev/null
    man_examples "$page" > "$T/$tool.sh"
    [ -s "$T/$tool.sh" ]
    run bash -c "cd '$dir' && bash -e -o pipefail '$T/$tool.sh' < /dev/null"
    if [ "$status" -ne 0 ]; then cat "$T/$tool.sh" >&2; fi
    assert_success
  done
}
